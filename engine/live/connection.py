"""One live connection as the hub sees it: a socket that speaks WebSocket itself (engine/live/rfc6455.py),
with the write-buffer rule every hub applies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct

from engine.live.config import HubConfig
from engine.live.rfc6455 import OP_PONG, close_frame, server_frame
from engine.live.tcp_progress import SendProgress, send_progress

# How long a Close frame of ours is given to reach the peer before the socket is aborted (a stalled peer
# may never read it). A peer the hub closes is gone within this of the decision.
CLOSE_GRACE_S = 2.0


class Connection:
    """One peer's socket as the hub sees it: can it take a frame now, write one, close with a reason.

    The connection speaks WebSocket itself: frames in are parsed by engine/live/ingest.py as they arrive,
    frames out are pre-framed bytes written to the socket.
    """

    # The routes' watchdog (heartbeat, write-buffer rule) looks after this connection. A hub whose sockets
    # are served by a WebSocket library with its own heartbeat (the benchmark's baseline) says False.
    watched = True

    def __init__(self, transport: asyncio.Transport, config: HubConfig) -> None:
        self.transport = transport
        self.device = ""  # the token's device, for logs
        self.buffer_limit = config.peer_buffer_limit
        self.buffer_max = config.peer_buffer_max
        # The one write-buffer rule for every connection and every frame (routes.watch_connections): more
        # than `buffer_limit` unsent bytes for longer than the stall limit, or more than `buffer_max` when
        # looked at, closes it with 4408. Loop time at which its unsent bytes last went over the limit.
        self.backed_up_since: float | None = None
        # The peer's acknowledged byte count when the watchdog last looked (tcp_progress.py): bytes queued
        # for a peer whose count stops moving are not being read, however few they are.
        self.acked_seen: int | None = None
        # A ping that arrived while the buffer was full: only the newest is answered (RFC 6455 §5.5.3),
        # once the peer reads again. Never a queue of pongs.
        self.pending_pong: bytes | None = None
        loop = asyncio.get_running_loop()
        # Resolved when the handler has something to do: the peer is gone, or a close was asked for.
        self.attention: asyncio.Future[None] = loop.create_future()
        # Resolved when the peer is gone: connection lost, or its Close frame answered.
        self.gone: asyncio.Future[None] = loop.create_future()
        self.close_request: tuple[int, str] | None = None
        # A Close frame went out: nothing may follow it (the fan-out checks this before every write).
        self.closing = False
        # Heartbeat bookkeeping (routes.py): a message or a pong received since the last look (never the
        # peer's own pings); a ping of ours outstanding.
        self.received = True
        self.last_heard = loop.time()
        self.ping_sent: float | None = None
        sock = transport.get_extra_info("socket")
        self.sock = sock
        # Fast path: with nothing buffered in the transport, send on the socket directly (what
        # transport.write would do, minus its Python overhead, which is a fifth of a frame's cost). Only on
        # plain TCP: under TLS the socket carries ciphertext and every byte must go through the transport.
        # (asyncio hands out a restricted socket wrapper; its fd is ours to write while the transport is open,
        # and `is_closing()` turns true before asyncio ever closes that fd, so a reused fd is never written.)
        self.fd = -1
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self.fd = sock.fileno()
        if isinstance(getattr(transport, "max_size", None), int):
            # asyncio's selector transport reads with recv(256 KiB): glibc serves a buffer that large with
            # a fresh mmap and unmaps it after the read, and the page faults made every received sample
            # cost ~20 us on this machine instead of ~6. Publishers send messages of a few hundred bytes.
            transport.max_size = config.read_chunk  # type: ignore[attr-defined]
        if sock is not None and config.peer_sndbuf > 0:
            # A small kernel send buffer keeps the bytes in flight to a stalled peer (which it will read as
            # a backlog when it resumes) small, and makes the stall visible to us quickly.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.peer_sndbuf)

    def send_progress(self) -> SendProgress | None:
        """What the kernel says of the bytes sent to this peer (None where it does not say)."""
        return send_progress(self.sock) if not self.transport.is_closing() else None

    def writable(self) -> bool:
        t = self.transport
        return not self.closing and not t.is_closing() and t.get_write_buffer_size() <= self.buffer_limit

    def write(self, wire: bytes) -> None:
        t = self.transport
        if self.closing or t.is_closing():
            return
        if self.fd >= 0 and not t.get_write_buffer_size():
            try:
                sent = os.write(self.fd, wire)
            except OSError:
                # Would block, or a dead peer: the transport buffers it or meets the error on its own terms.
                sent = 0
            if sent == len(wire):
                return
            wire = wire[sent:]
        t.write(wire)

    def send_control(self, frame: bytes) -> bool:
        """Write a control frame (ping, pong) only if it keeps the unsent bytes within the limit: a peer
        that does not read gets no more of them buffered. False when it was not written."""
        t = self.transport
        if self.closing or t.is_closing() or t.get_write_buffer_size() + len(frame) > self.buffer_limit:
            return False
        self.write(frame)
        return True

    def pong(self, payload: bytes) -> None:
        """Answer a ping: now if the peer is reading, else later (routes.watch_connections), newest only."""
        if self.send_control(server_frame(OP_PONG, payload)):
            self.pending_pong = None
        else:
            self.pending_pong = payload

    # --- ending (self-spoken WebSocket connections) -------------------------------------------------------

    def peer_gone(self) -> None:
        for fut in (self.gone, self.attention):
            if not fut.done():
                fut.set_result(None)

    def request_close(self, code: int, reason: str) -> None:
        """Ask the connection's handler to close it (from code that cannot await, e.g. the frame parser)."""
        if self.close_request is None and not self.closing:
            self.close_request = (code, reason)
            if not self.attention.done():
                self.attention.set_result(None)

    def peer_closed(self, code: int) -> None:
        """The peer sent a Close frame: answer it (unless ours already went) and end the connection."""
        if not self.closing:
            self.closing = True
            if not self.transport.is_closing():
                self.transport.write(close_frame(code))
        self.transport.close()
        self.peer_gone()

    async def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            if not self.transport.is_closing():
                # After whatever is still buffered: a peer reads every frame it was sent, then the reason.
                self.transport.write(close_frame(code, reason))
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                await asyncio.shield(self.gone)
        except TimeoutError:
            pass
        finally:
            # A stalled peer may never read our close frame: do not let it hold the socket open.
            if not self.transport.is_closing():
                self.reset()
            self.peer_gone()

    def reset(self) -> None:
        """End the connection now with a TCP reset. A plain close would leave the kernel holding what the
        peer never read (an orphan socket probing a shut window for minutes) and the peer none the wiser."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
