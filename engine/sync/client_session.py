"""The client side of one automerge-repo WebSocket connection, as a sans-I/O state machine.

The adapter (engine/device/connection.py) sends what `connect()` returns, feeds every binary frame to
`receive`, calls `open_documents` once joined and `local_change` when this replica changed a document,
and carries out the effects in order. Documents come through a `ClientDocuments` provider, which holds
this connection's Automerge sync states (fresh per connection, docs/architecture.md#automerge-hazards) and
persists whatever it
receives before returning.

Acknowledgement: every sync message from the server starts with the server's heads at the time it wrote
the message (engine/sync/syncmsg.py). Since the server persists a sync message before it answers it,
heads that cover all of ours mean the backend durably holds everything we have: that, and nothing weaker,
is an `Acknowledged` effect.

States: CONNECTING → AWAITING_PEER → JOINED → CLOSED. Anything unexpected closes with a reason; a closed
session ignores further input.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.crdt import CrdtDecodeError
from engine.sync import wire
from engine.sync.effects import CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, Close, Joined, Send, message_kind
from engine.sync.syncmsg import SyncMessageError, announced_heads
from engine.wire_error import WireError

log = logging.getLogger(__name__)


class ClientDocuments(Protocol):
    """The documents this connection syncs, addressed by automerge-repo document id (bs58check)."""

    def has(self, doc_id: str) -> bool: ...

    def open(self, doc_id: str) -> None:
        """Start syncing `doc_id` on this connection with a fresh sync state."""
        ...

    def forget(self, doc_id: str) -> None:
        """Drop `doc_id`'s sync state on this connection."""
        ...

    def is_empty(self, doc_id: str) -> bool: ...

    def generate(self, doc_id: str) -> bytes | None: ...

    def receive(self, doc_id: str, data: bytes) -> bool:
        """Apply a sync message and persist it before returning; True if it brought new changes.
        Raises ValueError or CrdtDecodeError for bytes that are not a sync message."""
        ...

    def covers(self, doc_id: str, their_heads: Sequence[bytes]) -> bool:
        """True if a peer at `their_heads` holds every change this replica has."""
        ...

    def heads(self, doc_id: str) -> list[bytes]: ...


