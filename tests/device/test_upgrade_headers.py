"""What a reconnect costs in HTTP headers, on loopback: the device's upgrade request carries no `Accept` or
`Accept-Encoding` and a short `User-Agent`; the host's 101 answer carries no `Date` or `Server`, while
its other answers keep both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from engine.auth.tokens import KeyRing
from engine.backoff import Backoff
from engine.device.connection import USER_AGENT, DeviceSync, SyncRefused
from engine.server.app import build_app
from engine.server.config import ServerConfig
from tests.device.test_client import bike_store

HANG_GUARD_S = 60


async def test_the_device_upgrade_request_has_no_needless_headers(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response(
            {"error": "token_expired", "detail": "old"},
            status=401,
            headers={"X-Ridesync-Error": "token_expired", "X-Ridesync-Error-Detail": "old"},
        )

    app = web.Application()
    app.router.add_get("/v1/sync", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    store = bike_store(tmp_path)
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        sync = DeviceSync(store, url, "token", backoff=Backoff(base=0.5, cap=4.0), fail_fast=True)
        sync.track("r1")
        async with asyncio.timeout(HANG_GUARD_S):
            with pytest.raises(SyncRefused):
                await sync.run()
    finally:
        store.close()
        await runner.cleanup()
    assert seen, "the device never tried to connect"
    headers = seen[0]
    assert headers.get("Upgrade", "").lower() == "websocket"
    assert headers["User-Agent"] == USER_AGENT
    assert "Accept" not in headers and "Accept-Encoding" not in headers


async def test_the_hosts_upgrade_answer_has_no_date_or_server(tmp_path: Path) -> None:
    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    def lane(app: web.Application) -> None:
        app.router.add_get("/ws", socket)

    KeyRing.load_or_create(tmp_path)
    app = build_app(ServerConfig(data_dir=tmp_path, host="127.0.0.1", port=0), [lane])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with asyncio.timeout(HANG_GUARD_S), aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as plain:
                assert plain.status == 200
                assert "Date" in plain.headers and "Server" in plain.headers
            async with http.ws_connect(f"{base}/ws") as ws:
                upgrade = ws._response.headers  # the 101's headers: aiohttp keeps no public handle on them
                assert upgrade.get("Upgrade", "").lower() == "websocket"
                assert "Date" not in upgrade and "Server" not in upgrade
    finally:
        await runner.cleanup()
