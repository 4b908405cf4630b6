"""The class hub's I/O: owns the per-class fan-out planners, runs the adaptive tick, writes the frames.

One asyncio task group owns the tick loop, the staleness sweep, the leaderboard loop, the optional relay
and any kick (stalled-peer close) tasks; cancelling `run()` stops them all. Frames are written straight to
each peer's transport: a peer that keeps up costs one `transport.write` of a shared, pre-framed bytes
object per tick; a peer that does not is skipped without awaiting anything, so it never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import zlib
from collections.abc import Sequence
from typing import Protocol

from aiohttp import web

from engine.live.config import HubConfig
from engine.live.fanout import ClassFanout, Peer, Plan
from engine.live.metrics import HubStats
from engine.live.relay import Join, Leave, Relay, RelayEvent, Roster
from engine.live.wire import InboundEvent, SampleIn

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_MALFORMED = 4400
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_STALLED = 4408


class Connection:
    """One peer's socket as the hub sees it: can it take a frame now, write one, close with a reason."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, config: HubConfig) -> None:
        self.ws = ws
        self.transport = transport
        self.buffer_limit = config.peer_buffer_limit
        sock = transport.get_extra_info("socket")
        # Fast path: with nothing buffered in the transport, send on the socket directly (what
        # transport.write would do, minus its Python overhead, which is a fifth of a frame's cost). Only on
        # plain TCP: under TLS the socket carries ciphertext and every byte must go through the transport.
        # (asyncio hands out a restricted socket wrapper; its fd is ours to write while the transport is open,
        # and `is_closing()` turns true before asyncio ever closes that fd.)
        self._fd = -1
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = sock.fileno()
        if sock is not None and config.peer_sndbuf > 0:
            # A small kernel send buffer keeps the bytes in flight to a stalled peer (which it will read as
            # a backlog when it resumes) small, and makes the stall visible to us quickly.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.peer_sndbuf)

    def writable(self) -> bool:
        t = self.transport
        return not t.is_closing() and t.get_write_buffer_size() <= self.buffer_limit

    def write(self, wire: bytes) -> None:
        t = self.transport
        if self._fd >= 0 and not t.get_write_buffer_size() and not t.is_closing():
            try:
                sent = os.write(self._fd, wire)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                # Let the transport meet the error on its own terms (it closes and reports it).
                sent = 0
            if sent == len(wire):
                return
            wire = wire[sent:]
        t.write(wire)

    async def close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(2.0):
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, OSError, RuntimeError):
            pass
        finally:
            # A stalled peer may never read our close frame: do not let it hold the socket open.
            if not self.transport.is_closing():
                self.transport.abort()


class LiveHub(Protocol):
    """What the routes need from a hub; the coalescing hub and the naive baseline both provide it."""

    stats: HubStats

    def connections(self) -> dict[str, int]: ...

    def opened(self, mode: str) -> None: ...

    def closed(self, mode: str) -> None: ...

    async def run(self) -> None: ...

    def attach(self, class_id: str, conn: Connection, device: str, role: str) -> Peer: ...

    def detach(self, class_id: str, peer: Peer) -> None: ...

    def rider_join(self, class_id: str, device: str) -> None: ...

    def rider_leave(self, class_id: str, device: str) -> None: ...

    async def publish(self, class_id: str, event: InboundEvent) -> None: ...


class HubBase:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.stats = HubStats()
        self._conns: dict[str, int] = {}
        self._publishers: dict[tuple[str, str], int] = {}
        self._next_peer = 0

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


