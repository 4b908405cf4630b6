"""The port every class hub implements (`LiveHub`), what the routes hand a hub to serve one socket
(`Entry`), and the bookkeeping every hub shares (`HubBase`).

The routes, the live lane and the benchmark speak only to `LiveHub`: the coalescing hub
(engine/live/hub.py) is the production one; the benchmark's naive baseline (engine/bench/naive_hub.py)
plugs into the same lane through the same port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from engine.auth.tokens import Claims
from engine.live.config import HubConfig
from engine.live.connection import Connection
from engine.live.fanout import Peer
from engine.live.metrics import HubStats
from engine.live.riders import RiderBook
from engine.live.wire import InboundEvent


@dataclass(frozen=True, slots=True)
class Entry:
    """An authenticated, authorised request for a class socket, as the routes hand it to the hub.

    `register(conn)` is the connection's membership for as long as its body runs (a rider while it
    publishes, a peer while it subscribes, closable at shutdown, no longer than its token); it yields the
    peer when the connection subscribes."""

    class_id: str
    claims: Claims
    mode: str
    transport: asyncio.Transport
    register: Callable[[Connection], AbstractAsyncContextManager[Peer | None]]

    @property
    def publishing(self) -> bool:
        return self.mode != "sub"


class LiveHub(Protocol):
    """What the routes need from a hub; the coalescing hub and the benchmark's naive baseline provide it."""

    # What /live/v1/stats calls this hub ("coalescing", or the benchmark's "naive").
    impl: str
    config: HubConfig
    stats: HubStats
    riders: RiderBook

    def connections(self) -> dict[str, int]: ...

    def opened(self, mode: str) -> None: ...

    def closed(self, mode: str) -> None: ...

    async def run(self) -> None: ...

    async def serve_socket(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        """Upgrade `request` to the class WebSocket and serve it until it ends, inside
        `entry.register(conn)`."""
        ...

    def attach(self, class_id: str, conn: Connection, device: str, role: str) -> Peer: ...

    def detach(self, class_id: str, peer: Peer) -> None: ...

    def rider_join(self, class_id: str, device: str) -> None: ...

    def rider_leave(self, class_id: str, device: str) -> None: ...

    async def publish(self, class_id: str, event: InboundEvent) -> None: ...

    def snapshot(self, class_id: str) -> tuple[dict[str, object], object]:
        """The class as a fresh subscriber first sees it: rider records by device, and the full
        leaderboard frame as JSON (None when there is none)."""
        ...

    def stats_details(self) -> dict[str, object]:
        """What this hub adds to `/live/v1/stats` beyond its counters."""
        ...

    def flush_delay(self) -> float | None:
        """The current flush delay in seconds; None for a hub that does not coalesce."""
        ...

    def relay_stats(self) -> dict[str, object] | None: ...


class HubBase:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.stats = HubStats()
        self._conns: dict[str, int] = {}
        self._publishers: dict[tuple[str, str], int] = {}
        self._next_peer = 0
        # Riders' names, max HRs and bikes, and when each class started, kept across restarts (riders.py).
        self.riders = RiderBook()

    def connections(self) -> dict[str, int]:
        return dict(self._conns)

    def opened(self, mode: str) -> None:
        self._conns[mode] = self._conns.get(mode, 0) + 1

    def closed(self, mode: str) -> None:
        self._conns[mode] = self._conns.get(mode, 0) - 1

    def _new_peer(self, conn: Connection, device: str, role: str) -> Peer:
        self._next_peer += 1
        return Peer(self._next_peer, device, role, link=conn)

    def _count_publisher(self, class_id: str, device: str, delta: int) -> int:
        # The same bike may briefly hold two connections while it reconnects: it leaves when the last goes.
        key = (class_id, device)
        n = self._publishers.get(key, 0) + delta
        if n <= 0:
            self._publishers.pop(key, None)
            return 0
        self._publishers[key] = n
        return n
