"""The campaign's hostile sync client against a server that refuses it: once the server has closed the
connection, what the client still sends is dropped (and counted), not raised. A hostile peer that keeps
sending meets the server's refusal; the attack reads that as held (the long security campaign once
reported a memory-pinning attack as not held because its next send raised)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from engine.campaign.sync_client import SyncClient
from engine.ride.schema import Role
from engine.store import ReplicaStore
from engine.sync import wire

HANG_GUARD_S = 30
CLOSE_POLICY_VIOLATION = 1008


async def _refusing(request: web.Request) -> web.WebSocketResponse:
    """Answers the join, then closes with 1008 on the first frame after it (as the gate refuses a write)."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    joined = False
    async for msg in ws:
        if msg.type is not WSMsgType.BINARY:
            continue
        if not joined:
            join = wire.decode(msg.data)
            assert isinstance(join, wire.Join)
            await ws.send_bytes(wire.encode(wire.Peer("ridesync-backend", join.sender_id)))
            joined = True
        else:
            await ws.close(code=CLOSE_POLICY_VIOLATION, message=b"refused")
    return ws


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/sync", _refusing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_frames_sent_after_the_server_closed_are_dropped_not_raised(
    server: str, tmp_path: Path
) -> None:
    store = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    try:
        async with asyncio.timeout(HANG_GUARD_S), SyncClient(server, "token", store, "ride-1") as client:
            await client.send_raw(b"refused")
            await client.closed.wait()
            for _ in range(3):
                await client.send_raw(b"after the close")
            assert client.dropped == 3
            assert client.close_code == CLOSE_POLICY_VIOLATION
    finally:
        store.close()
