"""The two role facades over the store's layers: a device replica and a backend replica."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.crdt import SyncSession
from engine.ride.schema import Role
from engine.store import BackendReplica, DeviceReplica, ReplicaStore, StoreError
from tests.support.samples import make_sample


def test_each_facade_opens_only_for_its_roles(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="DeviceReplica is not for a backend replica"):
        DeviceReplica(tmp_path / "a", device_id="backend", role=Role.BACKEND)
    with pytest.raises(StoreError, match="BackendReplica is not for a bike replica"):
        BackendReplica(tmp_path / "b", device_id="bike-1", role=Role.BIKE)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before opening


def test_a_device_ride_reaches_the_backend_through_the_facades(tmp_path: Path) -> None:
    bike = DeviceReplica(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    backend = BackendReplica(tmp_path / "backend", device_id="backend", role=Role.BACKEND)
    assert not hasattr(backend, "append_samples") and not hasattr(bike, "finalize")
    assert issubclass(ReplicaStore, DeviceReplica) and issubclass(ReplicaStore, BackendReplica)
    bike.start_ride("r1")
    bike.append_samples("r1", [make_sample(i) for i in range(12)])
    bike.end_ride("r1")
    for ref in bike.ride_refs("r1"):
        backend.ensure_doc(ref)
        gated = backend.gated_sync(ref.doc_id)
        session = SyncSession()
        for _ in range(20):
            msg = bike.generate_sync(ref.doc_id, session)
            if msg is not None:
                assert gated.receive(msg, device="bike-1", role=Role.BIKE).accepted
            reply = gated.generate()
            if reply is not None:
                bike.receive_sync(ref.doc_id, session, reply)
            if msg is None and reply is None:
                break
    view = backend.finalize("r1")
    assert view.phase.label == "finalized" and view.samples == {"bike-1": 12}
    bike.close()
    backend.close()
