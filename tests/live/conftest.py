"""Fixtures for the live lane: a real `ridesync serve` application on 127.0.0.1 with port 0, and clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.auth.tokens import KeyRing
from engine.live.config import HubConfig
from engine.live.hub import Hub
from engine.live.lane import live_lane
from engine.live.relay import Relay
from engine.live.routes import HUB
from engine.live.wire import FrameReader
from engine.server.app import build_app
from engine.server.config import ServerConfig
from engine.server.guard import GuardedRunner
from tests.redis_process import redis_server  # noqa: F401  (the fixture, for tests/live)

HANG_GUARD_S = 30.0


@dataclass
class LiveServer:
    app: web.Application
    runner: web.AppRunner
    base: str
    port: int
    keyring: KeyRing

    @property
    def hub(self) -> Hub:
        hub = self.app[HUB]
        assert isinstance(hub, Hub)
        return hub

    def token(
        self,
        role: str,
        device: str,
        classes: tuple[str, ...] = ("c1",),
        ttl_s: float = 600.0,
        now: float | None = None,
    ) -> str:
        return self.keyring.issue(role, device, classes=classes, ttl_s=ttl_s, now=now)

    def ws_url(self, class_id: str, token: str | None = None, mode: str | None = None) -> str:
        q = []
        if mode:
            q.append(f"mode={mode}")
        if token:
            q.append(f"token={token}")
        return f"ws://127.0.0.1:{self.port}/live/v1/classes/{class_id}/ws" + ("?" + "&".join(q) if q else "")


async def start_server(
    tmp: Path, hub: HubConfig, keyring: KeyRing, port: int = 0, relay: Relay | None = None
) -> LiveServer:
    app = build_app(
        ServerConfig(data_dir=tmp, host="127.0.0.1", port=port), [live_lane(hub, relay)], keyring=keyring
    )
    # Run as `ridesync serve` runs it: with the HTTP guard (engine/server/guard.py).
    runner = GuardedRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    return LiveServer(app, runner, f"http://127.0.0.1:{bound}", bound, keyring)


ServerFactory = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    runners: list[web.AppRunner] = []
    keyring = KeyRing.generate()

    async def factory(port: int = 0, relay: Relay | None = None, **hub: Any) -> LiveServer:
        server = await start_server(tmp_path, HubConfig(**hub), keyring, port, relay)
        runners.append(server.runner)
        return server

    yield factory
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@dataclass
class View:
    """What one subscriber has seen: the merged latest record per rider, every frame, the leaderboard."""

    ws: aiohttp.ClientWebSocketResponse
    riders: dict[str, dict[str, Any]] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)
    leaderboard: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    close_code: int | None = None
    task: asyncio.Task[None] | None = None

    async def pump(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            async with self.changed:
                self.frames.append(frame)
                if frame["type"] == "delta":
                    self.riders.update(frame["riders"])
                elif frame["type"] == "leaderboard":
                    if frame["full"]:
                        self.leaderboard = dict(frame["rows"])
                    else:
                        self.leaderboard.update(frame["rows"])
                    for d in frame["removed"]:
                        self.leaderboard.pop(d, None)
                self.changed.notify_all()
        async with self.changed:
            self.close_code = self.ws.close_code
            self.changed.notify_all()

    async def wait_for(self, pred: Callable[[View], bool]) -> None:
        async with asyncio.timeout(HANG_GUARD_S), self.changed:
            await self.changed.wait_for(lambda: pred(self))

    def hr(self, device: str) -> dict[str, Any] | None:
        rec = self.riders.get(device)
        return None if rec is None else rec.get("hr")

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@contextlib.asynccontextmanager
async def viewing(session: aiohttp.ClientSession, url: str) -> AsyncIterator[View]:
    ws = await session.ws_connect(url)
    view = View(ws)
    view.task = asyncio.create_task(view.pump())
    try:
        yield view
    finally:
        await view.close()


def sample(
    seq: int,
    hr: float | None = 120.0,
    t: float | None = None,
    contact: str | None = "detected",
    kind: str = "heart_rate",
) -> str:
    msg: dict[str, Any] = {
        "type": "sample",
        "kind": kind,
        "v": hr,
        "t": time.time() if t is None else t,
        "seq": seq,
        "src": "strap",
    }
    if contact is not None:
        msg["contact"] = contact
    return json.dumps(msg)


class RawClient:
    """A WebSocket client on a bare socket with a tiny receive buffer, that reads only when told to:
    the way to make a peer that stops reading."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()

    @classmethod
    async def connect(cls, port: int, path: str, rcvbuf: int = 4096) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        req = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, req.encode())
        client = cls(sock)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 1)
            if not chunk:
                raise ConnectionError("closed during handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        return client

    async def read_frames(self) -> list[tuple[int, bytes]] | None:
        """Read what is available (waiting for at least one chunk); None at EOF or reset."""
        loop = asyncio.get_running_loop()
        try:
            data = await loop.sock_recv(self.sock, 65536)
        except (ConnectionResetError, OSError):
            return None
        if not data:
            return None
        return self.reader.feed(data)

    def close(self) -> None:
        self.sock.close()


async def until(pred: Callable[[], bool], poll_s: float = 0.01) -> None:
    """Wait for a condition that has no event to wait on (state of another component), hang-guarded."""
    async with asyncio.timeout(HANG_GUARD_S):
        while True:
            if pred():
                return
            await asyncio.sleep(poll_s)
