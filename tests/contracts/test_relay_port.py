"""The relay port's conformance suite: every `engine.live.relay.Relay` passes the same tests, as
automerge-repo's network adapters share one suite. Implementations: the in-process `LocalBus` relay and
the Redis relay on a real redis-server on loopback (skipped, naming the Debian package redis-server, when
it is not installed). A new relay adds one entry to `BUSES` and nothing else.

The contract: what one hub process publishes reaches every other process's `deliver` with its origin, and
never its own; each publisher's events of a class arrive in the order it published them (a relay may merge
one tick's batches of a class, so the suite compares the event streams, not the batches); a process whose
`run` was cancelled hears nothing more (unsubscribe), and closing one process disturbs no other; `publish`
never blocks or raises, also after close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from engine.brokerlink import LinkTiming
from engine.live.redis_relay import RedisRelay
from engine.live.relay import Join, Leave, LocalBus, RelayEvent, Roster
from engine.live.wire import HelloIn, SampleIn, StateIn
from tests.support.live import until
from tests.support.redis import RedisProcess
from tests.support.sources import HANG_GUARD_S


class NamedRelay(Protocol):
    """The Relay port, plus the origin every implementation tags its batches with."""

    origin: str

    def publish(self, class_id: str, events: Sequence[RelayEvent]) -> None: ...

    async def run(self, deliver: Callable[[str, str, Sequence[RelayEvent]], None]) -> None: ...


@dataclass
class Bus:
    """One implementation: how to make a hub process's relay, and when it is ready to send and hear."""

    new: Callable[[], NamedRelay]
    ready: Callable[[NamedRelay], Awaitable[None]]


@dataclass
class Process:
    """One hub process's relay, running, with everything its `deliver` was given."""

    relay: NamedRelay
    task: asyncio.Task[None]
    got: list[tuple[str, str, list[RelayEvent]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def events(self, class_id: str, origin: str) -> list[RelayEvent]:
        return [e for c, o, events in self.got if (c, o) == (class_id, origin) for e in events]

    async def until(self, predicate: Callable[[Process], bool]) -> None:
        async with asyncio.timeout(HANG_GUARD_S):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def local_bus() -> Bus:
    bus = LocalBus()

    async def ready(relay: NamedRelay) -> None:
        await until(lambda: getattr(relay, "deliver", None) is not None)

    return Bus(bus.relay, ready)


def redis_bus(redis: RedisProcess) -> Bus:
    async def ready(relay: NamedRelay) -> None:
        assert isinstance(relay, RedisRelay)
        async with asyncio.timeout(HANG_GUARD_S):
            await relay.subscribed.wait()
            await relay.sending.wait()

    return Bus(
        lambda: RedisRelay(redis.url, timing=LinkTiming(backoff_base_s=0.05, backoff_cap_s=0.2)), ready
    )


BUSES: dict[str, Callable[[pytest.FixtureRequest], Bus]] = {
    "local": lambda _request: local_bus(),
    "redis": lambda request: redis_bus(request.getfixturevalue("redis_server")),
}

Join3 = Callable[[], Awaitable[Process]]


@pytest.fixture(params=sorted(BUSES))
async def join(request: pytest.FixtureRequest) -> AsyncIterator[Join3]:
    bus = BUSES[request.param](request)
    started: list[Process] = []

    async def start() -> Process:
        relay = bus.new()
        proc: Process

        def deliver(class_id: str, origin: str, events: Sequence[RelayEvent]) -> None:
            proc.got.append((class_id, origin, list(events)))
            proc.changed.set()

        proc = Process(relay, asyncio.create_task(relay.run(deliver), name="contract-relay"))
        started.append(proc)
        await bus.ready(relay)
        return proc

    yield start
    for proc in started:
        await proc.close()


async def test_publish_reaches_every_other_process_but_not_its_own(join: Join3) -> None:
    a, b, c = await join(), await join(), await join()
    a.relay.publish("c1", [Join("bike-1")])
    for other in (b, c):
        await other.until(lambda p: p.events("c1", a.relay.origin) == [Join("bike-1")])
    # A barrier: b's batch is published after a's arrived everywhere, so once `a` hears b, it would
    # already have heard itself.
    b.relay.publish("c1", [Leave("bike-2")])
    await a.until(lambda p: p.events("c1", b.relay.origin) == [Leave("bike-2")])
    assert a.events("c1", a.relay.origin) == []
    assert [(cls, origin) for cls, origin, _ in a.got] == [("c1", b.relay.origin)]


async def test_every_event_kind_arrives_as_sent(join: Join3) -> None:
    a, b = await join(), await join()
    sent: list[RelayEvent] = [
        HelloIn("bike-1", "Ana", 185),
        HelloIn("bike-2", None, None),
        SampleIn("bike-1", "hr", 142.0, 1_795_000_000.25, 7, "strap", "detected"),
        SampleIn("bike-1", "pwr", None, 1_795_000_001.0, 8, "bike"),
        StateIn("bike-1", "hr", "no_contact", 1_795_000_002.0),
        Join("bike-3"),
        Leave("bike-3"),
        Roster(("bike-1", "bike-2")),
    ]
    a.relay.publish("spin-6am", sent)
    await b.until(lambda p: len(p.events("spin-6am", a.relay.origin)) >= len(sent))
    assert b.events("spin-6am", a.relay.origin) == sent


async def test_each_publishers_events_keep_their_order_per_class(join: Join3) -> None:
    a, b, c = await join(), await join(), await join()
    for i in range(40):
        a.relay.publish("c1", [Join(f"a-{i}")])
        b.relay.publish("c1", [Join(f"b-{i}")])
        a.relay.publish("c2", [Leave(f"a-{i}")])
        if i % 10 == 9:
            await asyncio.sleep(0.02)  # across several of the Redis relay's send ticks, too
    await c.until(
        lambda p: len(p.events("c1", a.relay.origin)) == 40 and len(p.events("c2", a.relay.origin)) == 40
    )
    await c.until(lambda p: len(p.events("c1", b.relay.origin)) == 40)
    assert c.events("c1", a.relay.origin) == [Join(f"a-{i}") for i in range(40)]
    assert c.events("c2", a.relay.origin) == [Leave(f"a-{i}") for i in range(40)]
    assert c.events("c1", b.relay.origin) == [Join(f"b-{i}") for i in range(40)]


async def test_a_closed_process_hears_nothing_more_and_disturbs_no_other(join: Join3) -> None:
    a, b, c = await join(), await join(), await join()
    await b.close()  # unsubscribe: its run is cancelled, as a hub's is at shutdown
    assert b.task.cancelled()
    heard_by_b = list(b.got)
    a.relay.publish("c1", [Join("bike-1")])
    a.relay.publish("c1", [Join("bike-2")])
    await c.until(lambda p: len(p.events("c1", a.relay.origin)) == 2)
    assert b.got == heard_by_b
    # A closed relay's publish neither blocks nor raises (a hub may still flush while shutting down),
    # and what it hands over reaches nobody.
    b.relay.publish("c1", [Join("ghost")])
    a.relay.publish("c1", [Join("bike-3")])
    await c.until(lambda p: len(p.events("c1", a.relay.origin)) == 3)
    assert c.events("c1", b.relay.origin) == []
