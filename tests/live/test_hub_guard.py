"""Connections that send but never read: a ping flood, on any mode and in a quiet class, must not grow the
hub's memory, and pings must not keep such a connection alive."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import select
import socket
import sys
from typing import Any, cast

import aiohttp
import pytest

from engine.live.connection import Connection
from engine.live.metrics import HubStats
from engine.live.rfc6455 import OP_CLOSE, OP_PING
from engine.live.routes import OPEN, _over_buffer
from engine.live.tcp_progress import SendProgress, parse_tcp_info
from tests.live.test_rfc6455 import frame
from tests.support.live import (
    HANG_GUARD_S,
    LiveServer,
    RawClient,
    ServerFactory,
    View,
    sample,
    until,
    viewing,
)

LIMIT = 4096
FRAME_SLACK = 512


async def _new_connection(srv: LiveServer, before: set[Connection]) -> Connection:
    await until(lambda: len(srv.app[OPEN].conns - before) == 1)
    (conn,) = srv.app[OPEN].conns - before
    return conn


def _gone(conn: Connection) -> bool:
    return conn.closing or conn.transport.is_closing() or conn.gone.done()


@pytest.mark.parametrize("mode", ["pub", "sub", "pubsub"])
async def test_ping_flood_that_never_reads_stays_bounded_and_is_closed(
    make_server: ServerFactory, session: aiohttp.ClientSession, mode: str
) -> None:
    # The heartbeat is far away: what must end the flooder is the write-buffer rule, not missing pongs.
    srv = await make_server(peer_buffer_limit=LIMIT, peer_sndbuf=4096, stall_limit_s=0.3, heartbeat_s=600.0)
    loop = asyncio.get_running_loop()
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "good"))) as good:
        before = set(srv.app[OPEN].conns)
        flooder = await RawClient.connect(
            srv.port, f"/live/v1/classes/c1/ws?mode={mode}&token={srv.token('bike', 'flood')}", rcvbuf=2048
        )
        conn = await _new_connection(srv, before)
        burst = frame(OP_PING, os.urandom(125)) * 256  # ~33 KB of pings, ~33 KB of pongs owed
        sent = 0
        peak = 0
        async with asyncio.timeout(HANG_GUARD_S):
            while not _gone(conn):
                # Far more than the limit, kernel buffers and all: without a bound this is all buffered.
                assert sent < 64 * 1024 * 1024, "the flooder was never closed"
                try:
                    await loop.sock_sendall(flooder.sock, burst)
                except OSError:
                    break
                sent += len(burst)
                await asyncio.sleep(0)  # let the hub read and answer
                if not conn.closing:  # (then a close frame follows whatever is buffered)
                    peak = max(peak, conn.transport.get_write_buffer_size())
                # A live frame may go out while the buffer is under the limit (pubsub: the flooder's own
                # join, a few dozen bytes); a pong never takes it past the limit.
                assert peak <= LIMIT + FRAME_SLACK, f"{peak} bytes buffered for a peer that never reads"
        assert srv.hub.stats.stalls_disconnected >= 1
        # The well-behaved viewer of the same class was never disturbed and still gets every new value.
        bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
        await bike.send_str(sample(1))
        await good.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 1)
        assert not good.ws.closed
        await bike.close()
    # Reading at last, the flooder finds pongs and then one close frame: 4408, not reading.
    closes: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(HANG_GUARD_S):
            while (got := await flooder.read_frames()) is not None:
                closes += [p for op, p in got if op == OP_CLOSE]
    assert [int.from_bytes(p[:2], "big") for p in closes] in ([4408], [])
    flooder.close()


async def test_pings_from_a_peer_that_never_reads_are_not_liveness(make_server: ServerFactory) -> None:
    # Roomy buffers and a far stall limit: only the heartbeat can notice this one.
    srv = await make_server(heartbeat_s=0.4, stall_limit_s=600.0)
    loop = asyncio.get_running_loop()
    before = set(srv.app[OPEN].conns)
    client = await RawClient.connect(
        srv.port, f"/live/v1/classes/c1/ws?mode=pub&token={srv.token('bike', 'pinger')}", rcvbuf=65536
    )
    conn = await _new_connection(srv, before)
    ping = frame(OP_PING, b"still here")
    pings = 0
    while not _gone(conn):
        # At ten pings per heartbeat the peer is never silent; it never answers the hub's own ping.
        assert pings < 500, "a peer that only pings was kept alive"
        await loop.sock_sendall(client.sock, ping)
        pings += 1
        await asyncio.sleep(0.04)
    client.close()


async def test_a_subscriber_that_never_reads_is_closed_however_light_the_traffic(
    make_server: ServerFactory, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # Default buffers and a far heartbeat: a few dozen frames fit in the kernel's buffers and never take
    # this peer's transport over the write-buffer limit; only the kernel can tell that it reads nothing.
    srv = await make_server(stall_limit_s=0.3, heartbeat_s=600.0, stale_after_s=600.0)
    caplog.set_level(logging.INFO, logger="engine.live.routes")
    before = set(srv.app[OPEN].conns)
    stuck = await RawClient.connect(
        srv.port, f"/live/v1/classes/c1/ws?mode=sub&token={srv.token('viewer', 'stuck')}", rcvbuf=2048
    )
    conn = await _new_connection(srv, before)
    try:
        async with viewing(session, srv.ws_url("c1", srv.token("viewer", "good"))) as good:
            bike = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
            # One frame per sample (each waited for), ~15 KB in all: more than the stuck peer's receive
            # window, far less than the kernel send buffer plus the 64 KB limit.
            for seq in range(1, 61):
                await bike.send_str(sample(seq))
                await good.wait_for(functools.partial(_has_seq, seq=seq))
                assert conn.transport.get_write_buffer_size() <= srv.hub.config.peer_buffer_limit
            # The class goes quiet: nothing more is sent to anyone, and still the stuck peer is closed.
            async with asyncio.timeout(10):
                await until(lambda: _gone(conn))
                # And the stuck peer learns it without reading a byte: the hub reset the connection
                # rather than leave the kernel holding the unread frames.
                await until(lambda: _reset_seen(stuck.sock))
            assert not good.ws.closed and not bike.closed
            await bike.close()
    finally:
        stuck.close()
    assert srv.hub.stats.stalls_disconnected == 1
    lines = [r for r in caplog.records if r.getMessage() == "live connection not reading, closing"]
    assert [(r.levelno, getattr(r, "device", None)) for r in lines] == [(logging.INFO, "stuck")]
    assert "not reading for more than 0.3 s" in str(getattr(lines[0], "reason", ""))


def _reset_seen(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP)  # not POLLIN: its unread frames are there
    return bool(poller.poll(0))


def _has_seq(view: View, seq: int) -> bool:
    return (view.hr("bike-1") or {}).get("seq") == seq


def test_tcp_info_parsing() -> None:
    raw = bytearray(256)
    raw[24:28] = (3).to_bytes(4, sys.byteorder)
    raw[120:128] = (123456).to_bytes(8, sys.byteorder)
    assert parse_tcp_info(bytes(raw)) == SendProgress(acked=123456, queued=True)
    raw[24:28] = bytes(4)
    assert parse_tcp_info(bytes(raw)) == SendProgress(acked=123456, queued=False)
    raw[144:148] = (10).to_bytes(4, sys.byteorder)  # not sent: the peer's window is shut
    assert parse_tcp_info(bytes(raw)) == SendProgress(acked=123456, queued=True)
    assert parse_tcp_info(bytes(raw[:100])) is None  # a kernel too old to say


class _Stub:
    """Just what the write-buffer rule reads of a connection."""

    def __init__(self) -> None:
        self.unsent = 0
        self.transport = self
        self.buffer_limit, self.buffer_max = 100, 1000
        self.pending_pong: bytes | None = None
        self.backed_up_since: float | None = None
        self.device = "d"
        self.closes: list[tuple[int, str]] = []
        self.progress: SendProgress | None = None
        self.acked_seen: int | None = None

    def send_progress(self) -> SendProgress | None:
        return self.progress

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def pong(self, payload: bytes) -> None:
        if self.unsent + 2 + len(payload) <= self.buffer_limit:
            self.pending_pong = None

    def request_close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))


def test_write_buffer_rule_stall_time_and_hard_limit() -> None:
    stats = HubStats()
    conn = _Stub()
    rule = functools.partial(_over_buffer, stall=10.0, stats=stats)
    c: Any = conn
    conn.unsent = 500  # over the limit: the clock starts, nothing closes yet
    assert not rule(c, 0.0) and not rule(c, 10.0)
    conn.unsent = 50  # it read: the clock stops
    assert not rule(c, 10.5) and conn.backed_up_since is None
    conn.unsent, conn.pending_pong = 90, b"x" * 20  # a pong owed that does not fit: not keeping up either
    assert not rule(c, 11.0)
    assert rule(c, 21.5)
    assert conn.closes == [(4408, "stalled: not reading for more than 10 s")]
    other = _Stub()
    other.unsent = 5000  # past the hard limit: closed at the first look
    assert rule(cast(Any, other), 0.0)
    assert other.closes[0][0] == 4408 and "5000 bytes unsent" in other.closes[0][1]
    assert stats.stalls_disconnected == 2


def test_write_buffer_rule_bytes_queued_in_the_kernel_and_none_read() -> None:
    stats = HubStats()
    conn = _Stub()
    rule = functools.partial(_over_buffer, stall=10.0, stats=stats)
    c: Any = conn
    conn.progress = SendProgress(acked=1000, queued=True)  # first look: nothing to compare with yet
    assert not rule(c, 0.0) and conn.backed_up_since is None
    assert not rule(c, 1.0) and conn.backed_up_since == 1.0  # no byte read since: the clock starts
    conn.progress = SendProgress(acked=1500, queued=True)  # it read some: a slow reader, not a stuck one
    assert not rule(c, 2.0) and conn.backed_up_since is None
    assert not rule(c, 3.0) and conn.backed_up_since == 3.0
    assert rule(c, 13.5) and conn.closes == [(4408, "stalled: not reading for more than 10 s")]
    idle = _Stub()
    idle.progress = SendProgress(acked=1000, queued=False)  # everything sent was read: just a quiet class
    assert not rule(cast(Any, idle), 0.0) and not rule(cast(Any, idle), 20.0) and idle.closes == []
    assert stats.stalls_disconnected == 1
