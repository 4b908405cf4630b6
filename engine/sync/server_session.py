"""The server side of one automerge-repo WebSocket connection, as a sans-I/O state machine.

The adapter (aiohttp) feeds each binary frame to `ServerSession.receive` and carries out the effects it
returns, in order: `Send` a frame, `Close` the socket, and tell the rest of the server that a document
changed (`DocumentChanged`) or that ephemeral data arrived (`EphemeralReceived`). When another connection
changes a document, the adapter calls `document_changed` on every other session to push the change.

States: AWAITING_JOIN → JOINED → CLOSED. Anything unexpected closes the connection with a reason; a
closed session ignores further input. The server never creates documents on a client's say-so: a
document the provider does not know (or will not admit exists to this peer) gets `doc-unavailable`.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Final, Protocol

from engine.sync import wire
from engine.sync.effects import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    Close,
    Joined,
    Send,
    message_kind,
)
from engine.wire_error import WireError

log = logging.getLogger(__name__)

DEFAULT_MAX_OPEN_DOCUMENTS: Final = 1024


@dataclass(frozen=True, slots=True)
class Applied:
    """The sync message was accepted; `changed` says whether it brought new changes."""

    changed: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """The sync message was refused (actor gate, read-only phase, malformed sync data, too many queued
    changes). Nothing changed; the connection is closed with `reason` and `code`."""

    reason: str
    code: int = CLOSE_POLICY_VIOLATION


SyncOutcome = Applied | Rejected


class DocumentProvider(Protocol):
    """The documents one connection may see. Create one per connection: it holds this connection's
    Automerge sync states, which must start fresh for every connection
    (docs/architecture.md#automerge-hazards), and it knows which
    device is on the other end, so it can gate writes."""

    def is_known(self, doc_id: str) -> bool:
        """True if the document exists and this peer may read it. Say False rather than reveal a
        document the peer may not see."""
        ...

    def open(self, doc_id: str) -> None:
        """Start syncing `doc_id` on this connection (a fresh sync state)."""
        ...

    def receive_sync(self, doc_id: str, data: bytes) -> SyncOutcome:
        """Apply one Automerge sync message from the peer, gated; must change nothing when rejecting."""
        ...

    def generate_sync(self, doc_id: str) -> bytes | None:
        """The next sync message to send the peer for `doc_id`, or None if it is up to date."""
        ...


class SessionState(enum.Enum):
    AWAITING_JOIN = "awaiting_join"
    JOINED = "joined"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class DocumentChanged:
    """The peer's sync message changed `doc_id`: push to the other sessions that have it open."""

    doc_id: str


@dataclass(frozen=True, slots=True)
class EphemeralReceived:
    message: wire.Ephemeral


Effect = Send | Close | Joined | DocumentChanged | EphemeralReceived


class ServerSession:
    def __init__(
        self,
        *,
        server_peer_id: str,
        provider: DocumentProvider,
        peer_metadata: wire.PeerMetadata | None = None,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        max_open_documents: int = DEFAULT_MAX_OPEN_DOCUMENTS,
    ) -> None:
        wire.Peer(server_peer_id, "x")  # validates the id the same way a peer would
        self.server_peer_id = server_peer_id
        self.provider = provider
        # No storageId by default: a stock client then keeps no sync state for us across connections,
        # matching our fresh-per-connection sync states.
        self.peer_metadata = peer_metadata if peer_metadata is not None else wire.PeerMetadata()
        self.max_message_bytes = max_message_bytes
        self.max_open_documents = max_open_documents
        self.state = SessionState.AWAITING_JOIN
        self.peer_id: str | None = None
        self.close_reason: str | None = None
        self._open: set[str] = set()

    @property
    def open_documents(self) -> frozenset[str]:
        return frozenset(self._open)

    # ---- inputs -----------------------------------------------------------------------------------------

    def receive(self, frame: bytes) -> list[Effect]:
        """One binary WebSocket frame from the peer."""
        if self.state is SessionState.CLOSED:
            return []
        try:
            message = wire.decode(frame, max_size=self.max_message_bytes)
        except WireError as exc:
            return self.fail(f"invalid message: {exc}", exc.close_code)
        if self.state is SessionState.AWAITING_JOIN:
            return self._handle_first(message)
        return self._handle_joined(message)

    def document_changed(self, doc_id: str) -> list[Effect]:
        """Another connection (or the server itself) changed `doc_id`; sync it to this peer if open."""
        if self.state is not SessionState.JOINED or doc_id not in self._open:
            return []
        return self._generate(doc_id)

    def fail(self, reason: str, code: int = CLOSE_PROTOCOL_ERROR) -> list[Effect]:
        """Close the connection with `reason`: an `error` message first when the peer is known (stock
        clients log it), then the close. Also for adapter-level problems such as a text frame."""
        if self.state is SessionState.CLOSED:
            return []
        effects: list[Effect] = []
        if self.peer_id is not None:
            error = wire.Error(self.server_peer_id, self.peer_id, reason[: wire.MAX_ERROR_MESSAGE_CHARS])
            effects.append(Send(wire.encode(error)))
        # The adapter logs the close it carries out (once, with who the peer is).
        log.debug(
            "sync session failing", extra={"peer_id": self.peer_id, "reason": reason, "close_code": code}
        )
        return [*effects, *self._close(code, reason)]

    # ---- handlers ---------------------------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> list[Effect]:
        self.state = SessionState.CLOSED
        self.close_reason = reason
        self._open.clear()
        return [Close.truncated(code, reason)]

    def _handle_first(self, message: wire.Message) -> list[Effect]:
        if not isinstance(message, wire.Join):
            return self.fail(f"expected join, got {message_kind(message)}")
        versions = message.supported_protocol_versions
        # automerge-repo's server treats a join without versions as protocol 1.
        if versions is not None and wire.PROTOCOL_V1 not in versions:
            self.peer_id = message.sender_id
            return self.fail("unsupported protocol version")
        self.peer_id = message.sender_id
        self.state = SessionState.JOINED
        return [Joined(message.sender_id, message.peer_metadata), self._peer_message()]

    def _peer_message(self) -> Send:
        assert self.peer_id is not None
        return Send(wire.encode(wire.Peer(self.server_peer_id, self.peer_id, self.peer_metadata)))

    def _handle_joined(self, message: wire.Message) -> list[Effect]:
        assert self.peer_id is not None
        sender = getattr(message, "sender_id", None)
        if sender is not None and sender != self.peer_id:
            return self.fail(f"senderId {sender!r} is not the joined peer")
        target = getattr(message, "target_id", None)
        if (
            target is not None
            and not isinstance(message, wire.UnknownMessage)
            and target != self.server_peer_id
        ):
            return self.fail(f"targetId {target!r} is not this server")
        match message:
            case wire.Join():
                # The stock client may repeat its join on the same socket; answer it again.
                return [self._peer_message()]
            case wire.Request() | wire.Sync():
                return self._handle_sync(message.document_id, message.data)
            case wire.Leave():
                return self._close(CLOSE_NORMAL, "peer left")
            case wire.Error():
                return self._close(CLOSE_NORMAL, f"peer error: {message.message}")
            case wire.Ephemeral():
                if message.document_id not in self._open:
                    return []
                return [EphemeralReceived(message)]
            case wire.DocUnavailable() | wire.RemoteSubscriptionChange() | wire.RemoteHeadsChanged():
                # Nothing to do: we only serve documents we hold and offer no remote-heads subscriptions.
                return []
            case wire.UnknownMessage():
                log.debug("ignoring unknown message type", extra={"type": message.type})
                return []
            case wire.Peer():
                return self.fail("a client does not send peer")
        return self.fail(f"unexpected {message_kind(message)}")

    def _handle_sync(self, doc_id: str, data: bytes) -> list[Effect]:
        assert self.peer_id is not None
        try:
            if doc_id in self._open and not self.provider.is_known(doc_id):
                # The document went away while open here (a retired live segment): as if never opened.
                self._open.discard(doc_id)
            if doc_id not in self._open:
                if not self.provider.is_known(doc_id):
                    unavailable = wire.DocUnavailable(self.server_peer_id, self.peer_id, doc_id)
                    return [Send(wire.encode(unavailable))]
                if len(self._open) >= self.max_open_documents:
                    return self.fail(f"more than {self.max_open_documents} documents on one connection")
                self.provider.open(doc_id)
                self._open.add(doc_id)
            outcome = self.provider.receive_sync(doc_id, data)
        except Exception:
            log.exception("document provider failed", extra={"doc_id": doc_id, "peer_id": self.peer_id})
            return self.fail("internal error", CLOSE_INTERNAL_ERROR)
        if isinstance(outcome, Rejected):
            return self.fail(f"sync rejected for {doc_id}: {outcome.reason}", outcome.code)
        effects: list[Effect] = [DocumentChanged(doc_id)] if outcome.changed else []
        return [*effects, *self._generate(doc_id)]

    def _generate(self, doc_id: str) -> list[Effect]:
        assert self.peer_id is not None
        try:
            data = self.provider.generate_sync(doc_id)
        except Exception:
            log.exception("document provider failed", extra={"doc_id": doc_id, "peer_id": self.peer_id})
            return self.fail("internal error", CLOSE_INTERNAL_ERROR)
        if not data:
            return []
        return [
            Send(wire.encode(wire.Sync(self.server_peer_id, self.peer_id, doc_id, data)), carries_state=True)
        ]
