"""The sans-I/O client session against the real server session (engine/sync/server_session.py), frames passed
by hand; the client's documents live in a real ReplicaStore."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.crdt import CrdtDecodeError, CrdtDoc, SyncSession, new_actor_id
from engine.device.store_docs import StoreDocuments
from engine.ride.samples import Sample
from engine.ride.schema import Role
from engine.store import ReplicaStore
from engine.sync import client_session as cs
from engine.sync import effects as fx
from engine.sync import server_session as ss
from engine.sync import wire
from engine.sync.docid import document_id_from_hex
from engine.sync.syncmsg import SyncMessageError, announced_heads

SERVER = "test-server"


class ServerDocs:
    """The server's documents: those listed exist (empty until synced); others are unavailable."""

    def __init__(self, doc_ids: list[str]) -> None:
        self.docs = {d: CrdtDoc.new(new_actor_id("backend")) for d in doc_ids}
        self.sessions: dict[str, SyncSession] = {}

    def is_known(self, doc_id: str) -> bool:
        return doc_id in self.docs

    def open(self, doc_id: str) -> None:
        self.sessions[doc_id] = SyncSession()

    def receive_sync(self, doc_id: str, data: bytes) -> ss.SyncOutcome:
        before = self.docs[doc_id].heads()
        try:
            self.sessions[doc_id].receive(self.docs[doc_id], data)
        except CrdtDecodeError as exc:
            return ss.Rejected(str(exc))
        return ss.Applied(changed=self.docs[doc_id].heads() != before)

    def generate_sync(self, doc_id: str) -> bytes | None:
        return self.sessions[doc_id].generate(self.docs[doc_id])


def exchange(client: cs.ClientSession, server: ss.ServerSession, effects: list[cs.Effect]) -> list[cs.Effect]:
    """Deliver frames both ways until nobody has anything to say; returns every client effect."""
    seen: list[cs.Effect] = []
    pending = list(effects)
    while pending:
        effect = pending.pop(0)
        seen.append(effect)
        if isinstance(effect, fx.Send):
            for reply in server.receive(effect.frame):
                if isinstance(reply, fx.Send):
                    pending += client.receive(reply.frame)
    return seen


@pytest.fixture
def bike(tmp_path: Path) -> ReplicaStore:
    store = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    store.start_ride("r1")
    for seq in range(25):
        store.append_sample("r1", Sample(seq=seq, t=1000.0 + seq, hr=100 + seq % 7))
    store.fold("r1")
    return store


def wire_ids(store: ReplicaStore) -> list[str]:
    return [document_id_from_hex(r.doc_id) for r in store.ride_refs("r1")]


def joined_pair(
    store: ReplicaStore, known: list[str]
) -> tuple[cs.ClientSession, ss.ServerSession, ServerDocs]:
    docs = ServerDocs(known)
    server = ss.ServerSession(server_peer_id=SERVER, provider=docs)
    client = cs.ClientSession(peer_id="bike-1-peer", documents=StoreDocuments(store))
    effects = exchange(client, server, client.connect())
    assert any(isinstance(e, fx.Joined) and e.peer_id == SERVER for e in effects)
    assert client.state is cs.ClientState.JOINED
    return client, server, docs


def acks(effects: list[cs.Effect]) -> dict[str, tuple[bytes, ...]]:
    return {e.doc_id: e.heads for e in effects if isinstance(e, cs.Acknowledged)}


def test_acknowledged_only_once_the_server_holds_our_changes(bike: ReplicaStore) -> None:
    ids = wire_ids(bike)
    client, server, docs = joined_pair(bike, ids)
    opening = client.open_documents(ids)
    # Our first messages carry no changes; the server's first answers announce its empty heads.
    first_answers: list[cs.Effect] = []
    for effect in opening:
        assert isinstance(effect, fx.Send)
        for reply in server.receive(effect.frame):
            if isinstance(reply, fx.Send):
                first_answers += client.receive(reply.frame)
    assert acks(first_answers) == {}
    effects = exchange(client, server, [e for e in first_answers if isinstance(e, fx.Send)])
    acked = acks(effects)
    assert set(acked) == set(ids)
    for doc_id in ids:
        assert sorted(docs.docs[doc_id].heads()) == sorted(acked[doc_id])
        assert sorted(acked[doc_id]) == sorted(StoreDocuments(bike).heads(doc_id))


def test_a_local_change_is_offered_and_acknowledged(bike: ReplicaStore) -> None:
    ids = wire_ids(bike)
    client, server, docs = joined_pair(bike, ids)
    exchange(client, server, client.open_documents(ids))
    bike.append_sample("r1", Sample(seq=25, t=1025.0, hr=99))
    bike.fold("r1")
    own = next(document_id_from_hex(r.doc_id) for r in bike.ride_refs("r1") if r.kind.value == "bike")
    effects = exchange(client, server, client.local_change(own))
    acked = acks(effects)
    assert set(acked) == {own}
    assert sorted(acked[own]) == sorted(docs.docs[own].heads()) == sorted(StoreDocuments(bike).heads(own))


