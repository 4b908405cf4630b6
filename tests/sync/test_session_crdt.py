"""ServerSession with real Automerge documents (engine/crdt.py): clients that edit concurrently and sync
through their sessions in any interleaving all converge to the server's state."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crdt import CrdtDoc, SyncSession, new_actor_id
from engine.sync import effects as fx
from engine.sync import server_session as s
from engine.sync import wire
from engine.sync.docid import new_document_id
from tests.support.server_harness import CrdtProvider, Hub

SERVER = "server"
DOC = new_document_id()


@dataclass
class Client:
    name: str
    doc: CrdtDoc
    session: s.ServerSession
    sync: SyncSession = field(default_factory=SyncSession)
    inbox: deque[bytes] = field(default_factory=deque)
    requested: bool = False


def setup(n_clients: int) -> tuple[Hub, list[Client]]:
    hub = Hub()
    server_doc = CrdtDoc.new(new_actor_id("backend"))
    server_doc.put({"title": "ride"})
    hub.docs[DOC] = server_doc
    clients: list[Client] = []
    for i in range(n_clients):
        session = s.ServerSession(server_peer_id=SERVER, provider=CrdtProvider(hub))
        client = Client(f"c{i}", CrdtDoc.new(new_actor_id(f"dev{i}")), session)
        route(clients, client, session.receive(wire.encode(wire.Join(client.name))))
        clients.append(client)
    return hub, clients


def route(clients: list[Client], target: Client, effects: list[s.Effect]) -> None:
    for effect in effects:
        match effect:
            case fx.Send(frame):
                target.inbox.append(frame)
            case s.DocumentChanged(doc_id):
                for other in clients:
                    if other is not target:
                        route(clients, other, other.session.document_changed(doc_id))
            case fx.Close(_, reason):
                raise AssertionError(f"session closed: {reason}")


def step(clients: list[Client], client: Client) -> bool:
    """Deliver the client's inbox, then send its next sync message. True if anything happened."""
    busy = False
    while client.inbox:
        busy = True
        message = wire.decode(client.inbox.popleft())
        if isinstance(message, wire.Sync):
            client.sync.receive(client.doc, message.data)
    data = client.sync.generate(client.doc)
    if data is not None:
        busy = True
        cls = wire.Sync if client.requested else wire.Request
        client.requested = True
        route(clients, client, client.session.receive(wire.encode(cls(client.name, SERVER, DOC, data))))
    return busy


def settle(clients: list[Client]) -> None:
    for _ in range(500):
        if not any([step(clients, c) for c in clients]):
            return
    raise AssertionError("sync did not quiesce")


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("edit"), st.integers(0, 2), st.sampled_from(["a", "b", "note"]), st.integers(0, 99)
        ),
        st.tuples(st.just("server_edit"), st.just(0), st.sampled_from(["a", "official"]), st.integers(0, 99)),
        st.tuples(st.just("step"), st.integers(0, 2), st.just(""), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=40)
@given(ops)
def test_clients_converge_in_any_interleaving(operations: list[tuple[str, int, str, int]]) -> None:
    hub, clients = setup(3)
    for kind, who, key, value in operations:
        if kind == "edit":
            clients[who].doc.put({key: value})
        elif kind == "server_edit":
            hub.docs[DOC].put({key: value})
            for c in clients:
                route(clients, c, c.session.document_changed(DOC))
        else:
            step(clients, clients[who])
    settle(clients)
    server = hub.docs[DOC]
    for c in clients:
        assert c.doc.heads() == server.heads()
        assert c.doc.items() == server.items()
    assert server.get("title") == "ride"
