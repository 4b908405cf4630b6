"""Memory a sync peer can pin: a closed connection is freed at once (reference counting alone: `serve`
freezes the cycle collector's startup objects and runs it rarely), and changes queued for a dependency
that never comes are bounded per connection."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from engine.campaign.sync_client import SyncClient
from engine.ride.schema import Role, shared_ref
from engine.sync.effects import CLOSE_POLICY_VIOLATION
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.hostile import orphan_changes, raw_peer, sync_frame
from tests.support.memory import cycle_collector_off, handler_finished, hang_up, referrers, vanish
from tests.support.samples import T0, sample

RIDE = "ride-mem"


async def test_a_closed_connection_is_freed_without_the_cycle_collector(server: Server) -> None:
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(30)])
    bike.fold(RIDE)
    with cycle_collector_off():
        async with asyncio.timeout(HANG_GUARD):
            async with SyncClient(server.url, server.token("bike", "bike-1"), bike, RIDE) as client:
                await client.open_ride()
                await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
                (connection,) = server.backend.peers
                ref = weakref.ref(connection)
                # The WebSocket too (its zlib state alone is some 300 KB): aiohttp keeps its heartbeat's
                # callback on the connection's protocol, a cycle the endpoint must break.
                socket = weakref.ref(connection.ws)  # type: ignore[attr-defined]
                gated = [weakref.ref(g) for g in connection.provider.sessions.values()]  # type: ignore[attr-defined]
                assert gated
                del connection
            await server.backend.wait_for(lambda: not server.backend.peers)
            await handler_finished(ref, socket)
        leaked = ref()
        assert leaked is None, referrers(leaked)
        assert all(g() is None for g in gated)
        leaked_socket = socket()
        assert leaked_socket is None, referrers(leaked_socket)


async def test_a_connection_the_server_refuses_mid_flood_is_freed_without_the_cycle_collector(
    server: Server,
) -> None:
    """The server closes while the peer is still sending: the reader task is cancelled with a frame in
    hand, and neither the frame nor the connection may outlive the close."""
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.fold(RIDE)
    async with SyncClient(server.url, server.token("bike", "bike-1"), bike, RIDE) as client:
        await client.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
    messages = orphan_changes(12, 256 * 1024, device="viewer-1")
    ref = shared_ref(RIDE)
    with cycle_collector_off():
        async with asyncio.timeout(HANG_GUARD):
            token = server.token("viewer", "viewer-1", rides=[RIDE])
            async with raw_peer(server.http, server.url, token, RIDE) as ws:
                await server.backend.wait_for(lambda: len(server.backend.peers) == 1)
                (connection,) = server.backend.peers
                ref_conn = weakref.ref(connection)
                del connection
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    for message in messages:
                        await ws.send_bytes(sync_frame("hostile", ref, message))
                async for _ in ws:
                    pass
                assert ws.close_code == CLOSE_POLICY_VIOLATION
            await server.backend.wait_for(lambda: not server.backend.peers)
            await handler_finished(ref_conn)
        leaked = ref_conn()
        assert leaked is None, referrers(leaked)


@pytest.mark.parametrize("drop", [vanish, hang_up], ids=["reset", "fin"])
async def test_a_connection_that_vanishes_is_freed_without_the_cycle_collector(
    server: Server, drop: Callable[[aiohttp.ClientWebSocketResponse], None]
) -> None:
    """A peer that drops its TCP connection without a close frame, with a reset (a partition ending in
    one) or a FIN (its process exited): the endpoint's close and linger then fail or are cut short, and
    neither the cycle aiohttp leaves between the WebSocket and its protocol nor the errors aiohttp keeps
    from that close (the end-of-stream it read, then the write of its close frame to a closing
    transport, chained) may keep the connection."""
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)

    async def act(ws: aiohttp.ClientWebSocketResponse) -> None:
        drop(ws)

    await _freed_after(server, act)


async def test_a_peer_that_never_answers_the_close_is_freed_without_the_cycle_collector(
    make_server: MakeServer,
) -> None:
    """The server closes (a text frame is refused) and the peer never reads, so it never answers the
    close frame: the server's close waits `close_timeout_s`, and aiohttp keeps that timeout (chained to
    the cancellation it came from) on the WebSocket. A guard: this path frees the connection, and must
    go on doing so."""

    async def act(ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str("not a sync message")  # then read nothing: the close frame is never answered

    await _freed_after(await make_server(close_timeout_s=0.2), act)


async def test_a_peer_that_stops_answering_pings_is_freed_without_the_cycle_collector(
    make_server: MakeServer,
) -> None:
    """A peer that stops answering the heartbeat (a device frozen, a link that swallows packets): aiohttp
    closes the connection itself and keeps the timeout it made (never raised) on the WebSocket. A guard,
    like the one above."""

    async def act(ws: aiohttp.ClientWebSocketResponse) -> None:
        pass  # this client reads nothing from here on, so it answers no ping

    await _freed_after(await make_server(heartbeat_s=0.2), act)


async def _freed_after(
    server: Server, act: Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]]
) -> None:
    """Open a sync connection to `server` as a bike, let `act` end it, and check that the server freed
    the connection and its WebSocket by reference counting alone."""
    with cycle_collector_off():
        async with asyncio.timeout(HANG_GUARD):
            async with raw_peer(server.http, server.url, server.token("bike", "bike-1"), RIDE) as ws:
                await server.backend.wait_for(lambda: len(server.backend.peers) == 1)
                (connection,) = server.backend.peers
                ref = weakref.ref(connection)
                socket = weakref.ref(connection.ws)  # type: ignore[attr-defined]
                del connection
                await act(ws)
                await server.backend.wait_for(lambda: not server.backend.peers)
                await handler_finished(ref, socket)
        leaked = ref()
        assert leaked is None, referrers(leaked)
        leaked_socket = socket()
        assert leaked_socket is None, referrers(leaked_socket)