def test_a_document_the_server_lacks_is_unavailable(bike: ReplicaStore) -> None:
    ids = wire_ids(bike)
    client, server, _ = joined_pair(bike, ids[:1])
    effects = exchange(client, server, client.open_documents(ids))
    assert [e for e in effects if isinstance(e, cs.Unavailable)] == [cs.Unavailable(d) for d in ids[1:]]
    assert set(acks(effects)) == {ids[0]}


def test_server_error_closes_and_reports(bike: ReplicaStore) -> None:
    client, _, _ = joined_pair(bike, [])
    effects = client.receive(wire.encode(wire.Error(SERVER, "bike-1-peer", "sync rejected: not yours")))
    assert effects[0] == cs.ServerError("sync rejected: not yours")
    assert isinstance(effects[1], fx.Close)
    assert client.state is cs.ClientState.CLOSED
    assert client.receive(wire.encode(wire.Error(SERVER, "bike-1-peer", "again"))) == []


def test_garbage_and_impostors_close_the_connection(bike: ReplicaStore) -> None:
    client, _, _ = joined_pair(bike, [])
    effects = client.receive(b"\xff\x00garbage")
    assert isinstance(effects[-1], fx.Close) and effects[-1].code == fx.CLOSE_PROTOCOL_ERROR
    client2, _, _ = joined_pair(bike, [])
    doc_id = wire_ids(bike)[0]
    frame = wire.encode(wire.Sync("someone-else", "bike-1-peer", doc_id, b"\x42\x00"))
    assert isinstance(client2.receive(frame)[-1], fx.Close)


def test_the_server_must_answer_join_with_peer(bike: ReplicaStore) -> None:
    client = cs.ClientSession(peer_id="p", documents=StoreDocuments(bike))
    client.connect()
    doc_id = wire_ids(bike)[0]
    effects = client.receive(wire.encode(wire.Sync(SERVER, "p", doc_id, b"\x42\x00")))
    assert isinstance(effects[-1], fx.Close)
    assert "expected peer" in (client.close_reason or "")


@given(st.binary(max_size=300))
def test_hostile_frames_never_raise(tmp_path_factory: pytest.TempPathFactory, frame: bytes) -> None:
    store = ReplicaStore(tmp_path_factory.mktemp("fuzz"), device_id="bike-1", role=Role.BIKE)
    try:
        store.start_ride("r1")
        client, _, _ = joined_pair(store, [])
        heads = [store.heads(r.doc_id) for r in store.ride_refs("r1")]
        client.receive(frame)
        assert [store.heads(r.doc_id) for r in store.ride_refs("r1")] == heads
    finally:
        store.close()


@example(data=b"B\x00")  # a sync-message header Automerge itself then refuses (found by this test)
@given(st.binary(max_size=200))
def test_hostile_sync_data_never_changes_the_document(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    store = ReplicaStore(tmp_path_factory.mktemp("fuzz"), device_id="bike-1", role=Role.BIKE)
    try:
        store.start_ride("r1")
        ids = wire_ids(store)
        client, server, _ = joined_pair(store, ids)
        exchange(client, server, client.open_documents(ids))
        heads = [store.heads(r.doc_id) for r in store.ride_refs("r1")]
        if data:
            effects = client.receive(wire.encode(wire.Sync(SERVER, "bike-1-peer", ids[0], data)))
            assert (
                all(not isinstance(e, cs.Acknowledged) for e in effects)
                or client.state is cs.ClientState.JOINED
            )
        assert [store.heads(r.doc_id) for r in store.ride_refs("r1")] == heads
    finally:
        store.close()


def test_announced_heads_reads_real_messages() -> None:
    doc = CrdtDoc.new(new_actor_id("a"))
    doc.put({"x": 1})
    message = SyncSession().generate(doc)
    assert message is not None
    assert announced_heads(message) == tuple(doc.heads())
    assert announced_heads(b"\x42\x00") == ()


@given(st.binary(max_size=100))
def test_announced_heads_rejects_garbage_with_one_error(data: bytes) -> None:
    try:
        heads = announced_heads(data)
    except SyncMessageError:
        return
    assert all(len(h) == 32 for h in heads)
    assert data[0] in (0x42, 0x43)


@pytest.mark.parametrize("data", [b"", b"\x41\x00", b"\x42", b"\x42\x01" + b"\x00" * 31, b"\x42\xff\xff\xff"])
def test_announced_heads_errors(data: bytes) -> None:
    with pytest.raises(SyncMessageError):
        announced_heads(data)
