"""Several hub processes sharing classes over a real redis-server on loopback (engine/live/redis_relay.py).

Each test runs two real hub applications (aiohttp on 127.0.0.1, port 0), each with its own RedisRelay, and
a throwaway redis-server started by the `redis_server` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import RedisError

from engine.bench.redis_server import RedisServer
from engine.brokerlink import BrokerLink, LinkTiming
from engine.live import relay_codec
from engine.live.redis_relay import RedisRelay
from engine.live.relay import Join, Leave, RelayEvent, Roster
from engine.live.relay_codec import CHANNEL, RelayCodecError, decode_message, encode_messages
from engine.live.wire import HelloIn, SampleIn, StateIn
from tests.support.live import HANG_GUARD_S, LiveServer, ServerFactory, sample, until, viewing


async def ready(*relays: RedisRelay) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        for r in relays:
            await r.subscribed.wait()
            await r.sending.wait()


@contextlib.asynccontextmanager
async def two_hubs(
    make_server: ServerFactory, redis_server: RedisServer, **hub: object
) -> AsyncIterator[tuple[LiveServer, LiveServer, RedisRelay, RedisRelay]]:
    relay_a, relay_b = RedisRelay(redis_server.url), RedisRelay(redis_server.url)
    hub_a = await make_server(relay=relay_a, **hub)
    hub_b = await make_server(relay=relay_b, **hub)
    await ready(relay_a, relay_b)
    yield hub_a, hub_b, relay_a, relay_b


async def test_riders_on_either_hub_reach_peers_on_the_other(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    async with two_hubs(make_server, redis_server) as (a, b, relay_a, relay_b):
        bike_a = await session.ws_connect(a.ws_url("c1", a.token("bike", "bike-a"), mode="pub"))
        bike_b = await session.ws_connect(b.ws_url("c1", b.token("bike", "bike-b"), mode="pub"))
        async with (
            viewing(session, a.ws_url("c1", a.token("viewer", "dash-a"))) as dash_a,
            viewing(session, b.ws_url("c1", b.token("viewer", "dash-b"))) as dash_b,
        ):
            await bike_a.send_str(json.dumps({"type": "hello", "name": "Ann", "max_hr": 180}))
            for seq in range(1, 6):
                await bike_a.send_str(sample(seq, hr=150.0 + seq))
                await bike_b.send_str(sample(seq, hr=110.0 + seq))
            for dash in (dash_a, dash_b):
                await dash.wait_for(
                    lambda v: (
                        (v.hr("bike-a") or {}).get("seq") == 5 and (v.hr("bike-b") or {}).get("seq") == 5
                    )
                )
                assert dash.hr("bike-a")["v"] == 155.0  # type: ignore[index]
                assert dash.hr("bike-b")["v"] == 115.0  # type: ignore[index]
                assert dash.riders["bike-a"]["name"] == "Ann"
                assert dash.riders["bike-a"]["zone"] == 4  # 155 / 180 = 86 %: the relayed max_hr is used
        await bike_a.close()
        await bike_b.close()
    # One PUBLISH per class per tick: far fewer batches than the 6 messages bike A sent, plus its join.
    assert relay_a.stats.batches_published >= 1
    assert relay_a.stats.events_published >= 7
    assert relay_b.stats.malformed_ignored == 0


async def test_classes_stay_separate_across_hubs(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    async with two_hubs(make_server, redis_server) as (a, b, _ra, _rb):
        bike1 = await session.ws_connect(a.ws_url("c1", a.token("bike", "bike-1", ("c1",)), mode="pub"))
        bike2 = await session.ws_connect(a.ws_url("c2", a.token("bike", "bike-2", ("c2",)), mode="pub"))
        async with (
            viewing(session, b.ws_url("c1", b.token("viewer", "dash-1", ("c1",)))) as dash1,
            viewing(session, b.ws_url("c2", b.token("viewer", "dash-2", ("c2",)))) as dash2,
        ):
            await bike1.send_str(sample(1, hr=121.0))
            await dash1.wait_for(lambda v: v.hr("bike-1") is not None)
            # Batches from one hub arrive in order, so once c2's rider is seen, c1's would have been too.
            await bike2.send_str(sample(1, hr=122.0))
            await dash2.wait_for(lambda v: v.hr("bike-2") is not None)
            assert "bike-1" not in dash2.riders and "bike-2" not in dash1.riders
            assert all(f.get("class") in ("c2", None) for f in dash2.frames)
        await bike1.close()
        await bike2.close()


async def test_join_and_leave_cross_hubs_and_a_rider_on_both_leaves_with_its_last_connection(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    async with (
        two_hubs(make_server, redis_server) as (a, b, _ra, _rb),
        viewing(session, b.ws_url("c1", b.token("viewer", "dash-b"))) as dash,
    ):
        on_a = await session.ws_connect(a.ws_url("c1", a.token("bike", "bike-1"), mode="pub"))
        await dash.wait_for(lambda v: v.riders.get("bike-1", {}).get("presence") == "here")
        # The bike reconnects through the other hub before its old connection is gone ...
        on_b = await session.ws_connect(b.ws_url("c1", b.token("bike", "bike-1"), mode="pub"))
        await until(lambda: ("c1", "bike-1") in b.hub._publishers)
        await on_a.close()
        await until(lambda: ("c1", "bike-1") not in a.hub._publishers)
        # ... so leaving hub A does not make it leave; hub B heard the leave (A published it) and kept it.
        await until(lambda: "bike-1" not in b.hub._remote.get("c1", {}).get(_ra.origin, set()))
        assert dash.riders["bike-1"]["presence"] == "here"
        async with viewing(session, a.ws_url("c1", a.token("viewer", "dash-a"))) as dash_a:
            await dash_a.wait_for(lambda v: v.riders.get("bike-1", {}).get("presence") == "here")
            await on_b.close()
            await dash_a.wait_for(lambda v: v.riders.get("bike-1", {}).get("presence") == "left")
        await dash.wait_for(lambda v: v.riders.get("bike-1", {}).get("presence") == "left")


async def test_relay_reconnects_after_redis_restarts(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    async with two_hubs(make_server, redis_server) as (a, b, relay_a, relay_b):
        bike = await session.ws_connect(a.ws_url("c1", a.token("bike", "bike-1"), mode="pub"))
        async with viewing(session, b.ws_url("c1", b.token("viewer", "dash-b"))) as dash:
            await bike.send_str(sample(1, hr=100.0))
            await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("seq") == 1)

            await asyncio.to_thread(redis_server.restart)
            await until(lambda: relay_a.stats.subscribes >= 2 and relay_b.stats.subscribes >= 2)
            await until(lambda: relay_a.stats.publisher_connects >= 2)
            await ready(relay_a, relay_b)
            # The hubs learn of the restart when they next use the link; values published meanwhile are
            # dropped (latest-wins lane), so keep publishing until one gets through.
            seq = 1
            async with asyncio.timeout(HANG_GUARD_S):
                while (dash.hr("bike-1") or {}).get("seq", 0) < 2:
                    seq += 1
                    await bike.send_str(sample(seq, hr=100.0 + seq))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await dash.wait_for(lambda v, s=seq: (v.hr("bike-1") or {}).get("seq") == s)  # type: ignore[misc]
            assert dash.hr("bike-1")["state"] == "live"  # type: ignore[index]
        await bike.close()


async def test_a_broker_link_never_reconnects_underneath_its_owner(redis_server: RedisServer) -> None:
    # redis-py 8.2's pooled client replaced a connection the server had closed without telling anyone;
    # the relay's link must fail instead, so that the relay's own reconnect (and its counters) run.
    link = BrokerLink(redis_server.url)
    await link.open()
    try:
        assert await link.command("PING") == b"PONG"
        await asyncio.to_thread(redis_server.restart)
        with pytest.raises(RedisError):
            for _ in range(3):  # the first write may still be accepted by the kernel; the read is not
                await link.command("PING")
        with pytest.raises(RedisError, match="broker link closed"):
            await link.command("PING")  # and it stays closed: no silent new connection
    finally:
        await link.close()


async def test_an_idle_publisher_notices_a_broker_restart(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.live.redis_relay")
    relay = RedisRelay(redis_server.url, timing=LinkTiming(ping_after_s=0.2, dead_after_s=1.0))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(relay.run(lambda _c, _o, _e: None))
        await ready(relay)
        await asyncio.to_thread(redis_server.restart)
        # Nothing is published at all: only the idle ping can find out.
        await until(lambda: relay.stats.publisher_connects >= 2 and relay.stats.subscribes >= 2)
        task.cancel()
    # Losing the broker is an expected network event: one INFO line per side, no warning, no traceback.
    lost = [r for r in caplog.records if r.getMessage().endswith("lost the broker")]
    assert {r.getMessage() for r in lost} == {
        "relay publisher lost the broker",
        "relay subscriber lost the broker",
    }
    assert all(r.name == "engine.live.redis_relay" and r.levelno == logging.INFO for r in lost)
    assert all(r.exc_info is None for r in lost)


async def test_a_silent_hub_s_riders_leave_after_the_expiry_and_rosters_restore_lost_joins(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    hubs = two_hubs(make_server, redis_server, relay_roster_s=0.2, relay_expire_s=1.0, sweep_s=0.05)
    async with (
        hubs as (a, b, _ra, _rb),
        viewing(session, b.ws_url("c1", b.token("viewer", "dash-b"))) as dash,
    ):
        # A hub that crashed: it announced a rider, then was never heard from again.
        b.hub.deliver_remote("c1", "hub-crashed", [Join("ghost")])
        await dash.wait_for(lambda v: v.riders.get("ghost", {}).get("presence") == "here")
        await dash.wait_for(lambda v: v.riders.get("ghost", {}).get("presence") == "left")
        # A join lost in a broker outage: hub A's roster announces its rider anyway.
        bike = await session.ws_connect(a.ws_url("c1", a.token("bike", "bike-1"), mode="pub"))
        await until(lambda: ("c1", "bike-1") in a.hub._publishers)
        await dash.wait_for(lambda v: v.riders.get("bike-1", {}).get("presence") == "here")
        slots = b.hub.classes["c1"].slots
        b.hub.deliver_remote("c1", _ra.origin, [Leave("bike-1")])
        assert not slots.riders["bike-1"].present
        await until(lambda: slots.riders["bike-1"].present)
        assert "bike-1" in b.hub._remote["c1"][_ra.origin]
        await bike.close()


async def test_garbage_on_the_broker_is_ignored_and_counted(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    async with two_hubs(make_server, redis_server) as (a, b, _relay_a, relay_b):
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            for junk in (b"\xff\x00", b"[]", b'{"o":"x","c":{"c1":[["s","d"]]}}', b'{"o":"x","c":[]}'):
                await client.publish(CHANNEL, junk)
            (bad_class,) = encode_messages("x", [("bad class", [Join("d")])])
            await client.publish(CHANNEL, bad_class)
        finally:
            await client.aclose()
        await until(lambda: relay_b.stats.malformed_ignored >= 5)
        # Still relaying after all that.
        bike = await session.ws_connect(a.ws_url("c1", a.token("bike", "bike-1"), mode="pub"))
        async with viewing(session, b.ws_url("c1", b.token("viewer", "dash-b"))) as dash:
            await bike.send_str(sample(1, hr=99.0))
            await dash.wait_for(lambda v: (v.hr("bike-1") or {}).get("v") == 99.0)
        await bike.close()
        assert relay_b.stats.batches_received >= 1 and "d" not in b.hub._remote.get("c1", {}).get("x", set())


# --- the codec, without a broker --------------------------------------------------------------------------

_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
_t = st.floats(0, 4e9, allow_nan=False)
_events: st.SearchStrategy[RelayEvent] = st.one_of(
    st.builds(
        SampleIn,
        _ids,
        st.sampled_from(["hr", "cad", "pwr", "res"]),
        st.none() | st.floats(0, 100_000, allow_nan=False),
        _t,
        st.integers(0, 2**63 - 1),
        _ids,
        st.none() | st.sampled_from(["detected", "not_detected", "unsupported"]),
    ),
    st.builds(StateIn, _ids, st.sampled_from(["hr", "pwr"]), st.sampled_from(["no_contact", "ok"]), _t),
    st.builds(
        HelloIn,
        _ids,
        st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=64),
        st.none() | st.integers(100, 250),
    ),
    st.builds(Join, _ids),
    st.builds(Leave, _ids),
    st.builds(Roster, st.lists(_ids, max_size=5).map(tuple)),
)


@given(
    st.lists(st.tuples(st.sampled_from(["c1", "c2", "spin-6am"]), st.lists(_events, max_size=8)), max_size=6),
    _ids,
)
def test_codec_round_trips_a_tick_of_batches(
    batches: list[tuple[str, list[RelayEvent]]], origin: str
) -> None:
    expected: dict[str, list[RelayEvent]] = {}
    for class_id, events in batches:
        expected.setdefault(class_id, []).extend(events)
    messages = encode_messages(origin, batches)
    assert len(messages) == (1 if batches else 0)
    for m in messages:
        assert m.startswith(relay_codec.own_prefix(origin))
        assert decode_message(m) == (origin, expected)


def test_codec_splits_a_huge_tick_by_class_and_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_codec, "SPLIT_BYTES", 200)
    batches = [(f"c{i}", [Join(f"bike-{i}-{j}") for j in range(5)]) for i in range(10)]
    messages = encode_messages("hub-1", batches)
    assert len(messages) > 1
    got: dict[str, list[RelayEvent]] = {}
    for m in messages:
        origin, classes = decode_message(m)
        assert origin == "hub-1"
        got.update(classes)
    assert got == dict(batches)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_codec_rejects_junk_with_its_own_error(data: bytes) -> None:
    with contextlib.suppress(RelayCodecError):
        decode_message(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=4),
        max_leaves=20,
    )
)
def test_codec_rejects_wrong_shapes_with_its_own_error(obj: object) -> None:
    for doc in (obj, {"o": "x", "c": obj}, {"o": "x", "c": {"c1": obj}}, {"o": "x", "c": {"c1": [obj]}}):
        with contextlib.suppress(RelayCodecError):
            decode_message(json.dumps(doc))
