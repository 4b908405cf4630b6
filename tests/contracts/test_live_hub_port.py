"""The live hub port's conformance suite: every `engine.live.hub.LiveHub` passes the same tests, served
by the real routes of a real `ridesync serve` application on loopback, with real WebSocket publishers and
viewers, as automerge-repo's network adapters share one suite. Implementations: the coalescing hub and the
naive baseline the benchmark compares it with. A new hub adds one entry to `HUBS` and nothing else.

The contract: a publisher's samples reach every viewer of its class and no other class; a viewer sees a
rider's values in publishing order (a hub may skip values, never go back) and ends on the latest; a
viewer that leaves is forgotten while the others keep receiving; a publisher sending garbage is closed
with 4400 without disturbing anyone else; and shutting the server down closes every viewer with 1001."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.auth.tokens import KeyRing
from engine.bench.naive_hub import NaiveHub
from engine.live.config import HubConfig
from engine.live.hub import Hub
from engine.live.port import LiveHub
from engine.live.routes import HUB
from engine.live.wire import CLOSE_GOING_AWAY, CLOSE_MALFORMED
from tests.support.live import LiveServer, View, sample, start_server, until, viewing

HUBS: dict[str, Callable[[HubConfig], LiveHub]] = {"coalescing": Hub, "naive": NaiveHub}


@pytest.fixture(params=sorted(HUBS))
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LiveServer]:
    config = HubConfig()
    hub = HUBS[request.param](config)
    server = await start_server(tmp_path, config, KeyRing.generate(), serve=hub)
    assert server.app[HUB] is hub  # the routes serve exactly the implementation under test
    try:
        yield server
    finally:
        await server.runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def publisher(
    server: LiveServer, session: aiohttp.ClientSession, device: str, class_id: str = "c1"
) -> Any:
    token = server.token("bike", device, classes=(class_id,))
    return await session.ws_connect(server.ws_url(class_id, token, mode="pub"))


def viewer_url(server: LiveServer, name: str, class_id: str = "c1") -> str:
    return server.ws_url(class_id, server.token("viewer", name, classes=(class_id,)))


def hr_seqs(view: View, device: str) -> list[int]:
    """The heart-rate sequence numbers of `device` in the order the viewer's frames carried them."""
    out = []
    for frame in view.frames:
        if frame["type"] == "delta" and device in frame["riders"] and "hr" in frame["riders"][device]:
            out.append(frame["riders"][device]["hr"]["seq"])
    return out


async def test_samples_reach_every_viewer_of_the_class_and_no_other(
    server: LiveServer, session: aiohttp.ClientSession
) -> None:
    async with (
        viewing(session, viewer_url(server, "dash-1")) as one,
        viewing(session, viewer_url(server, "dash-2")) as two,
        viewing(session, viewer_url(server, "dash-x", "c2")) as other,
    ):
        bike = await publisher(server, session, "bike-a")
        for seq in range(1, 6):
            await bike.send_str(sample(seq, hr=100.0 + seq))
        for view in (one, two):
            await view.wait_for(lambda v: (v.hr("bike-a") or {}).get("seq") == 5)
            assert view.hr("bike-a")["v"] == 105.0  # type: ignore[index]
        # A barrier in the other class: once its own rider arrived, bike-a would have too.
        bike_c2 = await publisher(server, session, "bike-b", "c2")
        await bike_c2.send_str(sample(1, hr=90.0))
        await other.wait_for(lambda v: v.hr("bike-b") is not None)
        assert other.hr("bike-a") is None
        await bike.close()
        await bike_c2.close()


async def test_a_viewer_sees_values_in_order_and_ends_on_the_latest(
    server: LiveServer, session: aiohttp.ClientSession
) -> None:
    async with viewing(session, viewer_url(server, "dash-1")) as view:
        bike = await publisher(server, session, "bike-a")
        for seq in range(1, 41):
            await bike.send_str(sample(seq, hr=60.0 + seq))
        await view.wait_for(lambda v: (v.hr("bike-a") or {}).get("seq") == 40)
        assert view.hr("bike-a")["v"] == 100.0  # type: ignore[index]
        seen = hr_seqs(view, "bike-a")
        assert seen == sorted(seen) and len(seen) == len(set(seen)), seen
        await bike.close()


async def test_a_viewer_that_leaves_is_forgotten_and_the_others_keep_receiving(
    server: LiveServer, session: aiohttp.ClientSession
) -> None:
    hub = server.app[HUB]
    async with viewing(session, viewer_url(server, "dash-stay")) as stay:
        bike = await publisher(server, session, "bike-a")
        async with viewing(session, viewer_url(server, "dash-leave")) as leave:
            await bike.send_str(sample(1))
            await leave.wait_for(lambda v: v.hr("bike-a") is not None)
        await stay.wait_for(lambda v: v.hr("bike-a") is not None)
        for seq in range(2, 5):
            await bike.send_str(sample(seq))
        await stay.wait_for(lambda v: (v.hr("bike-a") or {}).get("seq") == 4)
        await until(lambda: hub.connections().get("sub", 0) == 1)
        await bike.close()


async def test_a_publisher_sending_garbage_is_closed_alone(
    server: LiveServer, session: aiohttp.ClientSession
) -> None:
    async with viewing(session, viewer_url(server, "dash-1")) as view:
        good = await publisher(server, session, "bike-good")
        bad = await publisher(server, session, "bike-bad")
        await bad.send_str('{"type": "sample", "kind": "heart_rate", "v": "fast"')
        msg = await bad.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert bad.close_code == CLOSE_MALFORMED
        await good.send_str(sample(1, hr=77.0))
        await view.wait_for(lambda v: (v.hr("bike-good") or {}).get("v") == 77.0)
        assert view.close_code is None
        await good.close()


async def test_shutting_down_closes_every_viewer_with_going_away(
    server: LiveServer, session: aiohttp.ClientSession
) -> None:
    async with (
        viewing(session, viewer_url(server, "dash-1")) as one,
        viewing(session, viewer_url(server, "dash-2")) as two,
    ):
        bike = await publisher(server, session, "bike-a")
        await bike.send_str(sample(1))
        await one.wait_for(lambda v: v.hr("bike-a") is not None)
        await server.runner.cleanup()
        for view in (one, two):
            await view.wait_for(lambda v: v.close_code is not None)
            assert view.close_code == CLOSE_GOING_AWAY
