"""A backend store in write-behind mode is SIGKILLed at random points; nothing it acknowledged (after
`await store.flushed()`) is lost, and what is on disk is a prefix of each document's writes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.ride.schema import Role, shared_ref
from engine.store import ReplicaStore

from .crash_write_behind import CONNECTIONS, ride
from .test_crash import kill_at_random_point

KILLS = 25


def verify(data_dir: Path, acknowledged: dict[int, int]) -> dict[int, int]:
    """Each connection's highest write on disk; asserts that no acknowledged write is missing and that
    the writes on disk are contiguous (commits happen in order)."""
    store = ReplicaStore(data_dir, device_id="backend", role=Role.BACKEND)
    try:
        assert store.recovery.problems == [], store.recovery.problems
        present: dict[int, int] = {}
        for i in range(CONNECTIONS):
            ref = shared_ref(ride(i))
            store.load_ride(ride(i))  # the backend's replica loads each ride at its first use
            keys = set(store.doc(ref.doc_id).items("k")) if store.has_doc(ref.doc_id) else set()
            top = len(keys) - 1
            assert keys == {f"k{n}" for n in range(top + 1)}, "a gap: writes committed out of order"
            assert top >= acknowledged.get(i, -1), f"connection {i}: acknowledged write lost"
            present[i] = top
        return present
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_loses_nothing_acknowledged_with_write_behind(tmp_path: Path) -> None:
    rnd = random.Random(20261128)
    data_dir = tmp_path / "backend"
    acknowledged: dict[int, int] = {}
    for _ in range(KILLS):
        # A random instant: mid-group, mid-compaction.
        lines = kill_at_random_point("tests.store.crash_write_behind", data_dir, rnd, 200)
        for line in lines:
            i, n = (int(x) for x in line.split())
            acknowledged[i] = max(acknowledged.get(i, -1), n)
        present = verify(data_dir, acknowledged)
        # What survived once is durable from now on.
        acknowledged.update(present)
    assert sum(n + 1 for n in acknowledged.values()) >= KILLS
