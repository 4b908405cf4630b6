"""The authority policy on plain data: phase, authority, gap filling, totals, divergences, shared fields."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from engine.ride import policy
from engine.ride.model import BackendDoc, Claim, DeviceDoc, Edit, EndEvent, Finalization, RideDocs, SharedDoc
from engine.ride.samples import Sample
from engine.ride.schema import DocKind, DocRef, Phase, Role, end_key

T0 = 1_700_000_000.0
RIDE = "ride-1"
BIKE = DocRef(RIDE, DocKind.BIKE, "bike-1")
APP = DocRef(RIDE, DocKind.APP, "app-1")
BACKEND = DocRef(RIDE, DocKind.BACKEND, "backend")


def bike_samples(n: int, hr: int = 140, power_dw: int = 2000, lost: range = range(0)) -> tuple[Sample, ...]:
    return tuple(
        Sample(
            seq=i,
            t=T0 + i,
            hr=None if i in lost else hr,
            contact="not_detected" if i in lost else "detected",
            cadence=90,
            power_dw=power_dw,
        )
        for i in range(n)
    )


def app_samples(n: int, hr: int = 100, offset: float = 0.3) -> tuple[Sample, ...]:
    return tuple(Sample(seq=i, t=T0 + i + offset, hr=hr, contact="detected") for i in range(n))


def ended(count: int, duration_s: float | None = None) -> Claim:
    return Claim(t=T0 + count, key=end_key(RIDE), last_seq=count - 1, count=count, duration_s=duration_s)


def test_phases_move_forward_with_the_facts() -> None:
    assert policy.resolve(RideDocs(RIDE)).phase is Phase.PENDING
    bike = DeviceDoc(BIKE, samples=bike_samples(3))
    assert policy.resolve(RideDocs(RIDE, devices=(bike,))).phase is Phase.ACTIVE
    app_end = DeviceDoc(APP, ended=ended(0))
    assert policy.resolve(RideDocs(RIDE, devices=(bike, app_end))).phase is Phase.ENDED
    fin = BackendDoc(BACKEND, finalized=Finalization(t=T0 + 9, totals={"duration_s": 2.0}))
    view = policy.resolve(RideDocs(RIDE, devices=(bike, app_end), backends=(fin,)))
    assert view.phase is Phase.FINALIZED and view.authority == "backend"


def test_bike_wins_mid_ride_and_app_difference_is_a_divergence() -> None:
    bike = DeviceDoc(BIKE, samples=bike_samples(1201), ended=ended(1201, duration_s=1200.0))
    app = DeviceDoc(APP, samples=app_samples(10), ended=ended(10, duration_s=1080.0))
    view = policy.resolve(RideDocs(RIDE, devices=(bike, app)))
    assert view.authority == "bike"
    assert view.duration_s == 1200.0
    assert view.totals["avg_hr"] == 140.0  # the app's 100 bpm never replaces the bike's heart rate
    texts = [d.text for d in view.divergences if d.metric == "duration_s"]
    assert texts == ["bike 20:00 vs app 18:00"]
    assert view.end_events_counted == 1


def test_backend_totals_win_after_finalize_verbatim() -> None:
    bike = DeviceDoc(BIKE, samples=bike_samples(60), ended=ended(60, duration_s=59.0))
    official = {"duration_s": 55.0, "output_kj": 10.0, "avg_hr": 130.0, "max_hr": 150}
    backend = BackendDoc(BACKEND, finalized=Finalization(t=T0 + 100, totals=official))
    view = policy.resolve(RideDocs(RIDE, devices=(bike,), backends=(backend,)))
    assert view.totals == official
    assert {d.metric for d in view.divergences} >= {"duration_s", "avg_hr"}
    assert all(d.source == "bike" and d.authority == "backend" for d in view.divergences)


def test_gap_filled_from_the_app_only_where_the_bike_lost_the_strap() -> None:
    bike = DeviceDoc(BIKE, samples=bike_samples(20, hr=150, lost=range(5, 10)))
    app = DeviceDoc(APP, samples=app_samples(30, hr=100))
    view = policy.resolve(RideDocs(RIDE, devices=(bike, app)))
    # Bike usable at seconds 0-4 and 10-19 (15 values of 150). App samples at 4.3 and 9.3 lie within 1 s
    # of usable bike heart rate (4.0, 10.0); those at 5.3-8.3 fill the gap; those after 19.0 are outside.
    assert view.gap_fill == {"app-1": 4}
    assert view.totals["max_hr"] == 150
    assert view.totals["avg_hr"] == round((15 * 150 + 4 * 100) / 19, 1)


def test_no_fill_outside_the_bikes_span_and_never_power() -> None:
    bike = DeviceDoc(BIKE, samples=bike_samples(5, hr=150, lost=range(0, 5)))
    app = DeviceDoc(APP, samples=tuple(Sample(seq=i, t=T0 + 100 + i, hr=90, power_dw=9999) for i in range(5)))
    view = policy.resolve(RideDocs(RIDE, devices=(bike, app)))
    assert view.gap_fill == {}
    assert view.totals["avg_hr"] is None
    assert view.totals["max_power_w"] == 200.0


def test_end_counts_once_across_bike_app_and_backend_events() -> None:
    bike = DeviceDoc(BIKE, samples=bike_samples(5), ended=ended(5))
    app = DeviceDoc(APP, ended=ended(0))
    backend = BackendDoc(
        BACKEND,
        end_events=(
            EndEvent(end_key(RIDE), T0, "bike-1", "bike"),
            EndEvent(end_key(RIDE), T0, "app-1", "app"),
        ),
    )
    view = policy.resolve(RideDocs(RIDE, devices=(bike, app), backends=(backend,)))
    assert view.end_events_counted == 1


def test_ready_to_finalize_only_with_every_declared_bike_sample() -> None:
    partial = DeviceDoc(BIKE, samples=bike_samples(8), ended=ended(10))
    view = policy.resolve(RideDocs(RIDE, devices=(partial,)))
    assert not view.ready_to_finalize and view.missing_samples == {"bike-1": 2}
    full = DeviceDoc(BIKE, samples=bike_samples(10), ended=ended(10))
    assert policy.resolve(RideDocs(RIDE, devices=(full,))).ready_to_finalize


def edit(
    key: str, value: object, role: str, t: float, *, seen: str | None = None, field: str = "title"
) -> Edit:
    return Edit(key=key, field=field, value=value, t=t, device=f"{role}-1", role=role, seen=seen)


def test_shared_fields_causal_then_role_then_time() -> None:
    a = edit("edit.aa.1", "Bike title", "bike", 10.0)
    b = edit("edit.bb.1", "App title", "app", 5.0)  # concurrent with a: app outranks bike
    values, conflicts = policy.resolve_shared([a, b])
    assert values == {"title": "App title"} and len(conflicts) == 1
    c = edit("edit.aa.2", "Bike after seeing app", "bike", 11.0, seen="edit.bb.1")
    values, conflicts = policy.resolve_shared([a, b, c])
    # c superseded b (it saw it); a and c are both live, and they are from the bike: later t wins.
    assert values == {"title": "Bike after seeing app"}
    viewer = edit("edit.cc.1", "Viewer", "viewer", 99.0)
    assert policy.resolve_shared([a, viewer])[0] == {"title": "Bike title"}


@given(st.permutations(list(range(6))), st.randoms(use_true_random=False))
def test_shared_resolution_ignores_order(order: list[int], rnd: random.Random) -> None:
    edits = [
        edit(f"edit.{r}.{i}", f"v{r}{i}", role, float(rnd.randint(0, 3)), field=f)
        for i, (r, role, f) in enumerate(
            [("aa", "bike", "title"), ("bb", "app", "title"), ("cc", "backend", "notes")] * 2
        )
    ]
    shuffled = [edits[i] for i in order]
    assert policy.resolve_shared(shuffled) == policy.resolve_shared(edits)
    docs = RideDocs(RIDE, shared=SharedDoc(RIDE, edits=tuple(shuffled)))
    assert (
        policy.resolve(docs).to_json()
        == policy.resolve(RideDocs(RIDE, shared=SharedDoc(RIDE, tuple(edits)))).to_json()
    )


def test_may_write_single_writer_docs_and_read_only_after_finalize() -> None:
    shared = DocRef(RIDE, DocKind.SHARED)
    assert policy.may_write(BIKE, "bike-1", Role.BIKE, Phase.ACTIVE)
    assert not policy.may_write(BIKE, "app-1", Role.APP, Phase.ACTIVE)
    assert not policy.may_write(BIKE, "bike-1", Role.APP, Phase.ACTIVE)
    assert not policy.may_write(APP, "bike-1", Role.BIKE, Phase.ACTIVE)
    assert policy.may_write(shared, "app-1", Role.APP, Phase.ENDED)
    # Finalized: the shared document stays open for the fields may_edit allows; device documents close.
    assert policy.may_write(shared, "app-1", Role.APP, Phase.FINALIZED)
    assert not policy.may_write(BIKE, "bike-1", Role.BIKE, Phase.FINALIZED)
    assert not policy.may_write(APP, "app-1", Role.APP, Phase.FINALIZED)
    assert policy.may_write(BACKEND, "backend", Role.BACKEND, Phase.FINALIZED)
    assert not policy.may_write(shared, "v", Role.VIEWER, Phase.ACTIVE)


def test_view_json_carries_the_contract_fields() -> None:
    bike = DeviceDoc(BIKE, samples=bike_samples(30), ended=ended(30))
    out = policy.resolve(RideDocs(RIDE, devices=(bike,))).to_json()
    assert {"ride_id", "phase", "authority", "samples", "duration_s", "totals", "end_events_counted"} <= set(
        out
    )
    assert out["samples"] == {"bike-1": 30} and out["phase"] == "ended" and out["end_events_counted"] == 1
    assert out["totals"]["output_kj"] == 5.8  # 29 intervals of 1 s at 200 W


def test_authority_is_the_owning_bike_never_the_smallest_device_id() -> None:
    """A stranger's bike document (`a-evil` sorts first) with an end claim neither ends the ride nor
    supplies its numbers: the owner's bike is the authority, the other is ignored for every rule."""
    owner = DeviceDoc(BIKE, samples=bike_samples(30))
    evil = DeviceDoc(DocRef(RIDE, DocKind.BIKE, "a-evil"), samples=bike_samples(20), ended=ended(20, 20.0))
    for devices in ((owner, evil), (evil, owner)):
        view = policy.resolve(RideDocs(RIDE, devices=devices, owner="bike-1"))
        assert view.phase is Phase.ACTIVE
        assert view.samples == {"bike-1": 30}
        assert view.duration_s == 29.0
        assert not view.ready_to_finalize and view.end_events_counted == 0
        assert any("a-evil" in p and "ignored" in p for p in view.problems)
    # The owner's own end finalizes as usual; the stranger's claim still counts for nothing.
    done = DeviceDoc(BIKE, samples=bike_samples(30), ended=ended(30, 1800.0))
    view = policy.resolve(RideDocs(RIDE, devices=(evil, done), owner="bike-1"))
    assert (
        view.ready_to_finalize
        and view.duration_s == 1800.0
        and view.declared == {"bike-1": {"last_seq": 29, "count": 30}}
    )


