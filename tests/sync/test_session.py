from __future__ import annotations

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from engine.sync import effects as fx
from engine.sync import server_session as s
from engine.sync import wire
from engine.sync.docid import new_document_id
from tests.sync.fake_provider import FakeProvider, Store
from tests.sync.strategies import messages

SERVER = "server-1"
CLIENT = "client-1"
DOC = new_document_id()
OTHER_DOC = new_document_id()


def make(
    store: Store | None = None,
    *,
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
    max_open_documents: int = s.DEFAULT_MAX_OPEN_DOCUMENTS,
) -> tuple[s.ServerSession, FakeProvider, Store]:
    store = store if store is not None else Store({DOC: {"a1", "a2"}})
    provider = FakeProvider(store)
    session = s.ServerSession(
        server_peer_id=SERVER,
        provider=provider,
        max_message_bytes=max_message_bytes,
        max_open_documents=max_open_documents,
    )
    return session, provider, store


def join(session: s.ServerSession, peer: str = CLIENT) -> list[s.Effect]:
    return session.receive(wire.encode(wire.Join(peer)))


def sent(effects: list[s.Effect]) -> list[wire.Message]:
    return [wire.decode(e.frame) for e in effects if isinstance(e, fx.Send)]


def closes(effects: list[s.Effect]) -> list[fx.Close]:
    return [e for e in effects if isinstance(e, fx.Close)]


def test_join_is_answered_with_peer() -> None:
    session, _, _ = make()
    effects = join(session)
    assert effects[0] == fx.Joined(CLIENT, wire.PeerMetadata())
    assert sent(effects) == [wire.Peer(SERVER, CLIENT, wire.PeerMetadata(), "1")]
    assert session.state is s.SessionState.JOINED
    assert session.peer_id == CLIENT


def test_join_without_versions_means_v1() -> None:
    session, _, _ = make()
    effects = session.receive(cbor2.dumps({"type": "join", "senderId": CLIENT, "peerMetadata": {}}))
    assert session.state is s.SessionState.JOINED
    assert isinstance(sent(effects)[0], wire.Peer)


def test_unsupported_version_gets_error_then_close() -> None:
    session, _, _ = make()
    effects = session.receive(wire.encode(wire.Join(CLIENT, wire.PeerMetadata(), ("2",))))
    assert sent(effects) == [wire.Error(SERVER, CLIENT, "unsupported protocol version")]
    assert effects[-1] == fx.Close(fx.CLOSE_PROTOCOL_ERROR, "unsupported protocol version")
    assert session.state is s.SessionState.CLOSED


def test_anything_before_join_closes_without_error_frame() -> None:
    session, _, store = make()
    effects = session.receive(wire.encode(wire.Sync(CLIENT, SERVER, DOC, b"evil")))
    assert effects == [fx.Close(fx.CLOSE_PROTOCOL_ERROR, "expected join, got sync")]
    assert session.receive(wire.encode(wire.Join(CLIENT))) == []
    assert store.docs[DOC] == {"a1", "a2"}


def test_garbage_before_join() -> None:
    session, _, _ = make()
    effects = session.receive(b"\xff\x00garbage")
    assert len(effects) == 1
    assert closes(effects)[0].code == fx.CLOSE_PROTOCOL_ERROR
    assert "not_cbor" in closes(effects)[0].reason


def test_request_for_known_document_syncs_both_ways() -> None:
    session, _, store = make()
    join(session)
    effects = session.receive(wire.encode(wire.Request(CLIENT, SERVER, DOC, b"c1")))
    assert s.DocumentChanged(DOC) in effects
    assert sent(effects) == [wire.Sync(SERVER, CLIENT, DOC, b"a1,a2")]
    assert store.docs[DOC] == {"a1", "a2", "c1"}
    assert session.open_documents == {DOC}
    # Up to date now: a repeat brings nothing new and needs no answer.
    assert session.receive(wire.encode(wire.Sync(CLIENT, SERVER, DOC, b"c1"))) == []


def test_unknown_document_is_unavailable_and_session_survives() -> None:
    session, _, store = make()
    join(session)
    effects = session.receive(wire.encode(wire.Request(CLIENT, SERVER, OTHER_DOC, b"x")))
    assert sent(effects) == [wire.DocUnavailable(SERVER, CLIENT, OTHER_DOC)]
    assert OTHER_DOC not in store.docs
    assert session.state is s.SessionState.JOINED
    assert session.open_documents == frozenset()


def test_rejected_sync_closes_and_changes_nothing() -> None:
    session, _, store = make()
    join(session)
    effects = session.receive(wire.encode(wire.Sync(CLIENT, SERVER, DOC, b"c1,evil2")))
    [error] = sent(effects)
    assert isinstance(error, wire.Error)
    assert "actor not allowed" in error.message
    assert effects[-1].__class__ is fx.Close
    assert closes(effects)[0].code == fx.CLOSE_POLICY_VIOLATION
    assert store.docs[DOC] == {"a1", "a2"}
    assert session.document_changed(DOC) == []


