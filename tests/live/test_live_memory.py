"""Memory a live peer can pin: a publisher's or a subscriber's connection is freed at once when it ends,
by reference counting alone (`ridesync serve` freezes the cycle collector's startup objects and runs it
rarely), whether the peer closes, vanishes with a TCP reset, or the hub ends it (a refused message, an
expired token, a stall, a missed pong)."""

from __future__ import annotations

import asyncio
import functools
import gc
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from engine.auth.tokens import CLOCK_LEEWAY_S
from engine.live.routes import OPEN
from engine.live.wire import CLOSE_FORBIDDEN, CLOSE_MALFORMED, CLOSE_TOKEN_EXPIRED
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
from tests.support.memory import cycle_collector_off, handler_finished, referrers, vanish

CLASS = "c1"
BIKE, DASH = "bike-1", "dash-1"
# A watchdog look every 0.5 s (a quarter of the stall limit), no ping within any of these tests.
WATCHDOG = {"heartbeat_s": 10.0, "stall_limit_s": 2.0}


@dataclass
class Held:
    """Weak references to what the hub holds for one connection: its `Connection`, the frame parser
    aiohttp feeds (`Ingest`), aiohttp's request, 101 response and HTTP connection (its protocol)."""

    refs: dict[str, Callable[[], object]]
    # asyncio's own: its selector transport keeps a bound method of itself (`_read_ready_cb`), a cycle
    # on every TCP connection, ours to leave. Once closed it lets go of the protocol; it must hold nothing
    # of this connection.
    transport: Callable[[], asyncio.BaseTransport | None]

    def left(self) -> dict[str, str]:
        """Each object still alive, with who holds it."""
        out: dict[str, str] = {}
        transport = self.transport()
        if transport is not None and transport.get_protocol() is not None:
            out["transport's protocol"] = repr(transport.get_protocol())
        del transport
        for name, ref in self.refs.items():
            obj = ref()
            if obj is not None:
                out[name] = referrers(obj)
            del obj  # not one of the referrers of the next
        return out


def _held(server: LiveServer, device: str) -> Held:
    (conn,) = (c for c in server.app[OPEN].conns if c.device == device)
    protocol = conn.transport.get_protocol()
    assert isinstance(protocol, web.RequestHandler)
    ingest, request = protocol._payload_parser, protocol._current_request
    assert ingest is not None and request is not None
    (response,) = (r for r in gc.get_referrers(request) if isinstance(r, web.StreamResponse))
    refs: dict[str, Callable[[], object]] = {
        "connection": weakref.ref(conn),
        "ingest": weakref.ref(ingest),
        "request": weakref.ref(request),
        "response": weakref.ref(response),
        "protocol": weakref.ref(protocol),  # aiohttp's HTTP connection, with its buffers
    }
    return Held(refs, weakref.ref(conn.transport))


@asynccontextmanager
async def _class_in_use(
    server: LiveServer, session: aiohttp.ClientSession, expires_in_s: float | None = None
) -> AsyncIterator[tuple[aiohttp.ClientWebSocketResponse, View, Held, Held]]:
    """A publisher and a subscriber of one class, a sample gone from one to the other through the hub;
    with `expires_in_s`, on tokens the hub accepts for that much longer (they are inside the clock leeway)."""

    def token(role: str, device: str) -> str:
        if expires_in_s is None:
            return server.token(role, device)
        ttl = 60.0
        return server.token(role, device, now=time.time() - ttl - CLOCK_LEEWAY_S + expires_in_s, ttl_s=ttl)

    bike = await session.ws_connect(server.ws_url(CLASS, token("bike", BIKE), mode="pub"))
    async with viewing(session, server.ws_url(CLASS, token("viewer", DASH))) as dash:
        await bike.send_str(sample(1))
        await dash.wait_for(functools.partial(_has_seq, seq=1))
        await _watched(server)
        yield bike, dash, _held(server, BIKE), _held(server, DASH)


async def _watched(server: LiveServer) -> None:
    """Until the hub's watchdog has looked at every open connection since its last message (it clears
    `received`): what the watchdog keeps from a look must not outlive the connection either."""
    await until(lambda: not any(c.received for c in server.app[OPEN].conns))


async def _freed(server: LiveServer, *held: Held, until_closed: bool = True) -> dict[str, str]:
    """Wait for the hub to let the connections go (and, `until_closed`, to have none open); what is still
    held, with who holds it."""
    if until_closed:
        await until(lambda: not server.app[OPEN].conns)
    await handler_finished(*(r for h in held for r in h.refs.values()))
    return {f"{i}.{name}": who for i, h in enumerate(held) for name, who in h.left().items()}


