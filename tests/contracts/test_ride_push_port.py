"""The ride push port's conformance suite (engine/backend/push.py): every implementation that links
backend nodes passes the same tests. `NoPush`, the single-node default, has its own short contract below:
it tells nobody and never fails its owner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from engine.backend.push import LocalPushBus, NoPush, RidePush
from engine.backend.push_codec import CHANNEL, encode_messages
from engine.backend.redis_push import RedisPush
from engine.brokerlink import BrokerLink, LinkTiming
from tests.support.redis import RedisProcess, redis_server  # noqa: F401  (the fixture)

GUARD_S = 10.0
Heard = list[tuple[str, list[str]]]
catch_ups: dict[str, int] = {}
Pair = tuple[RidePush, RidePush]


# Reconnect and notice a dead broker within a second, for the broker-outage tests.
FAST = LinkTiming(backoff_cap_s=0.2, ping_after_s=0.2, dead_after_s=0.6)


@contextlib.asynccontextmanager
async def _running(*pushes: RidePush) -> AsyncIterator[list[Heard]]:
    """Run each push with a notify that records what it heard; cancelled (cleanly) on exit."""
    heard: list[Heard] = [[] for _ in pushes]
    catch_ups.clear()
    tasks = []
    for push, log in zip(pushes, heard, strict=True):

        def notify(origin: str, rides: Sequence[str], log: Heard = log, me: str = push.origin) -> None:
            if rides:
                log.append((origin, list(rides)))
            else:  # the catch-up call after a (re)connection: counted apart
                catch_ups[me] = catch_ups.get(me, 0) + 1

        tasks.append(asyncio.create_task(push.run(notify)))
    try:
        async with asyncio.timeout(GUARD_S):
            for push in pushes:
                await push.ready()
        yield heard
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD_S):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


@pytest.fixture(params=["local", "redis"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    if request.param == "local":
        bus = LocalPushBus()
        yield bus.member("node-a"), bus.member("node-b")
        return
    redis: RedisProcess = request.getfixturevalue("redis_server")
    yield RedisPush(redis.url, origin="node-a"), RedisPush(redis.url, origin="node-b")


async def test_an_announcement_reaches_the_other_node_not_its_sender(pair: Pair) -> None:
    a, b = pair
    async with _running(a, b) as (heard_a, heard_b):
        a.publish({"ride-1", "ride-2"})
        await _until(lambda: bool(heard_b))
        b.publish(["ride-3"])
        await _until(lambda: bool(heard_a))
        await asyncio.sleep(0.05)  # room for a wrong echo to arrive
    assert heard_b == [("node-a", ["ride-1", "ride-2"])]
    assert heard_a == [("node-b", ["ride-3"])]
    assert a.stats.rides_published == 2 and b.stats.rides_received == 2


async def test_many_rides_in_one_burst_all_arrive(pair: Pair) -> None:
    a, b = pair
    rides = [f"ride-{i:05d}-{'x' * 100}" for i in range(3000)]  # more than one message holds
    async with _running(a, b) as (_, heard_b):
        a.publish(rides)
        await _until(lambda: sum(len(r) for _, r in heard_b) >= len(rides))
    assert sorted(r for _, rs in heard_b for r in rs) == sorted(rides)


async def test_publish_before_run_is_dropped_and_never_raises(pair: Pair) -> None:
    a, b = pair
    a.publish(["ride-early"])  # nobody is listening yet: dropped, counted
    assert a.stats.dropped >= 1
    async with _running(a, b) as (_, heard_b):
        a.publish(["ride-late"])
        await _until(lambda: bool(heard_b))
    assert heard_b == [("node-a", ["ride-late"])]


async def test_hostile_messages_on_the_channel_are_counted_and_ignored(
    redis_server: RedisProcess,  # noqa: F811
) -> None:
    """Only a transport with bytes has a channel others can publish on."""
    b = RedisPush(redis_server.url, origin="node-b")

    async def inject(raw: bytes) -> None:
        link = BrokerLink(redis_server.url)
        await link.open()
        try:
            await link.command("PUBLISH", CHANNEL, raw)
        finally:
            await link.close()

    async with _running(b) as (heard_b,):
        for raw in (b"", b"garbage", b"RSP1 \n", b"RSP1 node-x\n../etc", b"RSP1 node-x\nride\n\xff"):
            await inject(raw)
        await inject(encode_messages("node-x", ["ride-ok"])[0])
        await _until(lambda: bool(heard_b))
    assert heard_b == [("node-x", ["ride-ok"])]
    assert b.stats.malformed_ignored == 5


async def test_a_broker_restart_is_survived(tmp_path: Path, redis_server: RedisProcess) -> None:  # noqa: F811
    a = RedisPush(redis_server.url, origin="node-a", timing=FAST)
    b = RedisPush(redis_server.url, origin="node-b", timing=FAST)
    async with _running(a, b) as (_, heard_b):
        redis_server.restart()
        async with asyncio.timeout(GUARD_S):
            await a.ready()
            await b.ready()
            while not heard_b:  # the first announcements may go to a broker that is not back yet
                a.publish(["ride-after"])
                await asyncio.sleep(0.05)
    assert heard_b[0] == ("node-a", ["ride-after"])
    assert a.stats.connects >= 3 and b.stats.connects >= 3  # sender and receiver reconnected
    # Announcements made while the link was down are lost: after resubscribing, b is told to catch up.
    assert catch_ups.get("node-b", 0) >= 2


async def test_no_push_tells_nobody_and_runs_until_cancelled() -> None:
    push = NoPush()
    push.publish(["ride-1"])
    await push.ready()
    task = asyncio.create_task(push.run(lambda origin, rides: pytest.fail("NoPush heard something")))
    await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert push.stats.rides_published == 0
