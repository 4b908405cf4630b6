"""`ridesync serve`'s HTTP guard on loopback with raw sockets: header and body timeouts, the per-address cap
on connections without a valid token, and one INFO line (no traceback) for bad requests and resets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.auth.tokens import KeyRing
from engine.live.lane import live_lane
from engine.server.app import build_app
from engine.server.config import HttpLimits, ServerConfig
from engine.server.guard import GUARD, ConnectionGuard, GuardedRunner
from tests.support.live import HANG_GUARD_S, sample, until, viewing
from tests.support.memory import cycle_collector_off, referrers

HANDLER_STARTED = web.AppKey("test.handler_started", asyncio.Event)


@dataclass
class Served:
    app: web.Application
    port: int
    keyring: KeyRing

    @property
    def guard(self) -> ConnectionGuard:
        return self.app[GUARD]

    def token(self, role: str = "viewer", device: str = "dash") -> str:
        return self.keyring.issue(role, device, classes=("c1",), ttl_s=600.0)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _test_routes(app: web.Application) -> None:
    app[HANDLER_STARTED] = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def late(request: web.Request) -> web.StreamResponse:
        # Answers only after the client is gone: the write meets a reset connection.
        request.app[HANDLER_STARTED].set()
        await until(lambda: request.transport is None or request.transport.is_closing())
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"x" * 1000)
        return resp

    async def slow_reader(request: web.Request) -> web.Response:
        # Takes its time before reading: meanwhile aiohttp stops reading the socket (its buffer is full).
        await asyncio.sleep(float(request.query["wait"]))
        return web.Response(text=str(len(await request.read())))

    app.router.add_post("/test/echo", echo)
    app.router.add_post("/test/slow-reader", slow_reader)
    app.router.add_get("/test/late", late)


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    runners: list[web.AppRunner] = []
    keyring = KeyRing.generate()

    async def factory(**limits: Any) -> Served:
        config = ServerConfig(data_dir=tmp_path, host="127.0.0.1", port=0, http=HttpLimits(**limits))
        app = build_app(config, [live_lane(), _test_routes], keyring=keyring)
        runner = GuardedRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return Served(app, runner.addresses[0][1], keyring)

    yield factory
    for r in runners:
        await r.cleanup()


async def _raw(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    if first:
        await loop.sock_sendall(sock, first)
    return sock


async def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (hang-guarded)."""
    loop = asyncio.get_running_loop()
    out = b""
    async with asyncio.timeout(HANG_GUARD_S):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk


# --- slow-loris -------------------------------------------------------------------------------------------


async def test_half_open_request_head_is_closed_after_the_header_timeout(serve: ServeFactory) -> None:
    srv = await serve(header_timeout_s=0.3)
    sock = await _raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    answer = await _read_to_eof(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert srv.guard.closed["header_timeout"] == 1
    sock.close()
    async with aiohttp.ClientSession() as session, session.get(srv.url("/metrics")) as resp:
        metrics = await resp.text()
    assert 'ridesync_http_guard_closed_total{reason="header_timeout"} 1.0' in metrics
    assert "ridesync_http_pending_connections 1.0" in metrics  # the /metrics request's own connection


async def test_a_head_trickled_byte_by_byte_is_still_closed(serve: ServeFactory) -> None:
    # The timeout is for the whole head, not between bytes: a trickle does not keep it open.
    srv = await serve(header_timeout_s=0.3)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 400
    sock = await _raw(srv.port)
    loop = asyncio.get_running_loop()
    for i, byte in enumerate(head):
        assert i < len(head) - 1, "the whole head went out byte by byte and the connection is still open"
        try:
            await loop.sock_sendall(sock, bytes([byte]))
        except OSError:
            break
        if srv.guard.closed["header_timeout"]:
            break
        await asyncio.sleep(0.02)
    assert srv.guard.closed["header_timeout"] == 1
    sock.close()


async def test_a_stalled_request_body_is_closed_after_the_body_timeout(serve: ServeFactory) -> None:
    srv = await serve(body_timeout_s=0.3)
    sock = await _raw(
        srv.port, b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"b" * 10
    )
    await _read_to_eof(sock)
    assert srv.guard.closed["body_timeout"] == 1
    sock.close()


async def test_a_whole_body_in_pieces_is_answered(serve: ServeFactory) -> None:
    srv = await serve(body_timeout_s=5.0)
    sock = await _raw(
        srv.port, b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
    )
    loop = asyncio.get_running_loop()
    for _ in range(4):
        await loop.sock_sendall(sock, b"12345")
        await asyncio.sleep(0.05)
    answer = await _read_to_eof(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"12345" * 4)
    assert srv.guard.closed["body_timeout"] == 0
    sock.close()


async def test_a_body_the_server_itself_paused_is_not_a_stall(serve: ServeFactory) -> None:
    srv = await serve(body_timeout_s=0.2)
    body = b"z" * 900_000  # under aiohttp's 1 MiB request limit, far over what it buffers before pausing
    async with (
        aiohttp.ClientSession() as session,
        session.post(srv.url("/test/slow-reader?wait=1.0"), data=body) as resp,
    ):
        assert resp.status == 200
        assert await resp.text() == str(len(body))
    assert srv.guard.closed["body_timeout"] == 0


async def test_one_connection_past_the_pending_cap_is_refused_and_tokened_clients_still_work(
    serve: ServeFactory,
) -> None:
    cap = 3
    srv = await serve(max_pending_per_ip=cap, header_timeout_s=60.0)
    half_open = [await _raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(cap)]
    await until(lambda: srv.guard.pending.get("127.0.0.1") == cap)
    # One more half-open request from the same address: refused, at once, with a 429.
    extra = await _raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = await _read_to_eof(extra)
    assert answer.startswith(b"HTTP/1.1 429") and b"Retry-After: 1" in answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "too_many_pending"
    # A complete request without a token: refused the same way (the handler never sees it).
    unauthenticated = await _raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _read_to_eof(unauthenticated)).startswith(b"HTTP/1.1 429")
    assert srv.guard.closed["pending_cap"] == 2
    # Clients with a valid token are let in during the attack: HTTP and the class hub.
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {srv.token()}"}
        async with session.get(srv.url("/live/v1/classes/c1"), headers=headers) as resp:
            assert resp.status == 200
        view_url = f"ws://127.0.0.1:{srv.port}/live/v1/classes/c1/ws?token={srv.token()}"
        async with viewing(session, view_url) as view:
            bike_url = (
                f"ws://127.0.0.1:{srv.port}/live/v1/classes/c1/ws?mode=pub&token={srv.token('bike', 'b1')}"
            )
            bike = await session.ws_connect(bike_url)
            await bike.send_str(sample(1))
            await view.wait_for(lambda v: (v.hr("b1") or {}).get("seq") == 1)
            await bike.close()
    assert srv.guard.pending.get("127.0.0.1") == cap  # the half-open ones, still waiting for their timeout
    for s in (*half_open, extra, unauthenticated):
        s.close()
    await until(lambda: not srv.guard.pending)


