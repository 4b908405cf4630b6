"""Gated sync through the store terminates and converges, also when Automerge has to queue changes.

The sync protocol's Bloom filter has false positives, so a peer may skip a change it wrongly believes the
other side has, and send its descendants: Automerge queues those until the missing dependency arrives. A
gate that applies each message to a fresh fork throws that queue away, and the two sides then ask for and
send the same changes forever (seen in 3 of 4 runs of this scenario before the staging copy moved into the
store). Each exchange here is bounded; a loop shows up as an exchange that does not converge."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.crdt import SyncSession
from engine.ride.schema import DocRef, Role
from engine.store import ReplicaStore
from tests.support.samples import make_sample

pytestmark = pytest.mark.slow
Open = Callable[..., ReplicaStore]
EXCHANGES = 100
MAX_ROUNDS = 200  # a converging exchange of these sizes takes a handful of round trips


def sync_doc(device: ReplicaStore, backend: ReplicaStore, ref: DocRef, device_id: str, role: Role) -> int:
    """One connection's sync of one document, device ⇄ backend (gated); the number of round trips."""
    backend.ensure_doc(ref)
    device.ensure_doc(ref)
    mine, gated = SyncSession(), backend.gated_sync(ref.doc_id)
    for rounds in range(1, MAX_ROUNDS + 1):
        msg = device.generate_sync(ref.doc_id, mine)
        if msg is not None:
            result = gated.receive(msg, device=device_id, role=role)
            assert result.accepted, result.reason
        reply = gated.generate()
        if reply is not None:
            device.receive_sync(ref.doc_id, mine, reply)
        if msg is None and reply is None:
            return rounds
    raise AssertionError(f"{ref.doc_id}: no convergence after {MAX_ROUNDS} round trips (sync loop)")


def sync_ride(device: ReplicaStore, backend: ReplicaStore, ride: str, device_id: str, role: Role) -> None:
    # Twice over every document the ride names, as a device does when the index brings new documents.
    for _ in range(2):
        for ref in device.ride_refs(ride) + backend.ride_refs(ride):
            sync_doc(device, backend, ref, device_id, role)


def test_a_hundred_gated_bike_then_app_exchanges_converge(open_replica: Open) -> None:
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    for i in range(EXCHANGES):
        ride, bike_id, app_id = f"ride-conv-{i}", f"bike-{i}", f"app-{i}"
        bike = open_replica(f"bike-{i}", role=Role.BIKE, device=bike_id)
        app = open_replica(f"app-{i}", role=Role.APP, device=app_id)
        bike.start_ride(ride)
        bike.append_samples(ride, [make_sample(j) for j in range(30)])
        bike.fold(ride)
        bike.edit_shared(ride, "title", f"bike {i}")
        sync_ride(bike, backend, ride, bike_id, Role.BIKE)
        # The app starts the same ride on its own (its own shared-document header, concurrent with the
        # bike's), records, ends and edits offline, then syncs: many changes on both sides at once.
        app.start_ride(ride)
        app.append_samples(ride, [make_sample(j, hr=90) for j in range(15)])
        app.end_ride(ride, duration_s=1080.0)
        app.edit_shared(ride, "title", f"app {i}")
        sync_ride(app, backend, ride, app_id, Role.APP)
        for ref in backend.ride_refs(ride):
            assert app.heads(ref.doc_id) == backend.heads(ref.doc_id)
        assert app.view(ride).samples.get(bike_id) == 30
        bike.close()
        app.close()
    assert len(backend.rides()) == EXCHANGES
