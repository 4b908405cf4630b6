"""The seam for multi-process fan-out (DESIGN §2: Redis pub/sub), not implemented yet.

A hub process that accepts a publisher's sample applies it locally and hands the tick's accepted events
of each class to `Relay.publish` as one batch (one PUBLISH per class per tick, not one per sample: redis-py
costs ~15 µs per PUBLISH). Every hub process runs `Relay.run(deliver)`, which calls `deliver(class_id,
events)` for batches from other processes; the hub applies them to its slots exactly like local samples,
so its own peers see every rider of the class whatever process the rider is connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from engine.live.wire import InboundEvent

Deliver = Callable[[str, Sequence[InboundEvent]], None]


class Relay(Protocol):
    async def publish(self, class_id: str, events: Sequence[InboundEvent]) -> None:
        """Send one tick's accepted events of one class to the other hub processes."""

    async def run(self, deliver: Deliver) -> None:
        """Receive other processes' batches until cancelled."""


class LocalBus:
    """An in-process stand-in for Redis pub/sub: every relay attached to the bus hears the others.

    It exists to exercise the relay seam (several hubs in one test process); it is not a deployment option.
    """

    def __init__(self) -> None:
        self._members: list[LocalRelay] = []

    def relay(self) -> LocalRelay:
        member = LocalRelay(self)
        self._members.append(member)
        return member

    def broadcast(self, sender: LocalRelay, class_id: str, events: Sequence[InboundEvent]) -> None:
        for member in self._members:
            if member is not sender and member.deliver is not None:
                member.deliver(class_id, list(events))


class LocalRelay:
    def __init__(self, bus: LocalBus) -> None:
        self._bus = bus
        self.deliver: Deliver | None = None
        self.batches_published = 0

    async def publish(self, class_id: str, events: Sequence[InboundEvent]) -> None:
        self.batches_published += 1
        self._bus.broadcast(self, class_id, events)

    async def run(self, deliver: Deliver) -> None:
        self.deliver = deliver
        try:
            await asyncio.Event().wait()
        finally:
            self.deliver = None
