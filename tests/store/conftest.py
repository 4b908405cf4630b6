"""Fixtures for the store tests: replicas on real SQLite files in tmp_path (helpers: tests/support/)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.support.clock import Clock
from tests.support.postgres import pg_cluster, pg_url  # noqa: F401  (PostgreSQL fixtures)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_replica(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., ReplicaStore]]:
    opened: list[ReplicaStore] = []

    def factory(
        name: str = "bike", role: Role = Role.BIKE, device: str | None = None, **kw: object
    ) -> ReplicaStore:
        store = ReplicaStore(tmp_path / name, device_id=device or f"{name}-1", role=role, clock=clock, **kw)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for store in opened:
        with contextlib.suppress(Exception):
            store.close()
