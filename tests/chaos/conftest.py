"""Real servers on loopback for the fault proxy to sit in front of."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web

from tests.support.loopback_servers import TcpServer, WsServer


@pytest.fixture
async def echo_server() -> AsyncIterator[TcpServer]:
    srv = TcpServer()
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = srv.server.sockets[0].getsockname()[1]
    yield srv
    srv.server.close()


@pytest.fixture
async def send_server() -> AsyncIterator[TcpServer]:
    srv = TcpServer(payload=bytes(range(256)) * 200)
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = srv.server.sockets[0].getsockname()[1]
    yield srv
    srv.server.close()


@pytest.fixture
async def ws_server() -> AsyncIterator[WsServer]:
    state = WsServer()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                continue
            state.messages.append(msg.data)
            if msg.data == b"send big":
                await ws.send_bytes(state.big)
            else:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/sync", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()
