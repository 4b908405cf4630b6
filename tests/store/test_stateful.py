"""Three replicas (bike, app, backend) edit, sync in random orders and partitions, crash and restart.

After every step the policy's rules hold on every replica; after healing, all replicas hold identical
documents and identical resolved views, and no sample was lost or duplicated.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine.crdt import SyncSession
from engine.ride import documents, policy
from engine.ride.model import DeviceDoc
from engine.ride.schema import DocKind, Phase, Role
from engine.store import ReplicaStore, StoreError
from tests.support.samples import make_sample

RIDE = "ride-s"
NAMES = ("bike", "app", "backend")
ROLES = {"bike": Role.BIKE, "app": Role.APP, "backend": Role.BACKEND}
DEVICES = {"bike": "bike-1", "app": "app-1", "backend": "backend"}
T0 = 1_700_000_000.0


def sync_pair(a: ReplicaStore, b: ReplicaStore) -> None:
    """Both directions, every document of the ride, through fresh sync sessions (as over a connection).
    A live segment one side retired is not offered to it again (the backend answers doc-unavailable)."""
    refs = {r.doc_id: r for r in a.ride_refs(RIDE) + b.ride_refs(RIDE)}
    for ref in refs.values():
        if any(not s.has_doc(ref.doc_id) and s.segment_retired(ref) for s in (a, b)):
            continue
        da, db_ = a.ensure_doc(ref), b.ensure_doc(ref)
        sa, sb = SyncSession(), SyncSession()
        for _ in range(20):
            m1 = sa.generate(da)
            if m1 is not None:
                sb.receive(db_, m1)
            m2 = sb.generate(db_)
            if m2 is not None:
                sa.receive(da, m2)
            if m1 is None and m2 is None:
                break
        a.persist_if_dirty(ref.doc_id)
        b.persist_if_dirty(ref.doc_id)


class Replicas(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="ridesync-stateful-"))
        self.t = T0
        self.stores = {name: self._open(name) for name in NAMES}
        self.committed: dict[str, set[int]] = {"bike": set(), "app": set()}
        self.ended = {"bike": False, "app": False}
        self.last_phase = dict.fromkeys(NAMES, Phase.PENDING)
        self.up = {frozenset(p) for p in (("bike", "app"), ("bike", "backend"), ("app", "backend"))}
        self.stores["bike"].start_ride(RIDE, t=T0)
        self.stores["app"].start_ride(RIDE, t=T0)

    def _clock(self) -> float:
        return self.t

    def _open(self, name: str) -> ReplicaStore:
        # Every restart switches the sample batch schema: each device's document ends up holding both.
        self.opens = getattr(self, "opens", 0) + 1
        return ReplicaStore(
            self.root / name,
            device_id=DEVICES[name],
            role=ROLES[name],
            clock=self._clock,
            max_batch=7,
            batch_schema=1 + self.opens % 2,
            segment_interval_s=6.0,  # live segments, consolidated every few folds
        )

    def teardown(self) -> None:
        try:
            self.heal()
        finally:
            for store in self.stores.values():
                store.close()
            shutil.rmtree(self.root, ignore_errors=True)

    # -- rules ----------------------------------------------------------------------------------------

    @rule(n=st.integers(3, 12), bike_lost=st.booleans(), app_on=st.booleans())
    def ride_seconds(self, n: int, bike_lost: bool, app_on: bool) -> None:
        """n seconds of riding: the bike samples each second (maybe strapless), the app 0.3 s later."""
        for _ in range(n):
            self.t += 1.0
            if not self.ended["bike"]:
                extra: dict[str, object] = {"hr": None, "contact": "not_detected"} if bike_lost else {}
                self._append("bike", self.t, extra)
            if app_on and not self.ended["app"]:
                self._append(
                    "app", self.t + 0.3, {"cadence": None, "power_dw": None, "resistance": None, "hr": 95}
                )

    def _append(self, who: str, t: float, extra: dict[str, object]) -> None:
        store = self.stores[who]
        seq = store.next_seq(RIDE)
        assert store.append_sample(RIDE, make_sample(seq, t0=t - seq, **extra))
        self.committed[who].add(seq)
        store.maybe_fold(RIDE)

    @rule(who=st.sampled_from(["bike", "app"]))
    def fold(self, who: str) -> None:
        self.stores[who].fold(RIDE)

    @rule(
        who=st.sampled_from(NAMES),
        field=st.sampled_from(["title", "notes", "rating", "target.power_w"]),
        value=st.integers(1, 5),
    )
    def edit(self, who: str, field: str, value: int) -> None:
        self.t += 0.5
        val: object = f"{field}-{who}-{value}" if field in ("title", "notes") else value
        self.stores[who].edit_shared(RIDE, field, val)

    @rule(who=st.sampled_from(["bike", "app"]))
    def end(self, who: str) -> None:
        self.t += 1.0
        self.stores[who].end_ride(RIDE, duration_s=None)
        self.ended[who] = True

    @rule()
    def bike_learns_of_an_end_and_stops(self) -> None:
        """The bike finds another replica's end in what it has synced (possibly long after, having ridden
        on offline) and claims the ride's end there, on its clock: later samples stop counting (rule 8)."""
        bike = self.stores["bike"]
        other = policy.earliest_other_end(bike.ride_docs(RIDE), DEVICES["bike"])
        if other is None or self.ended["bike"]:
            return
        self.t += 1.0
        bike.end_ride(RIDE, t=other, duration_s=None)
        self.ended["bike"] = True
        event("bike stopped at another replica's end")

    @rule()
    def backend_end_event(self) -> None:
        self.stores["backend"].record_end_event(RIDE, f"ride-end:{RIDE}", "app-1", "app")

    @rule()
    def bike_ends_and_backend_finalizes(self) -> None:
        if not self.ended["bike"]:
            self.end("bike")
        if frozenset(("bike", "backend")) in self.up:
            sync_pair(self.stores["bike"], self.stores["backend"])
        self.finalize()

    @rule()
    def finalize(self) -> None:
        backend = self.stores["backend"]
        if backend.view(RIDE).ready_to_finalize:
            self.t += 1.0
            backend.finalize(RIDE)

    @rule(a=st.sampled_from(NAMES), b=st.sampled_from(NAMES))
    def sync(self, a: str, b: str) -> None:
        if a != b and frozenset((a, b)) in self.up:
            sync_pair(self.stores[a], self.stores[b])

    @rule(a=st.sampled_from(NAMES), b=st.sampled_from(NAMES))
    def toggle_link(self, a: str, b: str) -> None:
        if a != b:
            self.up ^= {frozenset((a, b))}

    @rule(who=st.sampled_from(NAMES))
    def crash_and_restart(self, who: str) -> None:
        old = self.stores[who]
        actor = old.actor
        old.close()
        self.stores[who] = self._open(who)
        assert self.stores[who].actor != actor

    @rule(who=st.sampled_from(NAMES))
    def retire_segments(self, who: str) -> None:
        """Drop dead live segments: the bike its own once the backend holds its durable document (what
        an acknowledgement says; here read from the backend itself, whether or not the link is up, as an
        acknowledgement received before a partition), the others as soon as they see them covered."""
        store = self.stores[who]
        durable = next(r for r in store.ride_refs(RIDE) if r.kind is DocKind.BIKE) if who == "bike" else None
        backend = self.stores["backend"]
        acked = None
        if durable is not None and backend.has_doc(durable.doc_id):
            acked = {durable.doc_id: backend.heads(durable.doc_id)}
        if store.retire_segments(RIDE, acked):
            event(f"{who} retired segments")

    @rule()
    def heal(self) -> None:
        for _ in range(2):
            for a, b in (("bike", "app"), ("app", "backend"), ("bike", "backend")):
                sync_pair(self.stores[a], self.stores[b])
        for who in NAMES:
            self.retire_segments(who)
        stores = list(self.stores.values())
        refs = [tuple(r.doc_id for r in s.ride_refs(RIDE)) for s in stores]
        assert refs[0] == refs[1] == refs[2]
        for doc_id in refs[0]:
            heads = [s.heads(doc_id) for s in stores]
            assert heads[0] == heads[1] == heads[2]
            items = [s.doc(doc_id).items() for s in stores]
            assert items[0] == items[1] == items[2]
        views = [s.view(RIDE).to_json() for s in stores]
        assert views[0] == views[1] == views[2]
        for who in ("bike", "app"):
            assert views[0]["samples"].get(DEVICES[who], 0) == len(self.committed[who]) - self.stores[
                who
            ].pending_samples(RIDE)

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def no_sample_lost_or_duplicated_at_its_source(self) -> None:
        for who in ("bike", "app"):
            store = self.stores[who]
            # The durable document and the device's live segments: within each no seq written twice;
            # across them every committed sample once, with the pending ones (a segment overlaps the
            # durable document until it is retired).
            own = [
                r
                for r in store.ride_refs(RIDE)
                if r.kind in (DocKind(who), DocKind.SEGMENT)
                and r.device == DEVICES[who]
                and store.has_doc(r.doc_id)
            ]
            held: set[int] = set()
            problems: list[str] = []
            for ref in own:
                items = store.doc(ref.doc_id).items()
                decoded = documents.decode_samples(items, problems)
                raw_count = sum(len(documents.decode_samples({k: v}, problems)) for k, v in items.items())
                assert raw_count == len(decoded), "a seq was written twice"
                held |= {smp.seq for smp in decoded}
            pending = self.stores[who].pending_samples(RIDE)
            assert pending + len(held) == len(self.committed[who])
            assert held <= self.committed[who]
            assert problems == []

    @invariant()
    def policy_rules_hold_on_every_replica(self) -> None:
        for name, store in self.stores.items():
            docs = store.ride_docs(RIDE)
            view = policy.resolve(docs)
            assert view.phase >= self.last_phase[name], "phase went back"
            self.last_phase[name] = view.phase
            event(
                f"{name} {view.phase.label} fill={bool(view.gap_fill)} conflict={bool(view.shared_conflicts)}"
            )
            assert view.end_events_counted <= 1
            bikes = [d for d in docs.devices if d.ref.kind is DocKind.BIKE]
            if view.phase is Phase.FINALIZED:
                fin = next(b.finalized for b in docs.backends if b.finalized is not None)
                assert view.authority == "backend" and view.totals == fin.totals
            else:
                assert view.authority == "bike"
                bike: DeviceDoc | None = bikes[0] if bikes else None
                alone, _ = policy.compute_totals(policy.counted_samples(bike), [], [])
                # Rule 8: nothing after the bike's claimed end counts; nothing before it is dropped.
                end_t = policy.bike_end_time(bike)
                after = sum(1 for smp in bike.samples if smp.t > end_t) if bike and end_t is not None else 0
                assert view.after_end == ({DEVICES["bike"]: after} if after else {})
                # The app can fill heart rate, never the bike's output, power or duration.
                for metric in ("output_kj", "max_power_w", "avg_cadence", "duration_s"):
                    assert view.totals[metric] == alone.to_json()[metric]


TestReplicas = pytest.mark.slow(Replicas.TestCase)
TestReplicas.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)


def test_finalize_refuses_until_the_bike_declared_samples_arrived(tmp_path: Path) -> None:
    backend = ReplicaStore(tmp_path / "be", device_id="backend", role=Role.BACKEND)
    backend.record_end_event(RIDE, f"ride-end:{RIDE}", "app-1", "app")
    try:
        backend.finalize(RIDE)
    except StoreError as exc:
        assert "not ready to finalize" in str(exc)
    else:
        raise AssertionError("finalized without the bike's declaration")
    finally:
        backend.close()