def test_two_bike_documents_and_no_known_owner_name_no_authority() -> None:
    """A replica that does not know the owner never picks one of several bikes by its id."""
    one = DeviceDoc(BIKE, samples=bike_samples(30), ended=ended(30, 1800.0))
    other = DeviceDoc(DocRef(RIDE, DocKind.BIKE, "a-evil"), samples=bike_samples(20), ended=ended(20, 20.0))
    view = policy.resolve(RideDocs(RIDE, devices=(one, other)))
    assert view.duration_s == 0.0 and not view.ready_to_finalize
    assert any("no known owner" in p for p in view.problems)
    # With one bike document, that one is the authority, owner known or not.
    assert policy.resolve(RideDocs(RIDE, devices=(one,))).duration_s == 1800.0
    assert policy.resolve(RideDocs(RIDE, devices=(one,), owner="bike-1")).ready_to_finalize


def test_samples_after_the_bikes_end_are_kept_but_not_counted() -> None:
    """Rule 8: the bike's claim places the end (here: an app ended the ride at T0+20 and the bike, offline
    until T0+29, stopped there); its later samples are declared and held, never counted."""
    samples = bike_samples(30)
    claim = Claim(t=T0 + 20, key=end_key(RIDE), last_seq=29, count=30, duration_s=21.0)
    app_end = BackendDoc(BACKEND, end_events=(EndEvent(end_key(RIDE), T0 + 20, "app-1", "app"),))
    docs = RideDocs(RIDE, devices=(DeviceDoc(BIKE, samples=samples, ended=claim),), backends=(app_end,))
    view = policy.resolve(docs)
    assert view.end_t == T0 + 20 and view.after_end == {"bike-1": 9}
    assert view.samples == {"bike-1": 30} and view.ready_to_finalize and view.missing_samples == {}
    assert view.totals["output_kj"] == 4.0  # 20 intervals of 1 s at 200 W: samples 0..20
    assert view.duration_s == 21.0
    assert policy.earliest_other_end(docs, "bike-1") == T0 + 20
    # Before the bike has claimed, every sample counts: the end is not placed on its clock yet.
    early = policy.resolve(RideDocs(RIDE, devices=(DeviceDoc(BIKE, samples=samples),), backends=(app_end,)))
    assert early.phase is Phase.ENDED and early.end_t is None and early.after_end == {}
    assert early.totals["output_kj"] == 5.8