# --- bad requests and resets: one INFO line -----------------------------------------------------------------


def _problems(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= logging.WARNING or r.exc_info or "Traceback" in r.getMessage()]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    ],
    ids=["long-url", "long-header"],
)
async def test_an_over_long_url_or_header_is_one_info_line(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    srv = await serve()
    sock = await _raw(srv.port, request_bytes)
    answer = await _read_to_eof(sock)
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400"))
    sock.close()
    await until(lambda: srv.guard.closed["bad_request"] == 1)
    assert _problems(caplog.records) == []
    lines = [r for r in caplog.records if r.name == "engine.server.guard"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert lines[0].__dict__["client"] == "127.0.0.1"
    assert "8190" in lines[0].__dict__["reason"]  # aiohttp's limit on a line or field, named


async def test_a_client_resetting_mid_request_is_one_info_line(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    srv = await serve()
    sock = await _raw(srv.port, b"GET /test/late HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(HANG_GUARD_S):
        await srv.app[HANDLER_STARTED].wait()
    # An abortive close: RST, not FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    await until(lambda: srv.guard.closed["peer_reset"] == 1)
    await asyncio.sleep(0.05)  # let any other log line the reset causes be written before looking
    assert _problems(caplog.records) == []
    lines = [r for r in caplog.records if r.name == "engine.server.guard"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert lines[0].__dict__["client"] == "127.0.0.1"


async def test_a_burst_of_tokened_clients_from_one_address_is_not_refused(serve: ServeFactory) -> None:
    # A class behind one NAT address reconnecting at once: far more connections than the cap open before
    # any has sent its first request; each carries a valid token, so none is refused.
    srv = await serve(max_pending_per_ip=2)
    head = (
        "GET /live/v1/classes/c1/ws?token={} HTTP/1.1\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    socks = [await _raw(srv.port) for _ in range(20)]
    await until(lambda: srv.guard.pending.get("127.0.0.1") == 20)  # 18 of them opened past the cap
    loop = asyncio.get_running_loop()
    for i, sock in enumerate(socks):
        await loop.sock_sendall(sock, head.format(srv.token("viewer", f"v{i}")).encode())
    for sock in socks:
        async with asyncio.timeout(HANG_GUARD_S):
            answer = await loop.sock_recv(sock, 12)
        assert answer == b"HTTP/1.1 101"
    assert srv.guard.closed["pending_cap"] == 0
    for sock in socks:
        sock.close()


# --- memory -----------------------------------------------------------------------------------------------


def _closed_transports() -> list[asyncio.BaseTransport]:
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, asyncio.Transport) and o.is_closing() and o.get_extra_info("socket") is not None
    ]


async def test_a_closed_connection_leaves_no_transport_for_the_cycle_collector(serve: ServeFactory) -> None:
    """`serve` runs the cycle collector rarely, so nothing of a connection may be freed only by it. asyncio's
    socket transport is in a reference cycle with its own read callback; the guard's protocol breaks it
    when the connection is lost. (The clients here are plain sockets: no transport of their own.)"""
    served = await serve()
    with cycle_collector_off():
        before = {id(t) for t in _closed_transports()}
        for _ in range(5):
            sock = await _raw(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                assert (await _read_to_eof(sock)).startswith(b"HTTP/1.1 200")
            finally:
                sock.close()
        # The server's side is lost a loop turn or two after it closed: a bounded wait, then the check.
        with contextlib.suppress(TimeoutError):
            await until(lambda: not [t for t in _closed_transports() if id(t) not in before])
        left = [t for t in _closed_transports() if id(t) not in before]
        assert not left, referrers(left[0])
