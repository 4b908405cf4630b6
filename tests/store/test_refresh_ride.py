"""`ReplicaStore.refresh_ride`: a backend replica merges what another writer committed to a ride in the
same storage (several backend nodes over one database), without losing what it holds itself."""

from __future__ import annotations

from pathlib import Path

from engine.ride.schema import Role, own_ref, shared_ref
from engine.store import ReplicaStore
from engine.store.memory import MemoryBacking, MemoryStorage
from tests.support.samples import sample

RIDE = "ride-r"


def _pair(tmp_path: Path, backing: MemoryBacking | None = None) -> tuple[ReplicaStore, ReplicaStore]:
    backing = backing if backing is not None else MemoryBacking()
    a = ReplicaStore(tmp_path / "a", device_id="backend", role=Role.BACKEND, storage=MemoryStorage(backing))
    b = ReplicaStore(tmp_path / "b", device_id="backend", role=Role.BACKEND, storage=MemoryStorage(backing))
    return a, b


def _bike_ride(tmp_path: Path, samples: int) -> ReplicaStore:
    bike = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride(RIDE, t=1.0)
    bike.append_samples(RIDE, [sample(i) for i in range(samples)])
    bike.fold(RIDE)
    return bike


def _copy(src: ReplicaStore, dst: ReplicaStore) -> None:
    """What a sync would do: every document of the ride, changes applied and persisted on `dst`."""
    for ref in src.ride_refs(RIDE):
        dst.ensure_doc(ref)
        dst.apply_changes(ref.doc_id, [c.data for c in src.changes_since(ref.doc_id, [])])


def test_a_ride_written_by_another_node_is_found_by_its_id_and_merged(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    bike = _bike_ride(tmp_path, 10)
    _copy(bike, a)
    assert not b.is_loaded(RIDE)
    changed = b.refresh_ride(RIDE)
    bike_doc = own_ref(RIDE, "bike-1", Role.BIKE)
    assert bike_doc is not None
    assert set(changed) == {shared_ref(RIDE).doc_id, bike_doc.doc_id}
    assert b.has_ride(RIDE)
    assert b.view(RIDE).samples == {"bike-1": 10}
    assert b.refresh_ride(RIDE) == []  # nothing new: nothing changed
    # More samples through node A: only the bike's document changed.
    bike.append_samples(RIDE, [sample(i) for i in range(10, 15)])
    bike.fold(RIDE)
    _copy(bike, a)
    assert b.refresh_ride(RIDE) == [bike_doc.doc_id]
    assert b.view(RIDE).samples == {"bike-1": 15}
    assert b.heads(bike_doc.doc_id) == a.heads(bike_doc.doc_id)


def test_refresh_keeps_what_this_node_wrote_and_persists_it_once(tmp_path: Path) -> None:
    backing = MemoryBacking()
    a, b = _pair(tmp_path, backing)
    _copy(_bike_ride(tmp_path, 5), a)
    b.refresh_ride(RIDE)
    b.record_end_event(RIDE, "end-key", "app-1", "app", t=9.0)  # node B's own write
    a.edit_shared(RIDE, "title", "from A")  # node A's, concurrently
    b.refresh_ride(RIDE)
    assert b.view(RIDE).shared.get("title") == "from A"
    assert b.view(RIDE).end_events_counted == 1
    a.refresh_ride(RIDE)
    assert a.view(RIDE).end_events_counted == 1 and a.view(RIDE).shared.get("title") == "from A"
    # Reloading from the storage alone gives the same documents: nothing was lost or written twice.
    fresh = ReplicaStore(
        tmp_path / "c", device_id="backend", role=Role.BACKEND, storage=MemoryStorage(backing)
    )
    assert fresh.load_ride(RIDE)  # a backend loads each ride at its first use
    for ref in a.ride_refs(RIDE):
        assert sorted(fresh.heads(ref.doc_id)) == sorted(a.heads(ref.doc_id)) == sorted(b.heads(ref.doc_id))


def test_an_unknown_ride_stays_unknown(tmp_path: Path) -> None:
    _, b = _pair(tmp_path)
    assert b.refresh_ride("ride-nobody") == []
    assert not b.has_ride("ride-nobody")
