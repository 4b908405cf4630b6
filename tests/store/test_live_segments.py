"""Live segments (docs/architecture.md#live-segments) in the store: a bike with a live link folds into
short-lived segment documents and consolidates them into its durable bike document; readers take each
(device, seq) once; dead segments are retired from memory and storage.

Crash safety: each kill point (after a segment fold, mid-consolidation, before and after retirement, a
backend restart) is simulated by abandoning a replica and opening its files again, and after each no
acknowledged sample is lost and none is counted twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.backend.series import ride_series
from engine.ride import documents, schema
from engine.ride.model import DeviceDoc
from engine.ride.schema import DocKind, DocRef, Role
from engine.store import ReplicaStore
from engine.store.segments import MAX_LIVE_SEGMENTS
from tests.support.clock import Clock
from tests.support.samples import make_sample

from .test_gate import push

RIDE = "ride-live"
BIKE = "bike-1"
T0 = 1_700_000_000.0
DURABLE = DocRef(RIDE, DocKind.BIKE, BIKE)


class Killed(Exception):
    """A kill -9 at this point: nothing after it ran, nothing in flight was committed."""


def open_bike(root: Path, clock: Clock, **kw: Any) -> ReplicaStore:
    kw.setdefault("segment_interval_s", 60.0)
    return ReplicaStore(root / "bike", device_id=BIKE, role=Role.BIKE, clock=clock, **kw)


def open_backend(root: Path, clock: Clock) -> ReplicaStore:
    backend = ReplicaStore(root / "backend", device_id="backend", role=Role.BACKEND, clock=clock)
    backend.bind_ride_owner(RIDE, BIKE)
    return backend


def ride(bike: ReplicaStore, clock: Clock, seqs: range, *, online: bool = True) -> None:
    """One sample per ride second, `maybe_fold` after each, as the bike runner does."""
    for seq in seqs:
        clock.t = T0 + seq + 1
        bike.append_sample(RIDE, make_sample(seq, t0=T0))
        bike.maybe_fold(RIDE, online=online)


def segments_of(store: ReplicaStore) -> list[DocRef]:
    return [r for r in store.ride_refs(RIDE) if r.kind is DocKind.SEGMENT and store.has_doc(r.doc_id)]


def seqs_of(store: ReplicaStore, ref: DocRef) -> list[int]:
    decoded = documents.decode(store.doc(ref.doc_id), ref)
    assert isinstance(decoded, DeviceDoc) and decoded.problems == ()
    return [s.seq for s in decoded.samples]


def push_all(bike: ReplicaStore, backend: ReplicaStore) -> None:
    """The bike's documents through the gate, as its sync connection sends them; a segment the backend
    retired is not taken again (`doc-unavailable` from the backend's provider)."""
    for ref in bike.ride_refs(RIDE):
        if not backend.has_doc(ref.doc_id) and backend.segment_retired(ref):
            continue
        if bike.has_doc(ref.doc_id):
            result = push(bike.doc(ref.doc_id), backend, ref, BIKE, Role.BIKE)
            assert result.accepted, result.reason


def everything(store: ReplicaStore) -> dict[str, Any]:
    view = store.view(RIDE).to_json()
    return {"view": view, "series": ride_series(store.ride_docs(RIDE))}


def reference(root: Path, seqs: range) -> dict[str, Any]:
    """The same samples ridden without live segments (10 s folds into the bike document)."""
    clock = Clock(T0)
    bike = open_bike(root / "reference", clock, segment_interval_s=None)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, seqs)
    bike.fold(RIDE)  # every sample in the document
    backend = open_backend(root / "reference", clock)
    push_all(bike, backend)
    assert segments_of(bike) == []
    return everything(backend)


def test_live_folds_go_into_a_segment_consolidated_once_per_interval(tmp_path: Path) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    start_changes = len(bike.changes_since(DURABLE.doc_id, []))
    ride(bike, clock, range(55))
    # Five 10 s folds, all into segment 0; the durable document has not changed.
    (seg0,) = segments_of(bike)
    assert seg0 == schema.segment_ref(RIDE, BIKE, 0)
    assert len(bike.changes_since(seg0.doc_id, [])) == 5
    assert seqs_of(bike, seg0) == list(range(50))
    assert len(bike.changes_since(DURABLE.doc_id, [])) == start_changes
    # The shared index lists the segment, like any document of the ride.
    assert seg0.doc_id in {r.doc_id for r in bike.ride_refs(RIDE)}
    ride(bike, clock, range(55, 125))
    # At 60 s and 120 s one change each consolidated the segment (and what was pending) into the durable
    # document, naming the segment it covers.
    assert len(bike.changes_since(DURABLE.doc_id, [])) == start_changes + 2
    assert documents.segment_markers(bike.doc(DURABLE.doc_id)) == {0, 1}
    assert seqs_of(bike, DURABLE) == list(range(120))
    assert [r.segment for r in segments_of(bike)] == [0, 1]
    assert bike.pending_samples(RIDE) == 5
    # Until acknowledged, the bike keeps its covered segments; its view counts each sample once.
    assert bike.view(RIDE).samples == {BIKE: 125 - bike.pending_samples(RIDE)}


