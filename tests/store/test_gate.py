"""The store's gated sync receive: fork, inspect each new change's author, merge only if allowed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.crdt import CrdtDecodeError, CrdtDoc, SyncSession, new_actor_id
from engine.ride import documents
from engine.ride.schema import DocRef, Role, own_ref, shared_ref
from engine.store import GateResult, ReplicaStore
from tests.support.automerge_js import JS_COUNTER_DOC
from tests.support.samples import make_sample

Open = Callable[..., ReplicaStore]
RIDE = "ride-g"


def push(sender: CrdtDoc, backend: ReplicaStore, ref: DocRef, device: str, role: Role) -> GateResult:
    """Run a sync conversation from `sender` to the backend, gated; stop at the first rejection."""
    backend.ensure_doc(ref)
    mine, gated = SyncSession(), backend.gated_sync(ref.doc_id)
    result = GateResult(accepted=True)
    for _ in range(20):
        msg = mine.generate(sender)
        if msg is not None:
            result = gated.receive(msg, device=device, role=role)
            if not result.accepted:
                return result
        reply = gated.generate()
        if reply is not None:
            mine.receive(sender, reply)
        if msg is None and reply is None:
            break
    return result


def test_owner_writes_are_merged_and_persisted(open_replica: Open) -> None:
    bike = open_replica()
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(10)])
    bike.fold(RIDE)
    ref = own_ref(RIDE, "bike-1", Role.BIKE)
    assert ref is not None
    assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    assert backend.heads(ref.doc_id) == bike.heads(ref.doc_id)
    assert backend.actor_owner(bike.actor) == ("bike-1", Role.BIKE)
    backend.close()
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.load_ride(RIDE)  # the backend's replica loads each ride at its first use
    assert again.heads(ref.doc_id) == bike.heads(ref.doc_id)


def test_a_device_cannot_write_another_devices_document(open_replica: Open) -> None:
    app = open_replica("app", role=Role.APP)
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    bike_ref = own_ref(RIDE, "bike-1", Role.BIKE)
    assert bike_ref is not None
    forged = app.ensure_doc(bike_ref)
    documents.init_doc(forged, bike_ref)
    documents.add_samples(forged, [make_sample(0, hr=250)])
    result = push(forged, backend, bike_ref, "app-1", Role.APP)
    assert not result.accepted and "may not write bike document" in result.reason
    assert backend.doc(bike_ref.doc_id).keys() == []
    assert backend.actor_owner(app.actor) is None


def test_an_actor_bound_to_one_device_is_refused_from_another(open_replica: Open) -> None:
    bike = open_replica()
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    bike.start_ride(RIDE)
    ref = shared_ref(RIDE)
    assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    # Another device edits the shared document under the bike's actor id.
    stolen = bike.doc(ref.doc_id).fork(bike.actor)
    documents.edit_shared(stolen, "title", "hijack", t=1.0, device="app-2", role="app", seen=None)
    before = backend.heads(ref.doc_id)
    result = push(stolen, backend, ref, "app-2", Role.APP)
    assert not result.accepted and "belongs to bike bike-1" in result.reason
    assert backend.heads(ref.doc_id) == before
    assert backend.view(RIDE).shared == {}


def test_relayed_changes_of_another_device_are_refused(open_replica: Open) -> None:
    # Changes are not signed: accepting the bike's actor from the app would let the app forge the bike.
    bike = open_replica()
    app = open_replica("app", role=Role.APP)
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    bike.start_ride(RIDE)
    ref = shared_ref(RIDE)
    assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    bike.edit_shared(RIDE, "notes", "from the bike")
    app.ensure_doc(ref)
    app.merge_remote(ref.doc_id, bike.doc(ref.doc_id))
    result = push(app.doc(ref.doc_id), backend, ref, "app-1", Role.APP)
    assert not result.accepted and "belongs to bike bike-1" in result.reason
    # The bike itself delivers it.
    assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    assert backend.view(RIDE).shared == {"notes": "from the bike"}


def test_after_finalize_only_the_backend_writes(open_replica: Open) -> None:
    """Finalized: the bike's own document is frozen, and so are the shared targets (title, notes and
    rating stay editable: test below)."""
    bike = open_replica()
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(5)])
    bike.end_ride(RIDE)
    for ref in bike.ride_refs(RIDE):
        assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    view = backend.finalize(RIDE)
    bike.edit_shared(RIDE, "target.power_w", 250)
    ref = shared_ref(RIDE)
    before = backend.heads(ref.doc_id)
    result = push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE)
    assert not result.accepted and "is finalized; only notes, rating, title stay editable" in result.reason
    assert backend.heads(ref.doc_id) == before
    assert backend.view(RIDE).to_json() == view.to_json()
    own = own_ref(RIDE, "bike-1", Role.BIKE)
    assert own is not None
    bike.append_samples(RIDE, [make_sample(5)])
    bike.fold(RIDE)
    result = push(bike.doc(own.doc_id), backend, own, "bike-1", Role.BIKE)
    assert not result.accepted and "in phase finalized" in result.reason


def test_after_finalize_title_notes_and_rating_stay_editable(open_replica: Open) -> None:
    bike = open_replica()
    app = open_replica("app", role=Role.APP)
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(5)])
    bike.end_ride(RIDE)
    for ref in bike.ride_refs(RIDE):
        assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    final = backend.finalize(RIDE)
    ref = shared_ref(RIDE)
    app.ensure_doc(ref)
    app.merge_remote(ref.doc_id, backend.doc(ref.doc_id))
    app.edit_shared(RIDE, "title", "Hill climb")
    app.edit_shared(RIDE, "rating", 4)
    assert push(app.doc(ref.doc_id), backend, ref, "app-1", Role.APP).accepted
    bike.edit_shared(RIDE, "notes", "legs heavy")
    assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    view = backend.view(RIDE)
    assert view.shared == {"title": "Hill climb", "rating": 4, "notes": "legs heavy"}
    # The official result is untouched: still finalized, the same totals and samples.
    assert view.phase.label == "finalized" and view.totals == final.totals and view.samples == final.samples


def test_garbage_sync_bytes_change_nothing(open_replica: Open) -> None:
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    ref = shared_ref(RIDE)
    backend.ensure_doc(ref)
    before = backend.heads(ref.doc_id)
    with pytest.raises(CrdtDecodeError):
        backend.gated_sync(ref.doc_id).receive(b"\x42\x00garbage", device="x", role=Role.APP)
    assert backend.heads(ref.doc_id) == before


def test_device_side_sync_persists_before_returning(open_replica: Open) -> None:
    bike = open_replica()
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(5)])
    bike.end_ride(RIDE)
    for ref in bike.ride_refs(RIDE):
        assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    backend.finalize(RIDE)
    for ref in backend.ride_refs(RIDE):
        bike.ensure_doc(ref)
        mine, gated = SyncSession(), backend.gated_sync(ref.doc_id)
        for _ in range(20):
            msg = gated.generate()
            if msg is not None:
                bike.receive_sync(ref.doc_id, mine, msg)
            reply = bike.generate_sync(ref.doc_id, mine)
            if reply is not None:
                assert gated.receive(reply, device="bike-1", role=Role.BIKE).accepted
            if msg is None and reply is None:
                break
    bike.close()  # no explicit persist: receive_sync already made it durable
    again = open_replica()
    view = again.ride_json(RIDE)
    assert view["phase"] == "finalized" and view["authority"] == "backend"
    assert view["sync"]["state"] == "syncing" and view["samples"] == {"bike-1": 5}


def test_js_counters_are_refused_before_anyone_reads_them(open_replica: Open) -> None:
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    ref = shared_ref(RIDE)
    client = CrdtDoc.load(JS_COUNTER_DOC, new_actor_id("js-app"))
    result = push(client, backend, ref, "app-js", Role.APP)
    assert not result.accepted and "counters are not allowed" in result.reason
    assert backend.doc(ref.doc_id).keys() == []
    assert backend.view(RIDE).phase.label == "pending"  # the replica still reads its documents
