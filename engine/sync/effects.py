"""What a session asks its adapter to do, shared by both ends of an automerge-repo connection.

A session (server or client) returns a list of effects; the adapter carries them out in order. The ones
both ends use live here, with the WebSocket close codes they carry; each session adds its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from engine import wire_error
from engine.sync import wire

# WebSocket close codes (RFC 6455 §7.4.1); the two a malformed message gets are the wire error's.
CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = wire_error.CLOSE_PROTOCOL_ERROR
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_TOO_BIG: Final = wire_error.CLOSE_TOO_BIG
CLOSE_INTERNAL_ERROR: Final = 1011
# Application codes (4000-4999), each mirroring the HTTP status a request would get.
CLOSE_TOKEN_EXPIRED: Final = 4401  # as the live hub (engine/live/wire.py)
CLOSE_BACKLOG: Final = 4413  # too many changes queued unapplied, waiting for a missing dependency

# RFC 6455 limits a close reason to 123 bytes.
MAX_CLOSE_REASON_BYTES: Final = 123


@dataclass(frozen=True, slots=True)
class Send:
    frame: bytes
    # True for a server's `sync` message: its heads tell the peer what the server holds, so an adapter
    # whose storage commits asynchronously must have committed before sending it (join/peer,
    # doc-unavailable and error frames carry no document state).
    carries_state: bool = False


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str

    @classmethod
    def truncated(cls, code: int, reason: str) -> Close:
        """A close whose reason is cut to what a WebSocket close frame can carry."""
        return cls(code, reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore"))


@dataclass(frozen=True, slots=True)
class Joined:
    """The handshake is done: `peer_id` is the other end's (the client's on a server, the server's on a
    client), with the metadata it announced."""

    peer_id: str
    metadata: wire.PeerMetadata


def message_kind(message: wire.Message) -> str:
    """How a message is named in a close reason."""
    return message.type if isinstance(message, wire.UnknownMessage) else type(message).__name__.lower()
