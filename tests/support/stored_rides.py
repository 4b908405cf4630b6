"""Rides written straight into a backend's data dir (real SQLite), for tests of listing many rides: the
backend started over it holds none in memory and reads each back from the storage when it is used."""

from __future__ import annotations

from pathlib import Path

from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.support.samples import T0


def seed_rides(data: Path, n: int) -> list[str]:
    """`n` rides `ride-0000`… stored in the backend's store under `data`; their ids in order."""
    ids = [f"ride-{i:04d}" for i in range(n)]
    with ReplicaStore(data / "backend", device_id="backend", role=Role.BACKEND) as store:
        for ride_id in reversed(ids):  # stored out of order: the listing orders them
            store.start_ride(ride_id, t=T0)
    return ids
