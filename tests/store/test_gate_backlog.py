"""The gate against peers that pin memory: a device that may not write a document stages nothing (its
first message carrying changes is refused before Automerge sees it), and changes queued for a missing
dependency are bounded per connection."""

from __future__ import annotations

from collections.abc import Callable

from engine.crdt import CrdtDoc, SyncSession, inspect_sync_message, new_actor_id
from engine.ride.schema import Role, shared_ref
from engine.store import Backlog, ReplicaStore
from tests.support.hostile import orphan_changes, sync_message
from tests.support.samples import make_sample

from .test_gate import push

Open = Callable[..., ReplicaStore]
RIDE = "ride-b"


def _backend(open_replica: Open) -> ReplicaStore:
    """A backend holding a bike's ride (a document with heads: a peer claiming other heads keeps the
    exchange, and so the staging copy, open)."""
    bike = open_replica()
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(5)])
    bike.fold(RIDE)
    for ref in bike.ride_refs(RIDE):
        assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    return backend


def test_a_viewer_is_refused_before_anything_is_staged(open_replica: Open) -> None:
    backend = _backend(open_replica)
    ref = shared_ref(RIDE)
    backlog = Backlog(max_changes=1000, max_bytes=1 << 30)
    gated = backend.gated_sync(ref.doc_id, backlog)
    # Changes that could only be queued (their dependency is withheld): "nothing new" was accepted.
    (message,) = orphan_changes(1, 1024, device="viewer-1")
    result = gated.receive(message, device="viewer-1", role=Role.VIEWER)
    assert not result.accepted and result.code == "not_allowed"
    assert "viewer viewer-1 may not write shared document" in result.reason
    assert gated.pending == (0, 0) and (backlog.changes, backlog.bytes) == (0, 0)
    assert gated._staging is None  # not even a fork


def test_an_app_writing_the_bikes_document_is_refused_before_anything_is_staged(open_replica: Open) -> None:
    backend = _backend(open_replica)
    (ref,) = [r for r in backend.ride_refs(RIDE) if r.kind.value == "bike"]
    gated = backend.gated_sync(ref.doc_id, Backlog(1000, 1 << 30))
    (message,) = orphan_changes(1, 64, device="app-1")
    result = gated.receive(message, device="app-1", role=Role.APP)
    assert not result.accepted and result.code == "not_allowed"
    assert gated._staging is None


def test_a_viewer_still_reads(open_replica: Open) -> None:
    """Messages without changes (heads, need, Bloom filter) are how a reader syncs: still accepted."""
    backend = _backend(open_replica)
    ref = shared_ref(RIDE)
    reader = CrdtDoc.new(new_actor_id("viewer-1"))
    session = SyncSession()
    message = session.generate(reader)
    assert message is not None and not inspect_sync_message(message).carries_changes
    assert backend.gated_sync(ref.doc_id).receive(message, device="viewer-1", role=Role.VIEWER).accepted


def test_queued_changes_are_bounded_per_connection_and_freed_on_refusal(open_replica: Open) -> None:
    backend = _backend(open_replica)
    ref = shared_ref(RIDE)
    before = backend.heads(ref.doc_id)
    backlog = Backlog(max_changes=5, max_bytes=1 << 30)
    gated = backend.gated_sync(ref.doc_id, backlog)
    messages = orphan_changes(6, 2048, device="bike-1")
    for message in messages[:5]:
        result = gated.receive(message, device="bike-1", role=Role.BIKE)
        assert result.accepted and not result.new_changes  # queued, nothing new
        assert gated.generate() is not None  # the server asks for what is missing: the copy stays
    assert gated.pending[0] == 5 and backlog.changes == 5 and backlog.bytes > 5 * 2048
    result = gated.receive(messages[5], device="bike-1", role=Role.BIKE)
    assert not result.accepted and result.code == "backlog"
    assert "6 changes" in result.reason and "limit is 5 changes" in result.reason
    assert gated._staging is None and gated.pending == (0, 0) and (backlog.changes, backlog.bytes) == (0, 0)
    assert backend.heads(ref.doc_id) == before


def test_the_byte_limit_counts_across_documents(open_replica: Open) -> None:
    backend = _backend(open_replica)
    refs = backend.ride_refs(RIDE)
    assert len(refs) == 2
    backlog = Backlog(max_changes=1000, max_bytes=350_000)  # three changes of 100 KB fit, not four
    gated = {ref.doc_id: backend.gated_sync(ref.doc_id, backlog) for ref in refs}
    results = []
    for ref, message in zip(refs * 2, orphan_changes(4, 100_000, device="bike-1"), strict=True):
        results.append(gated[ref.doc_id].receive(message, device="bike-1", role=Role.BIKE))
        gated[ref.doc_id].generate()
    assert [r.accepted for r in results] == [True, True, True, False]
    assert results[-1].code == "backlog"


def test_a_missing_dependency_that_arrives_releases_the_queue(open_replica: Open) -> None:
    backend = _backend(open_replica)
    ref = shared_ref(RIDE)
    backlog = Backlog(max_changes=100, max_bytes=1 << 30)
    gated = backend.gated_sync(ref.doc_id, backlog)
    doc = CrdtDoc.new(new_actor_id("bike-1"))
    doc.put({"schema": 1})
    first = doc.changes_since([])
    heads = doc.heads()
    doc.put({"kind": "shared"})
    second = doc.changes_since(heads)
    assert gated.receive(sync_message([c.data for c in second]), device="bike-1", role=Role.BIKE).accepted
    assert backlog.changes == 1
    result = gated.receive(sync_message([c.data for c in first]), device="bike-1", role=Role.BIKE)
    assert result.accepted and len(result.new_changes) == 2
    assert (backlog.changes, backlog.bytes) == (0, 0)
    assert set(doc.heads()) <= set(backend.heads(ref.doc_id))