class Hub(HubBase):
    """The coalescing hub (DESIGN §5)."""

    def __init__(self, config: HubConfig | None = None, relay: Relay | None = None) -> None:
        super().__init__(config or HubConfig())
        self.classes: dict[str, ClassFanout] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._relay = relay
        self._outbox: dict[str, list[RelayEvent]] = {}
        self._flush: asyncio.TimerHandle | None = None
        # Riders that other hub processes hold: class -> origin -> devices, and when each origin was last
        # heard from about each class (its rosters keep that fresh).
        self._remote: dict[str, dict[str, set[str]]] = {}
        self._heard: dict[tuple[str, str], float] = {}
        self.tick_interval = self.config.min_tick_s

    def _class(self, class_id: str) -> ClassFanout:
        fan = self.classes.get(class_id)
        if fan is None:
            fan = self.classes[class_id] = ClassFanout(class_id, self.config)
        return fan

    def _mark(self, class_id: str) -> None:
        self._dirty.add(class_id)
        if not self._wake.is_set():
            self._wake.set()

    # --- called by the routes ---------------------------------------------------------------------------

    def attach(self, class_id: str, conn: Connection, device: str, role: str) -> Peer:
        peer = self._new_peer(conn, device, role)
        self._class(class_id).add_peer(peer)
        self._mark(class_id)
        return peer

    def detach(self, class_id: str, peer: Peer) -> None:
        fan = self.classes.get(class_id)
        if fan is not None:
            fan.remove_peer(peer)
            self._maybe_forget(class_id)

    def rider_join(self, class_id: str, device: str) -> None:
        if self._count_publisher(class_id, device, +1) == 1:
            self._class(class_id).slots.join(device, time.time())
            self._mark(class_id)
            self._relay_event(class_id, Join(device))
            log.info("rider joined", extra={"class_id": class_id, "device": device})

    def rider_leave(self, class_id: str, device: str) -> None:
        if self._count_publisher(class_id, device, -1) == 0:
            self._relay_event(class_id, Leave(device))
            # The rider stays present while another hub process still holds one of its connections.
            if not self._held_remotely(class_id, device):
                self._leave(class_id, device)
            log.info("rider left", extra={"class_id": class_id, "device": device})

    async def publish(self, class_id: str, event: InboundEvent) -> None:
        if self.apply(class_id, event):
            self._relay_event(class_id, event)

    def apply(self, class_id: str, event: InboundEvent) -> bool:
        if self._class(class_id).slots.apply(event, time.time()):
            if isinstance(event, SampleIn):
                self.stats.samples_in += 1
            self._mark(class_id)
            return True
        return False

    def _join(self, class_id: str, device: str, now: float) -> None:
        slots = self._class(class_id).slots
        slot = slots.riders.get(device)
        if slot is None or not slot.present:
            slots.join(device, now)
            self._mark(class_id)

    def _leave(self, class_id: str, device: str) -> None:
        fan = self.classes.get(class_id)
        if fan is not None:
            fan.slots.leave(device, time.time())
            self._mark(class_id)

    # --- the relay (several hub processes sharing classes) ----------------------------------------------

    def _relay_event(self, class_id: str, event: RelayEvent) -> None:
        if self._relay is not None:
            self._outbox.setdefault(class_id, []).append(event)
            if self._flush is None:
                # Not on the fan-out tick: that stretches under load, and a remote peer would then wait for
                # this hub's tick and its own hub's tick in a row. A short fixed window still makes one
                # message of many samples.
                self._flush = asyncio.get_running_loop().call_later(
                    self.config.relay_flush_s, self._flush_relay
                )

    def _flush_relay(self) -> None:
        self._flush = None
        outbox, self._outbox = self._outbox, {}
        if self._relay is not None:
            for class_id, events in outbox.items():
                self._relay.publish(class_id, events)

    def _held_remotely(self, class_id: str, device: str) -> bool:
        return any(device in held for held in self._remote.get(class_id, {}).values())

    def _release(self, class_id: str, origin: str, device: str) -> None:
        """`origin` no longer holds `device`: it leaves unless someone else (or this process) holds it."""
        held = self._remote.get(class_id, {}).get(origin)
        if held is not None:
            held.discard(device)
        if (class_id, device) not in self._publishers and not self._held_remotely(class_id, device):
            self._leave(class_id, device)

    def deliver_remote(self, class_id: str, origin: str, events: Sequence[RelayEvent]) -> None:
        """A batch another hub process published through the relay."""
        now = time.time()
        self._heard[(class_id, origin)] = now
        held = self._remote.setdefault(class_id, {}).setdefault(origin, set())
        for event in events:
            if isinstance(event, Join):
                held.add(event.device)
                self._join(class_id, event.device, now)
            elif isinstance(event, Leave):
                self._release(class_id, origin, event.device)
            elif isinstance(event, Roster):
                devices = set(event.devices)
                for device in held - devices:
                    self._release(class_id, origin, device)
                for device in devices - held:
                    held.add(device)
                    self._join(class_id, device, now)
            else:
                # A sample from a rider whose join this process missed (it started later, or the broker
                # dropped it) still means that hub holds the rider.
                held.add(event.device)
                self.apply(class_id, event)

    def _relay_housekeeping(self, now: float) -> None:
        """Announce this process's riders; forget the riders of hubs not heard from (crashed, cut off)."""
        if self._relay is None:
            return
        rosters: dict[str, list[str]] = {}
        for class_id, device in self._publishers:
            rosters.setdefault(class_id, []).append(device)
        for class_id, devices in rosters.items():
            self._relay_event(class_id, Roster(tuple(sorted(devices))))
        expire = self.config.relay_expire_s
        for (class_id, origin), heard in list(self._heard.items()):
            if now - heard <= expire:
                continue
            del self._heard[(class_id, origin)]
            origins = self._remote.get(class_id, {})
            for device in list(origins.get(origin, ())):
                self._release(class_id, origin, device)
            origins.pop(origin, None)
            if not origins:
                self._remote.pop(class_id, None)
            log.warning(
                "relay: no news from a hub, its riders left", extra={"class_id": class_id, "origin": origin}
            )

    def _maybe_forget(self, class_id: str) -> None:
        fan = self.classes.get(class_id)
        if fan is not None and not fan.peers and not any(s.present for s in fan.slots.riders.values()):
            del self.classes[class_id]
            self._dirty.discard(class_id)

    # --- the loops ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._tick_loop(), name="live-tick")
                tg.create_task(self._sweep_loop(), name="live-sweep")
                tg.create_task(self._leaderboard_loop(), name="live-leaderboard")
                if self._relay is not None:
                    tg.create_task(self._relay.run(self.deliver_remote), name="live-relay")
        finally:
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None

    def relay_stats(self) -> dict[str, object] | None:
        stats = getattr(self._relay, "stats", None)
        to_json = getattr(stats, "to_json", None)
        if not callable(to_json):
            return None
        out: dict[str, object] = to_json()
        out["remote_riders"] = sum(len(h) for c in self._remote.values() for h in c.values())
        return out

    async def _tick_loop(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        last = 0.0
        smoothed = -1.0
        while True:
            if not self._dirty:
                self._wake.clear()
                await self._wake.wait()
            # Coalescing window: the next tick starts no sooner than one interval after the previous one.
            delay = last + self.tick_interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last = loop.time()
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self._tick()
            except Exception:
                # A bug on one tick must not end the live lane for every class; it is logged loudly.
                log.exception("live tick failed")
            self.stats.ticks += 1
            self.stats.tick_s.observe(time.perf_counter() - t0)
            # Adaptive tick: sending may take at most `duty` of the hub's CPU; idle ticks are short. The cost
            # is CPU time (being preempted on a shared machine is not work) and smoothed, so one slow tick
            # does not stretch the next interval and spike everyone's latency.
            cpu = time.thread_time() - c0
            smoothed = cpu if smoothed < 0 else smoothed + 0.2 * (cpu - smoothed)
            interval = min(cfg.max_tick_s, max(cfg.min_tick_s, smoothed / cfg.duty))
            if self._dirty:
                # Only lagging peers are left to retry: poll them at a relaxed pace rather than spinning.
                interval = max(interval, 0.05)
            self.tick_interval = interval

    def _tick(self) -> None:
        now = time.time()
        dirty, self._dirty = self._dirty, set()
        stats = self.stats
        for class_id in dirty:
            fan = self.classes.get(class_id)
            if fan is None:
                continue
            plan = fan.plan_tick(now, _writable)
            self._execute(plan)
            if plan.shared:
                for slot in plan.shared:
                    m = slot.metrics.get("hr")
                    if m is not None and m.state == "live":
                        stats.latency_s.observe(now - m.t)
            stats.superseded += fan.slots.superseded
            fan.slots.superseded = 0
            if fan.behind:
                self._dirty.add(class_id)

    def _execute(self, plan: Plan) -> None:
        stats = self.stats
        for peer, wire in plan.sends:
            conn: Connection = peer.link
            try:
                conn.write(wire)
            except Exception:
                log.exception("write to peer failed", extra={"device": peer.device})
                continue
            stats.frames_sent += 1
        stats.deliveries += plan.deliveries
        stats.peer_skips += plan.skipped
        for peer in plan.kicks:
            self.stats.stalls_disconnected += 1
            for fan in self.classes.values():
                if peer.peer_id in fan.peers:
                    fan.remove_peer(peer)
            log.warning("peer stalled, disconnecting", extra={"device": peer.device, "peer": peer.peer_id})
            reason = f"stalled: not reading for more than {self.config.stall_limit_s:g} s"
            if self._tg is not None:
                self._tg.create_task(peer.link.close(CLOSE_STALLED, reason))

    async def _sweep_loop(self) -> None:
        forget_after = self.config.stall_limit_s + 5.0
        roster_due = 0.0
        while True:
            await asyncio.sleep(self.config.sweep_s)
            now = time.time()
            if now >= roster_due:
                roster_due = now + self.config.relay_roster_s
                self._relay_housekeeping(now)
            for class_id, fan in list(self.classes.items()):
                if fan.slots.sweep(now, forget_after):
                    self._mark(class_id)
                self._maybe_forget(class_id)

    async def _leaderboard_loop(self) -> None:
        due: dict[str, float] = {}
        while True:
            await asyncio.sleep(min(0.25, self.config.leaderboard_s / 4))
            now = time.time()
            for class_id, fan in list(self.classes.items()):
                at = due.get(class_id)
                if at is None:
                    # Spread classes over the interval (by a stable hash of the id) so their leaderboards do
                    # not all go out on the same loop turn and delay every class's live frames at once.
                    interval = self.config.leaderboard_interval(class_id)
                    due[class_id] = now + interval * (1 + (zlib.crc32(class_id.encode()) % 1000) / 1000)
                    continue
                if now >= at:
                    due[class_id] = at + self.config.leaderboard_interval(class_id)
                    if due[class_id] < now:
                        due[class_id] = now + self.config.leaderboard_interval(class_id)
                    self._execute(fan.plan_leaderboard(now, _writable))
            for class_id in [c for c in due if c not in self.classes]:
                del due[class_id]


def _writable(peer: Peer) -> bool:
    conn: Connection = peer.link
    return conn.writable()
