"""Batched publisher messages (a JSON array under subprotocol ridesync-live.2), both directions compatible."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from engine.live.publisher import LivePublisher
from engine.live.wire import MAX_BATCH, HelloIn, SampleIn, parse_inbound_batch
from engine.readings import Kind, Reading
from engine.wire_error import WireError
from tests.support.live import HANG_GUARD_S, ServerFactory, sample, until, viewing

NOW = 1_800_000_000.0


def test_batch_parses_each_member_and_a_single_object_still_works() -> None:
    one = '{"type":"sample","kind":"heart_rate","v":72,"t":1,"seq":3,"src":"hrm"}'
    two = '{"type":"sample","kind":"power","v":210,"t":1,"seq":4,"src":"bus"}'
    assert parse_inbound_batch(one, "b", NOW) == [SampleIn("b", "hr", 72.0, 1.0, 3, "hrm")]
    assert parse_inbound_batch(f'[{one},{two},{{"type":"hello","name":"Ann"}}]', "b", NOW) == [
        SampleIn("b", "hr", 72.0, 1.0, 3, "hrm"),
        SampleIn("b", "pwr", 210.0, 1.0, 4, "bus"),
        HelloIn("b", "Ann", None),
    ]


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        ("[]", 4400),
        ("[" + ",".join(['{"type":"hello"}'] * (MAX_BATCH + 1)) + "]", 4400),
        ('[{"type":"hello"},{"type":"nope"}]', 4400),
        ('[{"type":"hello"},[{"type":"hello"}]]', 4400),
        ('[{"type":"hello"},{"type":"hello","device":"other"}]', 4403),
    ],
)
def test_a_bad_member_refuses_the_whole_batch(msg: str, code: int) -> None:
    with pytest.raises(WireError) as err:
        parse_inbound_batch(msg, "b", NOW)
    assert err.value.close_code == code


@given(st.lists(st.binary(max_size=40) | st.text(max_size=40), max_size=5))
def test_batch_fuzz_only_wire_errors(parts: list[bytes | str]) -> None:
    body = "[" + ",".join(p if isinstance(p, str) else p.decode("latin-1") for p in parts) + "]"
    with contextlib.suppress(WireError):
        events = parse_inbound_batch(body, "b", NOW)
        assert 1 <= len(events) <= MAX_BATCH and all(e.device == "b" for e in events)


async def test_a_raw_batch_reaches_peers_and_a_bad_batch_closes_only_its_connection(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    good = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-1"), mode="pub"))
    bad = await session.ws_connect(srv.ws_url("c1", srv.token("bike", "bike-2"), mode="pub"))
    async with viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash:
        await good.send_str(f"[{sample(1, hr=130.0)},{sample(1, hr=90.0, kind='cadence')}]")
        await dash.wait_for(lambda v: "cad" in v.riders.get("bike-1", {}) and v.hr("bike-1") is not None)
        assert dash.riders["bike-1"]["cad"]["v"] == 90.0 and dash.hr("bike-1")["v"] == 130.0  # type: ignore[index]
        await bad.send_str(f'[{sample(1, hr=100.0)},{{"type":"sample"}}]')
        async with asyncio.timeout(HANG_GUARD_S):
            msg = await bad.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and bad.close_code == 4400
        # Nothing of the refused batch was applied, and the good publisher still streams.
        assert "hr" not in dash.riders.get("bike-2", {})
        await good.send_str(sample(2, hr=131.0))
        await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 2)
    await good.close()


def _reading(kind: Kind, seq: int, value: float) -> Reading:
    return Reading(t=time.time(), source="bike-bus", seq=seq, kind=kind, value=value)


async def test_publisher_batches_pending_readings_for_a_hub_that_speaks_the_batch_protocol(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    pub = LivePublisher(srv.base, srv.token("bike", "bike-1"), "c1")
    async with (
        viewing(session, srv.ws_url("c1", srv.token("viewer", "dash"))) as dash,
        asyncio.TaskGroup() as tg,
    ):
        task = tg.create_task(pub.run())
        async with asyncio.timeout(HANG_GUARD_S):
            await pub.connected.wait()
        sent_before, messages_before = pub.stats.sent, pub.stats.messages
        # Offered in one go (no await between): all three are pending when the sender next runs.
        pub.offer(_reading(Kind.HEART_RATE, 1, 140.0))
        pub.offer(_reading(Kind.CADENCE, 1, 88.0))
        pub.offer(_reading(Kind.POWER, 1, 210.0))
        await dash.wait_for(lambda v: all(k in v.riders.get("bike-1", {}) for k in ("hr", "cad", "pwr")))
        assert pub.stats.sent - sent_before == 3
        assert pub.stats.messages - messages_before == 1
        task.cancel()


@contextlib.asynccontextmanager
async def old_hub() -> AsyncIterator[tuple[str, list[str]]]:
    """A hub from before batching: no subprotocol, and it would refuse an array. Records what it got."""
    got: list[str] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        resp = web.WebSocketResponse()
        await resp.prepare(request)
        async for msg in resp:
            got.append(msg.data)
            if not isinstance(json.loads(msg.data), dict):
                await resp.close(code=4400)
        return resp

    app = web.Application()
    app.router.add_get("/live/v1/classes/{c}/ws", ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", got
    finally:
        await runner.cleanup()


async def test_publisher_sends_single_objects_to_a_hub_without_the_batch_protocol() -> None:
    async with old_hub() as (base, got), asyncio.TaskGroup() as tg:
        pub = LivePublisher(base, "token", "c1")
        task = tg.create_task(pub.run())
        async with asyncio.timeout(HANG_GUARD_S):
            await pub.connected.wait()
        pub.offer(_reading(Kind.HEART_RATE, 1, 140.0))
        pub.offer(_reading(Kind.CADENCE, 1, 88.0))
        await until(lambda: len(got) >= 3)  # hello, then one message per reading
        assert [json.loads(m)["type"] for m in got] == ["hello", "sample", "sample"]
        assert pub.stats.connects == 1 and pub.stats.failures == 0
        task.cancel()