def test_a_segment_overlapping_the_durable_document_counts_once(tmp_path: Path) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(150))
    bike.fold(RIDE)  # everything in the durable document; segments 0..2 overlap it entirely
    backend = open_backend(tmp_path, clock)
    push_all(bike, backend)
    assert len(segments_of(backend)) == 3
    got = everything(backend)
    assert got["view"]["samples"] == {BIKE: 150}
    assert got["view"]["problems"] == []
    assert got == reference(tmp_path, range(150))
    # A segment the durable document lacks in part (consolidation not yet arrived) counts too, once.
    ride(bike, clock, range(150, 185))
    push_all(bike, backend)
    assert backend.view(RIDE).samples == {BIKE: 180}
    assert everything(backend) == reference(tmp_path / "2", range(180))


def test_the_backend_retires_a_covered_segment_from_memory_and_storage(tmp_path: Path) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(55))
    backend = open_backend(tmp_path, clock)
    push_all(bike, backend)
    (seg0,) = segments_of(backend)
    assert backend.retire_segments(RIDE) == []  # not consolidated yet: live
    ride(bike, clock, range(55, 61))  # consolidation at 60 s
    push_all(bike, backend)
    before = everything(backend)
    assert backend.retire_segments(RIDE) == [seg0]
    assert not backend.has_doc(seg0.doc_id)
    assert seg0.doc_id not in {row[0] for row in backend.storage.docs(RIDE)}
    assert seg0.doc_id not in {r.doc_id for r in backend.ride_refs(RIDE)}  # the index still lists it
    assert backend.segment_retired(seg0)
    assert everything(backend) == before
    backend.close()
    reopened = open_backend(tmp_path, clock)
    assert not reopened.has_ride(RIDE) or not reopened.has_doc(seg0.doc_id)
    assert everything(reopened) == before


def test_the_bike_drops_its_segment_only_once_the_backend_acknowledged_the_durable_heads(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(55))
    old_heads = bike.heads(DURABLE.doc_id)
    ride(bike, clock, range(55, 61))
    (seg0,) = [r for r in segments_of(bike) if r.segment == 0]
    assert bike.retire_segments(RIDE) == []  # no acknowledgement: kept
    assert bike.retire_segments(RIDE, {DURABLE.doc_id: old_heads}) == []  # before the consolidation
    assert bike.retire_segments(RIDE, {DURABLE.doc_id: bike.heads(DURABLE.doc_id)}) == [seg0]
    assert not bike.has_doc(seg0.doc_id)
    assert seg0.doc_id not in {row[0] for row in bike.storage.docs(RIDE)}
    ride(bike, clock, range(61, 200))
    bike.close()
    reopened = open_bike(tmp_path, clock)
    assert not reopened.has_doc(seg0.doc_id)
    assert seg0.doc_id not in {r.doc_id for r in reopened.ride_refs(RIDE)}
    assert reopened.next_seq(RIDE) == 200
    assert reopened.view(RIDE).samples == {BIKE: 200}


def test_offline_goes_into_the_durable_document_and_the_backlog_is_never_sent_through_a_segment(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock, offline_fold_interval_s=3600.0)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(35))
    assert [r.segment for r in segments_of(bike)] == [0]
    ride(bike, clock, range(35, 36), online=False)  # the link drops: the segment is consolidated at once
    assert seqs_of(bike, DURABLE) == list(range(36))
    ride(bike, clock, range(36, 600), online=False)
    assert seqs_of(bike, DURABLE) == list(range(36))  # offline: hourly
    changes = len(bike.changes_since(DURABLE.doc_id, []))
    ride(bike, clock, range(600, 601))  # back online: the backlog in one change of the durable document
    assert seqs_of(bike, DURABLE) == list(range(601))
    assert len(bike.changes_since(DURABLE.doc_id, [])) == changes + 1
    assert [r.segment for r in segments_of(bike)] == [0]
    ride(bike, clock, range(601, 625))  # then live folds go into the next segment
    assert [r.segment for r in segments_of(bike)] == [0, 1]


def test_the_end_consolidates_everything_and_declares_each_sample_once(tmp_path: Path) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(95))
    bike.end_ride(RIDE, t=T0 + 95, duration_s=95.0)
    assert seqs_of(bike, DURABLE) == list(range(95))
    backend = open_backend(tmp_path, clock)
    push_all(bike, backend)
    view = backend.view(RIDE)
    assert view.declared == {BIKE: {"last_seq": 94, "count": 95}} and view.missing_samples == {}
    assert view.ready_to_finalize
    final = backend.finalize(RIDE)
    expected = reference(tmp_path, range(95))["view"]["totals"] | {"duration_s": 95.0}
    assert final.samples == {BIKE: 95} and final.totals == expected
    # After finalization every segment is dead: the backend drops them.
    assert len(backend.retire_segments(RIDE)) == 2 and segments_of(backend) == []


