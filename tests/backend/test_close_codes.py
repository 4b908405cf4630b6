"""The close code a peer sees on /v1/sync is the one the server meant, every time, also while the peer is
still sending; and `ridesync_sync_closes_total{code}` counts exactly what went out on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

import aiohttp
import pytest

from engine.auth.tokens import CLOCK_LEEWAY_S
from engine.crdt import CrdtDoc, new_actor_id
from engine.ride.schema import Role, shared_ref
from engine.sync.effects import (
    CLOSE_BACKLOG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG,
)
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.hostile import (
    close_code_while_sending,
    filler_frame,
    orphan_changes,
    raw_peer,
    sync_frame,
    sync_message,
)
from tests.support.samples import T0, sample

RIDE = "ride-close"
REPEAT = 30


FILLER = filler_frame(32 * 1024)


async def _ride_on(server: Server) -> None:
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(5)])
    bike.fold(RIDE)
    async with server.client(server.token("bike", "bike-1"), bike, RIDE) as client:
        await client.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
    bike.close()


async def _closes(server: Server) -> dict[str, float]:
    async with server.http.get(server.url + "/metrics") as resp:
        text = await resp.text()
    return {m[1]: float(m[2]) for m in re.finditer(r'ridesync_sync_closes_total\{code="(\d+)"\} (\S+)', text)}


async def _repeat(
    server: Server, token: str, offend: bytes, *, text: bool = False, filler: bytes = FILLER
) -> list[int | None]:
    async def once() -> int | None:
        async with raw_peer(server.http, server.url, token, RIDE) as ws:
            if text:
                await ws.send_str("not a binary frame")
            else:
                await ws.send_bytes(offend)
            return await close_code_while_sending(ws, filler)

    return [await once() for _ in range(REPEAT)]


async def test_a_write_refused_by_the_gate_sees_1008_every_time(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD * 2):
        await _ride_on(server)
        # A change the shared document could apply at once, from a viewer (who may write nothing).
        shared = shared_ref(RIDE)
        doc = CrdtDoc.load(server.backend.store.doc(shared.doc_id).save(), new_actor_id("viewer-1"))
        heads = doc.heads()
        doc.put({"title": "mine"})
        message = sync_message([c.data for c in doc.changes_since(heads)])
        viewer = server.token("viewer", "viewer-1", rides=[RIDE])
        codes = await _repeat(server, viewer, sync_frame("hostile", shared, message))
        closes = await _closes(server)
    assert codes == [CLOSE_POLICY_VIOLATION] * REPEAT
    assert closes.get(str(CLOSE_POLICY_VIOLATION)) == REPEAT


async def test_a_text_frame_sees_1002_every_time(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD * 2):
        codes = await _repeat(server, server.token("app", "app-1"), b"", text=True)
        closes = await _closes(server)
    assert codes == [CLOSE_PROTOCOL_ERROR] * REPEAT
    assert closes == {str(CLOSE_PROTOCOL_ERROR): REPEAT}


@pytest.mark.parametrize("filler", [32 * 1024, 1024 * 1024])
async def test_a_message_over_the_limit_sees_1009_every_time(make_server: MakeServer, filler: int) -> None:
    server = await make_server(max_message_bytes=64 * 1024)
    async with asyncio.timeout(HANG_GUARD * 2):
        token = server.token("app", "app-1")
        codes = await _repeat(server, token, b"\x00" * (1024 * 1024), filler=filler_frame(filler))
        closes = await _closes(server)
    assert codes == [CLOSE_TOO_BIG] * REPEAT
    # Counted as what went out (it was counted as 1002 before).
    assert closes == {str(CLOSE_TOO_BIG): REPEAT}


async def test_too_many_queued_changes_sees_4413_every_time(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(max_queued_changes=3)
    caplog.set_level(logging.INFO)
    async with asyncio.timeout(HANG_GUARD * 2):
        await _ride_on(server)
        token = server.token("bike", "bike-1")
        ref = shared_ref(RIDE)
        codes = []
        for _ in range(REPEAT):
            async with raw_peer(server.http, server.url, token, RIDE) as ws:
                for message in orphan_changes(4, 64):
                    await ws.send_bytes(sync_frame("hostile", ref, message))
                codes.append(await close_code_while_sending(ws, FILLER))
        closes = await _closes(server)
    assert codes == [CLOSE_BACKLOG] * REPEAT
    assert closes == {str(CLOSE_BACKLOG): REPEAT}
    # Logged once per connection, at INFO, with the counts.
    records = [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("engine.")]
    assert not [r for r in records if r.levelno > logging.INFO]
    logged = [r for r in records if "close" in r.getMessage() or "reject" in r.getMessage()]
    assert [r.getMessage() for r in logged] == ["sync connection closed by the server"] * REPEAT
    assert all(r.levelno == logging.INFO and "limit is 3 changes" in r.reason for r in logged)  # type: ignore[attr-defined]


async def test_an_expired_token_sees_4401_every_time(server: Server) -> None:
    async def once(token: str) -> int | None:
        async with raw_peer(server.http, server.url, token, RIDE) as ws:
            return await close_code_while_sending(ws, FILLER)

    ttl = 3600.0
    async with asyncio.timeout(HANG_GUARD * 2):
        issued = time.time() - ttl - CLOCK_LEEWAY_S + 2.0  # exp + leeway is about two seconds away
        tokens = [server.ring.issue("app", f"app-{i}", ttl_s=ttl, now=issued) for i in range(REPEAT)]
        codes = await asyncio.gather(*(once(t) for t in tokens))
        closes = await _closes(server)
    assert codes == [CLOSE_TOKEN_EXPIRED] * REPEAT
    assert closes == {str(CLOSE_TOKEN_EXPIRED): REPEAT}


async def test_a_bad_token_is_refused_before_the_upgrade_every_time(server: Server) -> None:
    statuses = []
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(REPEAT):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                async with raw_peer(server.http, server.url, "rs1.nope.x.y", RIDE):
                    pass
            statuses.append(info.value.status)
    assert statuses == [401] * REPEAT
    assert await _closes(server) == {}


async def test_server_shutdown_sees_1001_on_every_connection(make_server: MakeServer) -> None:
    server = await make_server()
    token = server.token("app", "app-1")
    async with (
        asyncio.timeout(HANG_GUARD),
        aiohttp.ClientSession() as http,
        contextlib.AsyncExitStack() as stack,
    ):
        peers = [
            await stack.enter_async_context(raw_peer(http, server.url, token, RIDE)) for _ in range(REPEAT)
        ]
        assert len(server.backend.peers) == REPEAT  # each answered its join: registered
        closes = asyncio.gather(*(close_code_while_sending(ws, FILLER) for ws in peers))
        await server.http.close()
        await server.test_server.close()
        codes = await closes
    assert codes == [1001] * REPEAT
