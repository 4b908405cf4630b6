"""The cross-node ride push port: a backend node tells the others which rides it committed changes to, so
each can load them from the shared storage and run its own sync connections of those rides.

`publish(rides)` is called only after the changes are committed (Backend awaits the store's flush first):
a node that hears it and reads the storage finds them there. It never blocks and never raises; while the
transport is down, announcements are dropped, not queued (a node that missed one catches up at the ride's
next announcement, and a device that reconnects is served from the storage anyway). `run(notify)` sends
what `publish` handed over and calls `notify(origin, rides)` for other nodes' announcements, never its own,
until cancelled; and `notify(origin, [])` each time its link to the others is (re)established, since
announcements may have been missed while it was down: the owner then catches up on what it has open.

Implementations (chosen by `BackendConfig.push_url`, `ridesync serve --push URL`):
- `NoPush`: one node, the default (SQLite): nothing to tell anyone.
- `LocalPushBus`: several backends in one process (tests of the port, the in-process bench).
- `redis_push.RedisPush`: Redis pub/sub between processes (docs/scaling.md says why not LISTEN/NOTIFY).
Every one passes tests/contracts/test_ride_push_port.py.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

Notify = Callable[[str, Sequence[str]], None]


@dataclass(slots=True)
class PushStats:
    messages_published: int = 0
    rides_published: int = 0
    dropped: int = 0  # announcements handed over while the transport was down, or lost with a failed send
    messages_received: int = 0
    rides_received: int = 0
    malformed_ignored: int = 0
    connects: int = 0  # successful (re)connections of the sender and subscriptions of the receiver
    last_error: str = ""

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


def new_origin() -> str:
    return "node-" + secrets.token_hex(6)


class RidePush(Protocol):
    origin: str
    stats: PushStats

    def publish(self, rides: Collection[str]) -> None:
        """Announce that these rides' changes are committed; never blocks, never raises."""

    async def run(self, notify: Notify) -> None:
        """Send what `publish` handed over and hear the other nodes until cancelled."""

    async def ready(self) -> None:
        """Return once announcements both go out and come in (tests wait for it before measuring)."""


class NoPush:
    """A single node: every connection of every ride is on this process, which pushes to them directly."""

    def __init__(self, origin: str | None = None) -> None:
        self.origin = origin or new_origin()
        self.stats = PushStats()

    def publish(self, rides: Collection[str]) -> None:
        pass

    async def run(self, notify: Notify) -> None:
        await asyncio.Event().wait()  # nothing to hear; lives as long as its owner's task group

    async def ready(self) -> None:
        pass


class LocalPushBus:
    """Several backends in one process: every member hears the others' announcements on the event loop
    (deferred with call_soon, as a broker would deliver them, never inside the publisher's call)."""

    def __init__(self) -> None:
        self._members: list[LocalPush] = []

    def member(self, origin: str | None = None) -> LocalPush:
        push = LocalPush(self, origin or f"local-{len(self._members)}")
        self._members.append(push)
        return push

    def deliver(self, sender: LocalPush, rides: list[str]) -> None:
        for member in self._members:
            if member is not sender and member.notify is not None:
                member.stats.messages_received += 1
                member.stats.rides_received += len(rides)
                asyncio.get_running_loop().call_soon(member.notify, sender.origin, rides)


class LocalPush:
    def __init__(self, bus: LocalPushBus, origin: str) -> None:
        self._bus = bus
        self.origin = origin
        self.stats = PushStats()
        self.notify: Notify | None = None
        self._running = asyncio.Event()

    def publish(self, rides: Collection[str]) -> None:
        if not rides:
            return
        if self.notify is None:
            self.stats.dropped += 1
            return
        self.stats.messages_published += 1
        self.stats.rides_published += len(rides)
        self._bus.deliver(self, sorted(set(rides)))

    async def run(self, notify: Notify) -> None:
        self.notify = notify
        self.stats.connects += 1
        self._running.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.notify = None
            self._running.clear()

    async def ready(self) -> None:
        await self._running.wait()