def test_a_bike_holding_the_most_live_segments_folds_into_its_durable_document(tmp_path: Path) -> None:
    """Without acknowledgements the bike keeps its consolidated segments; past the limit a fold goes
    where it went before segments existed, so a backend that never answers costs nothing unbounded."""
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(60 * (MAX_LIVE_SEGMENTS + 2)))
    assert len(segments_of(bike)) == MAX_LIVE_SEGMENTS
    assert bike.view(RIDE).samples == {BIKE: 60 * (MAX_LIVE_SEGMENTS + 2) - bike.pending_samples(RIDE)}


# -- kill points ---------------------------------------------------------------------------------------


def _kill_on_write(store: ReplicaStore, doc_id: str) -> None:
    """From now on the store dies at the first write touching `doc_id`, before it commits."""
    real = store.storage.write

    def write(job: Any) -> None:
        probe: list[str] = []

        class Spy:
            def __getattr__(self, name: str) -> Any:
                return lambda *a, **k: probe.append(str(a[0]) if a else name)

        job(Spy())
        if doc_id in probe:
            raise Killed
        real(job)

    store.storage.write = write  # type: ignore[method-assign]


def _check(root: Path, clock: Clock, recorded: int) -> ReplicaStore:
    """Reopen the bike from its files: every recorded sample is in its durable document once, its view
    counts each once, and its backend (fed everything the bike holds) agrees with the reference ride."""
    bike = open_bike(root, clock)
    assert seqs_of(bike, DURABLE) == list(range(recorded))
    for ref in segments_of(bike):
        seqs = seqs_of(bike, ref)
        assert set(seqs) <= set(range(recorded))
    assert bike.view(RIDE).samples == {BIKE: recorded}
    assert bike.storage.max_seq(RIDE, BIKE) == recorded - 1
    return bike


def test_killed_after_a_segment_fold(tmp_path: Path) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(45))  # 40 in segment 0, 5 only in the raw log
    del bike  # kill -9: nothing closed
    bike = _check(tmp_path, clock, 45)  # recovery consolidated everything, once
    assert documents.segment_markers(bike.doc(DURABLE.doc_id)) == {0}
    backend = open_backend(tmp_path, clock)
    push_all(bike, backend)
    assert everything(backend) == reference(tmp_path, range(45))
    assert [r.segment for r in backend.retire_segments(RIDE)] == [0]


def test_killed_mid_consolidation(tmp_path: Path) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(59))
    _kill_on_write(bike, DURABLE.doc_id)
    with pytest.raises(Killed):
        ride(bike, clock, range(59, 60))  # the consolidation's transaction never commits
    del bike
    bike = _check(tmp_path, clock, 60)
    ride(bike, clock, range(60, 130))
    bike.close()
    _check(tmp_path, clock, 130).close()


def test_killed_before_and_after_retirement(tmp_path: Path) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(61))
    backend = open_backend(tmp_path, clock)
    push_all(bike, backend)
    (seg0,) = [r for r in segments_of(bike) if r.segment == 0]
    del bike  # acknowledged, not yet retired
    bike = _check(tmp_path, clock, 61)
    assert bike.has_doc(seg0.doc_id)
    assert bike.retire_segments(RIDE, {DURABLE.doc_id: backend.heads(DURABLE.doc_id)}) == [seg0]
    del bike  # retired
    bike = _check(tmp_path, clock, 61)
    assert not bike.has_doc(seg0.doc_id)
    push_all(bike, backend)  # what the bike's restart consolidated (seq 60)
    # The backend, killed after retiring and restarted, holds the same ride.
    assert backend.retire_segments(RIDE) == [seg0]
    before = everything(backend)
    del backend
    backend = open_backend(tmp_path, clock)
    assert everything(backend) == before == reference(tmp_path, range(61))
    # The bike reconnects with nothing new: the retired segment is not offered (the index lists it).
    assert seg0.doc_id not in {r.doc_id for r in bike.ride_refs(RIDE)}


def test_a_backend_restart_with_a_live_segment_keeps_it_and_counts_it_once(tmp_path: Path) -> None:
    clock = Clock(T0)
    bike = open_bike(tmp_path, clock)
    bike.start_ride(RIDE, t=T0)
    ride(bike, clock, range(95))  # segment 0 consolidated, segment 1 live
    backend = open_backend(tmp_path, clock)
    push_all(bike, backend)
    before = everything(backend)
    del backend
    backend = open_backend(tmp_path, clock)
    assert everything(backend) == before
    assert [r.segment for r in segments_of(backend)] == [0, 1]
    assert [r.segment for r in backend.retire_segments(RIDE)] == [0]
    ride(bike, clock, range(95, 121))
    push_all(bike, backend)
    assert [r.segment for r in backend.retire_segments(RIDE)] == [1]
    assert backend.view(RIDE).samples == {BIKE: 120}
    assert everything(backend) == reference(tmp_path, range(120))