class ClientState(enum.Enum):
    CONNECTING = "connecting"
    AWAITING_PEER = "awaiting_peer"
    JOINED = "joined"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The server holds every change we have of `doc_id`, as of our `heads`."""

    doc_id: str
    heads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Changed:
    """The server sent changes we did not have (already persisted)."""

    doc_id: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    doc_id: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """The server sent `error` (it closes the connection next); e.g. the actor gate refused a change."""

    message: str


Effect = Send | Close | Joined | Acknowledged | Changed | Unavailable | ServerError


class ClientSession:
    def __init__(
        self,
        *,
        peer_id: str,
        documents: ClientDocuments,
        peer_metadata: wire.PeerMetadata | None = None,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        wire.Join(peer_id)  # validates the id
        self.peer_id = peer_id
        self.documents = documents
        # Ephemeral: the server keeps no sync state for us across connections, as we keep none for it.
        self.peer_metadata = (
            peer_metadata if peer_metadata is not None else wire.PeerMetadata(is_ephemeral=True)
        )
        self.max_message_bytes = max_message_bytes
        self.state = ClientState.CONNECTING
        self.server_peer_id: str | None = None
        self.close_reason: str | None = None
        self._open: set[str] = set()
        self._unavailable: set[str] = set()

    @property
    def opened(self) -> frozenset[str]:
        return frozenset(self._open)

    # ---- inputs -----------------------------------------------------------------------------------------

    def connect(self) -> list[Effect]:
        """The socket is open: say who we are."""
        if self.state is not ClientState.CONNECTING:
            return []
        self.state = ClientState.AWAITING_PEER
        return [Send(wire.encode(wire.Join(self.peer_id, self.peer_metadata)))]

    def open_documents(self, doc_ids: Iterable[str]) -> list[Effect]:
        """Start syncing these documents (those already open are skipped)."""
        if self.state is not ClientState.JOINED:
            return []
        effects: list[Effect] = []
        for doc_id in doc_ids:
            if doc_id in self._open:
                continue
            self.documents.open(doc_id)
            self._open.add(doc_id)
            effects += self._generate(doc_id, first=True)
        return effects

    def forget(self, doc_id: str) -> None:
        """Stop syncing `doc_id` on this connection (the replica dropped it, e.g. a retired live segment):
        a later message about it is answered `doc-unavailable`, as for any document not tracked here."""
        self._open.discard(doc_id)
        self.documents.forget(doc_id)

    def local_change(self, doc_id: str) -> list[Effect]:
        """This replica changed `doc_id`: offer the change if the document is open here."""
        if self.state is not ClientState.JOINED or doc_id not in self._open:
            return []
        return self._generate(doc_id)

    def receive(self, frame: bytes) -> list[Effect]:
        if self.state is ClientState.CLOSED:
            return []
        try:
            message = wire.decode(frame, max_size=self.max_message_bytes)
        except WireError as exc:
            return self.fail(f"invalid message from server: {exc}")
        if self.state is ClientState.CONNECTING:
            return self.fail("server spoke before we joined")
        if self.state is ClientState.AWAITING_PEER:
            return self._handle_first(message)
        return self._handle_joined(message)

    def fail(self, reason: str, code: int = CLOSE_PROTOCOL_ERROR) -> list[Effect]:
        if self.state is ClientState.CLOSED:
            return []
        effects: list[Effect] = []
        if self.server_peer_id is not None:
            error = wire.Error(self.peer_id, self.server_peer_id, reason[: wire.MAX_ERROR_MESSAGE_CHARS])
            effects.append(Send(wire.encode(error)))
        return [*effects, *self._close(code, reason)]

    # ---- handlers ---------------------------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> list[Effect]:
        self.state = ClientState.CLOSED
        self.close_reason = reason
        self._open.clear()
        return [Close.truncated(code, reason)]

    def _handle_first(self, message: wire.Message) -> list[Effect]:
        match message:
            case wire.Peer():
                if message.target_id != self.peer_id:
                    return self.fail(f"peer message addressed to {message.target_id!r}")
                if message.selected_protocol_version != wire.PROTOCOL_V1:
                    return self.fail(f"unsupported protocol version {message.selected_protocol_version!r}")
                self.server_peer_id = message.sender_id
                self.state = ClientState.JOINED
                return [Joined(message.sender_id, message.peer_metadata)]
            case wire.Error():
                return [
                    ServerError(message.message),
                    *self._close(CLOSE_NORMAL, f"server: {message.message}"),
                ]
        return self.fail(f"expected peer, got {message_kind(message)}")

    def _handle_joined(self, message: wire.Message) -> list[Effect]:
        sender = getattr(message, "sender_id", None)
        if sender is not None and sender != self.server_peer_id:
            return self.fail(f"senderId {sender!r} is not the server we joined")
        target = getattr(message, "target_id", None)
        if target is not None and not isinstance(message, wire.UnknownMessage) and target != self.peer_id:
            return self.fail(f"targetId {target!r} is not us")
        match message:
            case wire.Sync() | wire.Request():
                return self._handle_sync(message.document_id, message.data)
            case wire.DocUnavailable():
                self._unavailable.add(message.document_id)
                return [Unavailable(message.document_id)]
            case wire.Error():
                return [
                    ServerError(message.message),
                    *self._close(CLOSE_NORMAL, f"server: {message.message}"),
                ]
            case wire.Leave():
                return self._close(CLOSE_NORMAL, "server left")
            case wire.Peer() | wire.Ephemeral() | wire.RemoteSubscriptionChange() | wire.RemoteHeadsChanged():
                return []  # a repeated peer answer, or features this client does not use
            case wire.UnknownMessage():
                log.debug("ignoring unknown message type", extra={"type": message.type})
                return []
            case wire.Join():
                return self.fail("a server does not send join")
        return self.fail(f"unexpected {message_kind(message)}")

    def _handle_sync(self, doc_id: str, data: bytes) -> list[Effect]:
        assert self.server_peer_id is not None
        if doc_id not in self._open:
            if not self.documents.has(doc_id):
                # The server offers a document this replica does not track: say so, as a stock peer would.
                return [Send(wire.encode(wire.DocUnavailable(self.peer_id, self.server_peer_id, doc_id)))]
            self.documents.open(doc_id)
            self._open.add(doc_id)
        try:
            their_heads = announced_heads(data)
            changed = self.documents.receive(doc_id, data)
        # CrdtDecodeError is not a ValueError: bytes whose header parses (b"\x42\x00") can still fail
        # Automerge's own decoding, and that too is the peer's protocol error, never this replica's crash.
        except (SyncMessageError, ValueError, CrdtDecodeError) as exc:
            return self.fail(f"bad sync message for {doc_id}: {exc}")
        self._unavailable.discard(doc_id)
        effects: list[Effect] = [Changed(doc_id)] if changed else []
        if self.documents.covers(doc_id, their_heads):
            effects.append(Acknowledged(doc_id, tuple(self.documents.heads(doc_id))))
        return [*effects, *self._generate(doc_id)]

    def _generate(self, doc_id: str, first: bool = False) -> list[Effect]:
        assert self.server_peer_id is not None
        data = self.documents.generate(doc_id)
        if not data:
            return []
        message: wire.Message
        if first and self.documents.is_empty(doc_id):
            # automerge-repo asks for a document it lacks with `request`, so a stock server answers
            # doc-unavailable instead of creating it.
            message = wire.Request(self.peer_id, self.server_peer_id, doc_id, data)
        else:
            message = wire.Sync(self.peer_id, self.server_peer_id, doc_id, data)
        return [Send(wire.encode(message))]
