"""Fixtures for the store tests: replicas on real SQLite files in tmp_path."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.ride.samples import Sample
from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.support.postgres import pg_cluster, pg_url  # noqa: F401  (PostgreSQL fixtures)

# A document saved by @automerge/automerge (JS) after `doc.c = new Counter(5)` on `{title: "x"}`: reading
# `c` panics in the Python bindings (docs/architecture.md#automerge-hazards), which no Python code can produce
# by itself.
JS_COUNTER_DOC = bytes.fromhex(
    "856f4a8327226013009b010110d01801b6fb1e1ec5fc9f1455557b2bd101a13f132fce26888cde4c5cb5b1db9e389eb0"
    "a722afe1b7c576dddba3a1a574b00701020302130323074003430256020b010402041304150b21022304340242045604"
    "5702800102020002017e02017eabcfa5d806007e00017f00020700027f0000027f0100027f007e0163057469746c6500"
    "0103007d037e0102017d0104017d1800160578030001"
)


class Clock:
    """A settable clock, so fold intervals and timestamps are explicit in tests."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_sample(seq: int, t0: float = 1_700_000_000.0, **kw: object) -> Sample:
    fields: dict[str, object] = {
        "hr": 120 + seq % 40,
        "contact": "detected",
        "cadence": 80 + seq % 15,
        "power_dw": 1500 + (seq * 37) % 900,
        "resistance": 30 + seq % 20,
    }
    fields.update(kw)
    return Sample(seq=seq, t=t0 + seq, **fields)  # type: ignore[arg-type]


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