async def test_a_closed_live_connection_is_freed_without_the_cycle_collector(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = await make_server(**WATCHDOG)
    with cycle_collector_off():
        async with asyncio.timeout(HANG_GUARD_S):
            async with _class_in_use(server, session) as (bike, dash, publisher, subscriber):
                await bike.close()
                await dash.ws.close()
            left = await _freed(server, publisher, subscriber)
        assert not left, _report(left)


async def test_a_live_connection_that_vanishes_is_freed_without_the_cycle_collector(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Both peers drop their TCP connections without a close frame (a reset, a partition ending in one)."""
    server = await make_server(**WATCHDOG)
    with cycle_collector_off():
        async with asyncio.timeout(HANG_GUARD_S):
            async with _class_in_use(server, session) as (bike, dash, publisher, subscriber):
                vanish(bike)
                vanish(dash.ws)
            left = await _freed(server, publisher, subscriber)
        assert not left, _report(left)


async def test_a_live_connection_the_hub_closes_is_freed_without_the_cycle_collector(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The hub ends both: the publisher's message is malformed (4400), the subscriber sent one (4403). Its
    handler closes them itself (a Close frame, then a bounded wait for the peer's answer)."""
    server = await make_server(**WATCHDOG)
    with cycle_collector_off():
        async with asyncio.timeout(HANG_GUARD_S):
            async with _class_in_use(server, session) as (bike, dash, publisher, subscriber):
                await bike.send_str("{not json")
                await dash.ws.send_str(sample(2))
                assert (await bike.receive()).type is aiohttp.WSMsgType.CLOSE
                await dash.wait_for(lambda v: v.close_code is not None)
                assert (bike.close_code, dash.close_code) == (CLOSE_MALFORMED, CLOSE_FORBIDDEN)
            left = await _freed(server, publisher, subscriber)
        assert not left, _report(left)


async def test_a_live_connection_whose_token_expires_is_freed_without_the_cycle_collector(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The hub ends both when their tokens do (4401): the handler's token timer cancels its wait, and the
    handler closes them."""
    server = await make_server(**WATCHDOG)
    with cycle_collector_off():
        async with asyncio.timeout(HANG_GUARD_S):
            async with _class_in_use(server, session, expires_in_s=3.0) as (
                bike,
                dash,
                publisher,
                subscriber,
            ):
                assert (await bike.receive()).type is aiohttp.WSMsgType.CLOSE
                await dash.wait_for(lambda v: v.close_code is not None)
                assert (bike.close_code, dash.close_code) == (CLOSE_TOKEN_EXPIRED, CLOSE_TOKEN_EXPIRED)
            left = await _freed(server, publisher, subscriber)
        assert not left, _report(left)


async def test_a_live_peer_the_hub_drops_is_freed_without_the_cycle_collector(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Peers that never read, dropped by the hub's watchdog: one silent (no pong to the heartbeat's ping:
    reset at once), one that subscribes (4408 stalled: the Close frame it never reads, the grace for its
    answer running out, then a reset)."""
    server = await make_server(heartbeat_s=1.0, stall_limit_s=0.3, stale_after_s=600.0)
    with cycle_collector_off():
        async with asyncio.timeout(HANG_GUARD_S):
            silent = await RawClient.connect(server.port, _raw_path(server, "bike", "silent", "pub"))
            stuck = await RawClient.connect(
                server.port, _raw_path(server, "viewer", "stuck", "sub"), rcvbuf=2048
            )
            try:
                await until(lambda: {c.device for c in server.app[OPEN].conns} == {"silent", "stuck"})
                held = (_held(server, "silent"), _held(server, "stuck"))
                bike = await session.ws_connect(server.ws_url(CLASS, server.token("bike", BIKE), mode="pub"))
                async with viewing(session, server.ws_url(CLASS, server.token("viewer", DASH))) as dash:
                    # One frame per sample (each waited for): more than the stuck peer's receive window.
                    for seq in range(1, 61):
                        await bike.send_str(sample(seq))
                        await dash.wait_for(functools.partial(_has_seq, seq=seq))
                    await until(lambda: not {"silent", "stuck"} & {c.device for c in server.app[OPEN].conns})
                    left = await _freed(server, *held, until_closed=False)
                await bike.close()
            finally:
                silent.close()
                stuck.close()
        assert server.hub.stats.stalls_disconnected == 1
        assert not left, _report(left)


def _has_seq(view: View, seq: int) -> bool:
    return (view.hr(BIKE) or {}).get("seq") == seq


def _report(left: dict[str, str]) -> str:
    return "\n\n".join(f"{name} still held:\n{who}" for name, who in left.items())


def _raw_path(server: LiveServer, role: str, device: str, mode: str) -> str:
    return f"/live/v1/classes/{CLASS}/ws?mode={mode}&token={server.token(role, device)}"