def test_garbage_after_join_sends_error_and_closes() -> None:
    session, _, _ = make()
    join(session)
    effects = session.receive(cbor2.dumps({"type": "sync", "senderId": CLIENT}))
    [error] = sent(effects)
    assert isinstance(error, wire.Error)
    assert "missing_field" in error.message
    assert closes(effects)[0].code == fx.CLOSE_PROTOCOL_ERROR


def test_oversize_frame_closes_with_1009() -> None:
    session, _, _ = make(max_message_bytes=100)
    join(session)
    effects = session.receive(wire.encode(wire.Sync(CLIENT, SERVER, DOC, b"x" * 200)))
    assert closes(effects)[0].code == fx.CLOSE_TOO_BIG


def test_spoofed_sender_and_wrong_target_close() -> None:
    for message in (
        wire.Sync("someone-else", SERVER, DOC, b"c1"),
        wire.Sync(CLIENT, "another-server", DOC, b"c1"),
    ):
        session, _, store = make()
        join(session)
        effects = session.receive(wire.encode(message))
        assert closes(effects)[0].code == fx.CLOSE_PROTOCOL_ERROR
        assert store.docs[DOC] == {"a1", "a2"}


def test_repeated_join_is_answered_again_but_another_peer_id_is_not() -> None:
    session, _, _ = make()
    join(session)
    assert isinstance(sent(join(session))[0], wire.Peer)
    effects = join(session, "intruder")
    assert closes(effects)
    assert session.state is s.SessionState.CLOSED


def test_leave_and_peer_error_close_normally() -> None:
    session, _, _ = make()
    join(session)
    assert session.receive(wire.encode(wire.Leave(CLIENT))) == [fx.Close(fx.CLOSE_NORMAL, "peer left")]
    session, _, _ = make()
    join(session)
    effects = session.receive(wire.encode(wire.Error(CLIENT, SERVER, "bye")))
    assert effects == [fx.Close(fx.CLOSE_NORMAL, "peer error: bye")]


def test_provider_exception_is_an_internal_error_close() -> None:
    store = Store({DOC: set()})
    session = s.ServerSession(server_peer_id=SERVER, provider=FakeProvider(store, fail_on=DOC))
    join(session)
    effects = session.receive(wire.encode(wire.Sync(CLIENT, SERVER, DOC, b"c1")))
    assert sent(effects) == [wire.Error(SERVER, CLIENT, "internal error")]
    assert closes(effects)[0].code == fx.CLOSE_INTERNAL_ERROR


def test_too_many_open_documents() -> None:
    docs: dict[str, set[str]] = {new_document_id(): set() for _ in range(3)}
    session, _, _ = make(Store(docs), max_open_documents=2)
    join(session)
    results = [session.receive(wire.encode(wire.Sync(CLIENT, SERVER, d, b"c"))) for d in docs]
    assert not closes(results[0]) and not closes(results[1])
    assert closes(results[2])[0].code == fx.CLOSE_PROTOCOL_ERROR


def test_ephemeral_only_for_open_documents_and_others_ignored() -> None:
    session, _, _ = make()
    join(session)
    eph = wire.Ephemeral(CLIENT, SERVER, DOC, b"\xa0", 1, "sess")
    assert session.receive(wire.encode(eph)) == []
    session.receive(wire.encode(wire.Request(CLIENT, SERVER, DOC, b"c1")))
    assert session.receive(wire.encode(eph)) == [s.EphemeralReceived(eph)]
    assert session.receive(cbor2.dumps({"type": "future", "senderId": CLIENT})) == []
    assert session.receive(wire.encode(wire.DocUnavailable(CLIENT, SERVER, DOC))) == []
    assert session.state is s.SessionState.JOINED


def test_two_sessions_converge_through_document_changed() -> None:
    store = Store({DOC: {"base"}})
    bike = s.ServerSession(server_peer_id=SERVER, provider=FakeProvider(store))
    app = s.ServerSession(server_peer_id=SERVER, provider=FakeProvider(store))
    join(bike, "bike")
    join(app, "app")
    app_seen: set[str] = set()
    for effect in app.receive(wire.encode(wire.Request("app", SERVER, DOC, b"hello"))):
        if isinstance(effect, fx.Send):
            app_seen |= set(wire.decode(effect.frame).data.decode().split(","))  # type: ignore[union-attr]
    assert app_seen == {"base"}
    effects = bike.receive(wire.encode(wire.Sync("bike", SERVER, DOC, b"bike1,bike2")))
    changed = [e.doc_id for e in effects if isinstance(e, s.DocumentChanged)]
    assert changed == [DOC]
    pushed = sent(app.document_changed(DOC))
    assert pushed == [wire.Sync(SERVER, "app", DOC, b"bike1,bike2")]


@given(st.lists(messages.map(wire.encode) | st.binary(max_size=40), max_size=12))
def test_any_frame_sequence_keeps_invariants(frames: list[bytes]) -> None:
    session, _, store = make(Store({DOC: {"a"}}))
    closed = False
    for frame in frames:
        effects = session.receive(frame)
        if closed:
            assert effects == []
        if any(isinstance(e, fx.Close) for e in effects):
            assert isinstance(effects[-1], fx.Close)
            assert session.state is s.SessionState.CLOSED
            closed = True
        assert not any(c.startswith("evil") for c in store.docs[DOC])
