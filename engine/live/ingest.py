"""The receive side of a live connection: bytes from the socket to hub events, synchronously.

aiohttp's HTTP connection hands the bytes of an upgraded connection to a "payload parser" (`feed_data`,
`feed_eof`), the same seam its own WebSocketResponse uses. `Ingest` is that parser for the coalescing hub:
it parses the client's frames (engine/live/rfc6455.py) and the publisher's messages (engine/live/wire.py)
and applies them to the hub right there, inside the transport's data callback, with no task wake-up or
message object per sample. Every message already received is handled before the event loop moves on.

Security is unchanged from the message-per-task version: a malformed message or frame closes only this
connection (4400 with the reason, or the protocol's 1002/1009), a message naming another device or sent
on a subscribe-only connection closes it with 4403; nothing of a refused message is applied. Closing is
asked of the connection's handler (`Connection.request_close`), which owns the connection's lifetime.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from engine.live.connection import Connection
from engine.live.metrics import HubStats
from engine.live.rfc6455 import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientFrameParser,
    FrameError,
    parse_close,
)
from engine.live.wire import CLOSE_FORBIDDEN, InboundEvent, parse_inbound_batch
from engine.wire_error import WireError

log = logging.getLogger(__name__)


class IngestHub(Protocol):
    """What an `Ingest` applies messages to: a hub that takes an event synchronously (the coalescing hub)."""

    stats: HubStats

    def publish_now(self, class_id: str, event: InboundEvent) -> None: ...


class Ingest:
    def __init__(
        self, conn: Connection, hub: IngestHub, class_id: str, device: str, *, publishing: bool, max_msg: int
    ) -> None:
        self.conn = conn
        self.hub = hub
        self.class_id = class_id
        self.device = device
        self.publishing = publishing
        self.parser = ClientFrameParser(max_msg)
        self.failed = False  # a close was asked for: later messages are not applied
        self.broken = False  # the frame stream itself is bad: nothing after it can be parsed

    # --- aiohttp's payload-parser interface ---------------------------------------------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        conn = self.conn
        if self.broken:
            return False, b""
        try:
            frames = self.parser.feed(data)
        except FrameError as exc:
            self.broken = True
            self._refuse(exc.close_code, str(exc))
            return False, b""
        for op, payload in frames:
            if op in (OP_TEXT, OP_BINARY):
                # Liveness for the heartbeat: a message, or a pong (an answer proves the peer reads). Not its
                # own pings: a peer that floods pings and never reads must still be found out.
                conn.received = True
                if not self.failed:
                    self._message(payload)
            elif op == OP_CLOSE:
                try:
                    code = parse_close(payload)
                except FrameError:
                    code = 1002
                conn.peer_closed(code)
                break
            elif op == OP_PING:
                conn.pong(payload)
            elif op == OP_PONG:
                conn.received = True
        return False, b""

    def feed_eof(self) -> None:
        self.conn.peer_gone()

    # --- messages ------------------------------------------------------------------------------------------

    def _message(self, payload: bytes) -> None:
        hub = self.hub
        if not self.publishing:
            hub.stats.reject("subscribe_only")
            self._refuse(CLOSE_FORBIDDEN, "this connection may only subscribe", malformed=False)
            return
        try:
            events = parse_inbound_batch(payload, self.device, time.time())
        except WireError as exc:
            self._refuse(exc.close_code, str(exc))
            return
        publish, class_id = hub.publish_now, self.class_id
        for event in events:
            publish(class_id, event)

    def _refuse(self, code: int, reason: str, *, malformed: bool = True) -> None:
        if self.failed:
            return
        self.failed = True
        if malformed:
            self.hub.stats.malformed_closed += 1
            log.info("closing on bad message", extra={"device": self.device, "reason": reason})
        self.conn.request_close(code, reason)
