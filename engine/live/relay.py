"""The seam for multi-process fan-out (docs/architecture.md#several-hub-processes: Redis pub/sub;
`redis_relay.RedisRelay`).

A hub process that accepts a publisher's event applies it locally and, every `HubConfig.relay_flush_s`
(10 ms) at most, hands what it accepted to `Relay.publish` as one batch per class (never one message per
sample: redis-py costs ~15 µs per PUBLISH; the Redis relay sends a window's batches of every class as a
single PUBLISH). `publish` never blocks and never raises: the relay sends on its own task and
drops batches while its broker is unreachable (the live lane shows the present, never a backlog). Every
hub process runs `Relay.run(deliver)`, which calls `deliver(class_id, origin, events)` for batches from
other processes (never its own); the hub applies them to its slots exactly like local events, so its own
peers see every rider of the class whatever process the rider is connected to.

Besides publishers' events, batches carry presence: `Join`/`Leave` when a rider's first/last publishing
connection to a hub opens/closes, and a periodic `Roster` (every rider present on that hub) that repairs
what a broker outage or a crashed hub left behind. `origin` identifies the sending hub process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.live.wire import InboundEvent


@dataclass(frozen=True, slots=True)
class Join:
    device: str


@dataclass(frozen=True, slots=True)
class Leave:
    device: str


@dataclass(frozen=True, slots=True)
class Roster:
    """Every rider of the class with a publishing connection to the origin hub, right now."""

    devices: tuple[str, ...]


RelayEvent = InboundEvent | Join | Leave | Roster
Deliver = Callable[[str, str, Sequence[RelayEvent]], None]


class Relay(Protocol):
    def publish(self, class_id: str, events: Sequence[RelayEvent]) -> None:
        """Hand one tick's events of one class to the relay for the other hub processes; never blocks."""

    async def run(self, deliver: Deliver) -> None:
        """Send what `publish` handed over and receive other processes' batches until cancelled."""


class LocalBus:
    """An in-process stand-in for Redis pub/sub: every relay attached to the bus hears the others.

    It exists to exercise the relay seam (several hubs in one test process); it is not a deployment option.
    """

    def __init__(self) -> None:
        self._members: list[LocalRelay] = []

    def relay(self) -> LocalRelay:
        member = LocalRelay(self, f"local-{len(self._members)}")
        self._members.append(member)
        return member

    def broadcast(self, sender: LocalRelay, class_id: str, events: Sequence[RelayEvent]) -> None:
        for member in self._members:
            if member is not sender and member.deliver is not None:
                member.deliver(class_id, sender.origin, list(events))


class LocalRelay:
    def __init__(self, bus: LocalBus, origin: str) -> None:
        self._bus = bus
        self.origin = origin
        self.deliver: Deliver | None = None
        self.batches_published = 0

    def publish(self, class_id: str, events: Sequence[RelayEvent]) -> None:
        if self.deliver is None:
            return  # not running: `run` is what sends, so, like a relay without its broker, it drops
        self.batches_published += 1
        self._bus.broadcast(self, class_id, events)

    async def run(self, deliver: Deliver) -> None:
        self.deliver = deliver
        try:
            await asyncio.Event().wait()
        finally:
            self.deliver = None