@given(
    st.lists(st.floats(0, 40, allow_nan=False), min_size=1, max_size=40, unique=True),
    st.floats(-5, 45, allow_nan=False),
    st.lists(st.tuples(st.sampled_from(["app-1", "app-2", "bike-1"]), st.floats(-5, 45)), max_size=4),
    st.randoms(use_true_random=False),
)
def test_end_rule_is_the_same_in_any_merge_order(
    offsets: list[float], end: float, others: list[tuple[str, float]], rnd: random.Random
) -> None:
    """Rule 8 on random rides: whatever order the documents and end events arrive in, the view is the same,
    and the totals are exactly those of the bike's samples up to its claimed end."""
    samples = tuple(
        Sample(seq=i, t=T0 + off, hr=120 + i % 7, contact="detected", power_dw=1500 + i)
        for i, off in enumerate(sorted(offsets))
    )
    claim = Claim(t=T0 + end, key=end_key(RIDE), last_seq=len(samples) - 1, count=len(samples))
    bike = DeviceDoc(BIKE, samples=samples, ended=claim)
    app = DeviceDoc(APP, samples=app_samples(5), ended=Claim(t=T0 + 3, key=end_key(RIDE)))
    events = [
        EndEvent(end_key(RIDE), T0 + t, dev, "app" if dev.startswith("app") else "bike") for dev, t in others
    ]
    devices = [bike, app]
    base = policy.resolve(RideDocs(RIDE, devices=(bike, app), backends=(BackendDoc(BACKEND, tuple(events)),)))
    rnd.shuffle(devices)
    rnd.shuffle(events)
    shuffled = RideDocs(RIDE, devices=tuple(devices), backends=(BackendDoc(BACKEND, tuple(events)),))
    view = policy.resolve(shuffled)
    assert view.to_json() == base.to_json()
    counted = [s for s in samples if s.t <= T0 + end]
    expected, _ = policy.compute_totals(counted, [app.samples], ["app-1"])
    assert {k: v for k, v in view.totals.items() if k != "duration_s"} == {
        k: v for k, v in expected.to_json().items() if k != "duration_s"
    }
    assert view.after_end == ({"bike-1": len(samples) - len(counted)} if len(counted) < len(samples) else {})
    assert view.end_events_counted == 1
    # What the bike reads when it learns of an end: the earliest one not its own.
    not_mine = [T0 + t for dev, t in others if dev != "bike-1"] + [T0 + 3]
    assert policy.earliest_other_end(shuffled, "bike-1") == min(not_mine)


def test_after_finalization_title_notes_rating_stay_editable_targets_do_not() -> None:
    for role in (Role.APP, Role.BIKE):
        for name in ("title", "notes", "rating"):
            assert policy.may_edit(name, role, Phase.FINALIZED)
        for name in ("target.power_w", "target.cadence", "target.resistance", "target.hr_zone"):
            assert policy.may_edit(name, role, Phase.ENDED)
            assert not policy.may_edit(name, role, Phase.FINALIZED)
    assert policy.may_edit("target.power_w", Role.BACKEND, Phase.FINALIZED)
    assert not policy.may_edit("title", Role.VIEWER, Phase.ACTIVE)
