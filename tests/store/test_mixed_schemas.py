"""One ride written in both sample batch schemas: a bike upgraded mid-ride (schema 1, then 2), an app still
on schema 1, a backend reading both. Nothing is lost or counted twice, and the resolved view, the series
and the totals are those of the same ride written in schema 1 only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.backend.series import ride_series
from engine.ride import documents
from engine.ride.model import DeviceDoc
from engine.ride.schema import DocKind, Role
from engine.store import ReplicaStore
from tests.support.clock import Clock
from tests.support.samples import make_sample

from .test_gate import push

RIDE = "ride-m"
T0 = 1_700_000_000.0


def _ride(root: Path, clock: Clock, bike_schemas: tuple[int, int], app_schema: int) -> ReplicaStore:
    """Bike: 0..99 folded every 10 s, restart, 100..239 (offline: lazily folded; and a re-fold of 90..109
    as a replica that lost track of its fold would write); app: 0..59. Everything pushed to a backend
    through the gate; the backend is returned."""

    def replica(name: str, role: Role, schema: int) -> ReplicaStore:
        return ReplicaStore(root / name, device_id=f"{name}-1", role=role, clock=clock, batch_schema=schema)

    backend = ReplicaStore(root / "backend", device_id="backend", role=Role.BACKEND, clock=clock)
    bike = replica("bike", Role.BIKE, bike_schemas[0])
    bike.start_ride(RIDE, t=T0)
    for lo in range(0, 100, 10):
        clock.t += 10
        bike.append_samples(RIDE, [make_sample(s, t0=T0) for s in range(lo, lo + 10)])
        bike.maybe_fold(RIDE)
    bike.close()
    bike = replica("bike", Role.BIKE, bike_schemas[1])  # upgraded (or not) between two runs
    for lo in range(100, 240, 10):
        clock.t += 10
        bike.append_samples(RIDE, [make_sample(s, t0=T0, rr=(500 + s,)) for s in range(lo, lo + 10)])
        bike.maybe_fold(RIDE, online=False)
    bike.fold(RIDE)
    own = next(r for r in bike.ride_refs(RIDE) if r.kind is DocKind.BIKE)
    documents.add_samples(
        bike.doc(own.doc_id), [make_sample(s, t0=T0) for s in range(90, 110)], batch_schema=bike_schemas[1]
    )
    bike.persist(own.doc_id)
    bike.end_ride(RIDE, t=T0 + 240, duration_s=240.0)

    app = replica("app", Role.APP, app_schema)
    app.start_ride(RIDE, t=T0)
    app.append_samples(RIDE, [make_sample(s, t0=T0 + 0.4, hr=140) for s in range(60)])
    app.fold(RIDE)

    backend.bind_ride_owner(RIDE, "bike-1")
    for store, device, role in ((bike, "bike-1", Role.BIKE), (app, "app-1", Role.APP)):
        for ref in store.ride_refs(RIDE):
            assert push(store.doc(ref.doc_id), backend, ref, device, role).accepted
        store.close()
    return backend


def _blob_schemas(store: ReplicaStore, kind: DocKind) -> set[int]:
    """The batch schemas of a device's blobs: for a bike, its durable document and its live segments
    (the 10 s folds before the restart went into a segment, the rest was consolidated after it)."""
    kinds = {kind, DocKind.SEGMENT} if kind is DocKind.BIKE else {kind}
    refs = [r for r in store.ride_refs(RIDE) if r.kind in kinds and store.has_doc(r.doc_id)]
    values = [v for ref in refs for v in store.doc(ref.doc_id).items("s").values()]
    return {v[0] for v in values if isinstance(v, bytes)}


def _everything(backend: ReplicaStore) -> dict[str, Any]:
    docs = backend.ride_docs(RIDE)
    samples = {d.device: d.samples for d in docs.devices if isinstance(d, DeviceDoc)}
    return {"view": backend.view(RIDE).to_json(), "series": ride_series(docs), "samples": samples}


def test_mixed_schema_replicas_reconcile_with_no_loss_or_duplication(tmp_path: Path) -> None:
    mixed = _ride(tmp_path / "mixed", Clock(T0), (1, 2), 1)
    reference = _ride(tmp_path / "reference", Clock(T0), (1, 1), 1)
    assert _blob_schemas(mixed, DocKind.BIKE) == {1, 2}
    assert _blob_schemas(mixed, DocKind.APP) == {1}
    assert _blob_schemas(reference, DocKind.BIKE) == {1}

    got = _everything(mixed)
    assert [s.seq for s in got["samples"]["bike-1"]] == list(range(240))
    assert [s.seq for s in got["samples"]["app-1"]] == list(range(60))
    assert got["view"]["samples"] == {"app-1": 60, "bike-1": 240}
    assert got["view"]["missing_samples"] == {}
    assert got["view"]["declared"] == {"bike-1": {"last_seq": 239, "count": 240}}
    assert got["view"]["problems"] == []
    assert got == _everything(reference)


def test_a_schema_2_device_and_a_schema_2_app_resolve_like_schema_1(tmp_path: Path) -> None:
    new = _everything(_ride(tmp_path / "new", Clock(T0), (2, 2), 2))
    old = _everything(_ride(tmp_path / "old", Clock(T0), (1, 1), 1))
    assert new == old
    assert new["view"]["totals"]["output_kj"] > 0
