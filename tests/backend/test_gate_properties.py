"""Property tests of the backend gate, in-process (provider + sans-I/O session, no network): hostile sync
data never changes a document, and whatever an app writes into the shared document, the backend never
ends up holding an edit that claims another device or role."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from engine.backend.config import BackendConfig
from engine.backend.metrics import BackendMetrics
from engine.backend.provider import RideDocuments
from engine.backend.service import Backend, repo_id
from engine.crdt import CrdtDoc, SyncSession, new_actor_id
from engine.ride.schema import Role, own_ref, shared_ref
from engine.store import ReplicaStore
from engine.sync import effects as fx
from engine.sync import server_session as s
from engine.sync import wire
from tests.support.samples import T0, sample

RIDE = "ride-prop"
SERVER = "ridesync-backend"


class _Peer:
    device = "app-1"

    def document_changed(self, doc_id: str) -> None:
        pass


def _backend(tmp: Path) -> tuple[Backend, ReplicaStore]:
    backend = Backend(tmp / "srv", BackendConfig(), BackendMetrics(CollectorRegistry()))
    bike = ReplicaStore(tmp / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(5)])
    bike.fold(RIDE)
    bike.edit_shared(RIDE, "title", "t")
    for ref in bike.ride_refs(RIDE):
        backend.store.ensure_doc(ref)
        backend.store.apply_changes(ref.doc_id, [c.data for c in bike.changes_since(ref.doc_id, [])])
    return backend, bike


def _provider(backend: Backend, role: Role = Role.APP, device: str = "app-1") -> RideDocuments:
    return RideDocuments(
        backend, _Peer(), device=device, role=role, rides=frozenset({RIDE}), may_read=lambda ride: True
    )


@pytest.fixture(scope="module")
def gate_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One backend for all examples of the module: every rejected example must leave it unchanged anyway,
    and accepted ones only add what the invariants allow."""
    backend, bike = _backend(tmp_path_factory.mktemp("gate"))
    yield backend
    bike.close()
    backend.close()


def _heads(backend: Backend) -> dict[str, list[bytes]]:
    return {r.doc_id: backend.store.heads(r.doc_id) for r in backend.store.ride_refs(RIDE)}


@settings(max_examples=150)
@given(data=st.binary(min_size=1, max_size=400), which=st.sampled_from(["shared", "bike"]))
def test_random_sync_data_changes_nothing(gate_backend: Backend, data: bytes, which: str) -> None:
    backend = gate_backend
    before = _heads(backend)
    ref = shared_ref(RIDE) if which == "shared" else own_ref(RIDE, "bike-1", Role.BIKE)
    assert ref is not None
    session = s.ServerSession(server_peer_id=SERVER, provider=_provider(backend))
    session.receive(wire.encode(wire.Join("p")))
    effects = session.receive(wire.encode(wire.Sync("p", SERVER, repo_id(ref), data)))
    assert not any(isinstance(e, s.DocumentChanged) for e in effects)
    assert _heads(backend) == before


@settings(max_examples=150)
@given(frame=st.binary(min_size=0, max_size=300))
def test_random_frames_close_or_are_ignored(gate_backend: Backend, frame: bytes) -> None:
    backend = gate_backend
    before = _heads(backend)
    session = s.ServerSession(server_peer_id=SERVER, provider=_provider(backend))
    session.receive(wire.encode(wire.Join("p")))
    effects = session.receive(frame)
    assert all(isinstance(e, fx.Send | fx.Close) for e in effects)
    assert _heads(backend) == before


_roles = st.sampled_from(["app", "bike", "backend", "viewer", ""])
_devices = st.sampled_from(["app-1", "bike-1", "backend", "x"])


@st.composite
def _writes(draw: st.DrawFn, actor_hex: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["own_edit", "foreign_edit", "index", "header", "junk"]))
        edit = {
            "field": draw(st.sampled_from(["title", "notes", "rating"])),
            "value": draw(st.sampled_from(["a", 3, 9])),
            "t": 1.0,
            "device": draw(_devices),
            "role": draw(_roles),
            "seen": None,
        }
        if kind == "own_edit":
            out[f"edit.{actor_hex}.{draw(st.integers(1, 5))}"] = json.dumps(edit)
        elif kind == "foreign_edit":
            out[f"edit.{'ab' * 16}.{draw(st.integers(1, 5))}"] = json.dumps(edit)
        elif kind == "index":
            out[f"doc.{draw(st.sampled_from(['00' * 16, 'zz']))}"] = json.dumps(
                {"kind": "app", "device": "app-1"}
            )
        elif kind == "header":
            out[draw(st.sampled_from(["schema", "kind", "ride_id"]))] = draw(
                st.sampled_from([1, "shared", RIDE, "x"])
            )
        else:
            out[draw(st.sampled_from(["title", "claim.ended", "finalized"]))] = "x"
    return out


@settings(max_examples=60)
@given(data=st.data())
def test_the_shared_document_only_takes_edits_in_the_writers_name(gate_backend: Backend, data: Any) -> None:
    backend = gate_backend
    ref = shared_ref(RIDE)
    actor = new_actor_id("app-1")
    doc = CrdtDoc.load(backend.store.doc(ref.doc_id).save(), actor)
    doc.put(data.draw(_writes(actor.hex())))
    provider = _provider(backend)
    session = s.ServerSession(server_peer_id=SERVER, provider=provider)
    session.receive(wire.encode(wire.Join("p")))
    mine = SyncSession()
    closed = False
    for _ in range(10):  # a sync exchange converges in a few rounds
        out = mine.generate(doc)
        if out is None:
            break
        effects = session.receive(wire.encode(wire.Sync("p", SERVER, repo_id(ref), out)))
        closed = any(isinstance(e, fx.Close) for e in effects)
        if closed:
            break
        for e in effects:
            if isinstance(e, fx.Send):
                msg = wire.decode(e.frame)
                if isinstance(msg, wire.Sync):
                    mine.receive(doc, msg.data)
    held = backend.store.doc(ref.doc_id).items()
    for key, value in held.items():
        if key.startswith(f"edit.{actor.hex()}."):
            body = json.loads(str(value))
            assert (body["device"], body["role"]) == ("app-1", "app"), (key, body)
        assert key.startswith(("edit.", "doc.")) or key in ("schema", "kind", "ride_id"), key
    assert not any(k.startswith("edit.abab") for k in held)
    event("rejected" if closed else "accepted")
    if not closed:
        assert backend.store.heads(ref.doc_id) == doc.heads()
