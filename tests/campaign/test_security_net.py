"""The security campaign's floods stop on their own time limit: building a million frames is the
campaign's own CPU, and on a busy machine the long version's publish flood once outlasted the 120 s every
attack is allowed (reported as not held, with the server fine)."""

from __future__ import annotations

import asyncio
import os

from engine.campaign import security_net as net
from engine.campaign.procs import LOOPBACK

HANG_GUARD_S = 30


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers any upgrade with 101, then reads and discards everything: a server that never pushes back."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    await writer.drain()
    while await reader.read(1 << 16):
        pass
    writer.close()


async def test_a_flood_stops_at_its_time_limit_and_says_how_much_it_sent() -> None:
    server = await asyncio.start_server(_sink, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            out = await net.flood(port, "/live/v1/x", 10**9, "publish", os.getpid(), within_s=0.5)
    finally:
        server.close()
        await server.wait_closed()
    assert out["status"] == 101
    assert 0 < int(str(out["sent"])) < 10**9
    assert out["closed"] is False and out["pushed_back"] is False
