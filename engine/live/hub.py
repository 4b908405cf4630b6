"""The class hub's I/O: owns the per-class fan-out planners, schedules each class's flushes, writes frames.

A class flushes `tick_interval` after its first change since its previous flush: no change waits longer
than that, and the classes' flushes spread over time instead of piling into one global tick (which would
add the whole tick's sending time to everyone's latency). The interval adapts to load: short when idle,
stretched so that the hub uses about `cpu_budget` of a core (flush_control.py). One asyncio task group owns
the controller, the staleness sweep, the leaderboard loop, the optional relay and any kick (stalled-peer
close) tasks; cancelling `run()` stops them all and cancels the pending flushes. A flush writes one shared,
pre-framed bytes object to every peer that kept up, straight to its socket when nothing is buffered; a peer
that cannot take it is skipped without awaiting anything, so it never delays the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import zlib
from collections.abc import Sequence

from aiohttp import web

from engine.live.config import HubConfig
from engine.live.connection import Connection
from engine.live.fanout import ClassFanout, Peer, Plan
from engine.live.flush_control import FlushController
from engine.live.ingest import Ingest
from engine.live.port import Entry, HubBase
from engine.live.relay import Join, Leave, Relay, RelayEvent, Roster
from engine.live.rfc6455 import HandshakeError, accept_handshake
from engine.live.wire import BATCH_PROTOCOL, CLOSE_STALLED, HelloIn, InboundEvent, SampleIn

log = logging.getLogger(__name__)


class Hub(HubBase):
    """The coalescing hub (docs/architecture.md#the-live-lane)."""

    impl = "coalescing"

    def __init__(self, config: HubConfig | None = None, relay: Relay | None = None) -> None:
        super().__init__(config or HubConfig())
        self.classes: dict[str, ClassFanout] = {}
        self._dirty: set[str] = set()  # marked before run() started
        self._tg: asyncio.TaskGroup | None = None
        self._relay = relay
        self._outbox: dict[str, list[RelayEvent]] = {}
        self._flush: asyncio.TimerHandle | None = None
        # Riders that other hub processes hold: class -> origin -> devices, and when each origin was last
        # heard from about each class (its rosters keep that fresh).
        self._remote: dict[str, dict[str, set[str]]] = {}
        self._heard: dict[tuple[str, str], float] = {}
        # Per-class flushing: a class's changes go out `tick_interval` after the first one since its last
        # flush (so nothing waits longer than that, and the classes' flushes spread over time instead of
        # piling into one tick). The interval adapts to load (_control_loop).
        self.tick_interval = self.config.min_tick_s
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _class(self, class_id: str) -> ClassFanout:
        fan = self.classes.get(class_id)
        if fan is None:
            fan = self.classes[class_id] = ClassFanout(class_id, self.config)
        return fan

    def _mark(self, class_id: str) -> None:
        # (A pending retry for lagging peers may be later than this; _schedule keeps the earlier one.)
        self._schedule(class_id, self.tick_interval)

    # --- called by the routes ---------------------------------------------------------------------------

    async def serve_socket(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        """The connection speaks WebSocket itself (engine/live/ingest.py says why): aiohttp answers the
        upgrade, then hands every byte the client sends to an `Ingest`."""
        try:
            shake = accept_handshake(request.headers, (BATCH_PROTOCOL,))
        except HandshakeError as exc:
            return web.json_response({"error": "bad_handshake", "detail": str(exc)}, status=400)
        resp = web.StreamResponse(status=101, headers=shake.headers)
        resp.force_close()
        try:
            await resp.prepare(request)
        except ConnectionError:
            return resp  # the client vanished during the upgrade; aiohttp finishes quietly
        conn = Connection(entry.transport, self.config)
        async with entry.register(conn):
            ingest = Ingest(
                conn,
                self,
                entry.class_id,
                entry.claims.device,
                publishing=entry.publishing,
                max_msg=self.config.max_msg_bytes,
            )
            # (The same seam aiohttp's WebSocketResponse plugs its reader into; anything the client sent
            # before this point was kept by aiohttp and is fed now.)
            request.protocol.set_parser(ingest)  # type: ignore[arg-type]
            await conn.attention
            if conn.close_request is not None:
                await conn.close(*conn.close_request)
        return resp

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
            slots = self._class(class_id).slots
            others = any(s.present and s.device != device for s in slots.riders.values())
            self.riders.joined(class_id, others)
            slot = slots.join(device, time.time())
            known = self.riders.identity(class_id, device)
            if known is not None:
                # A rider seen before (in this class, even before a restart) keeps its name and zones.
                slot.name = known.name if known.name is not None else slot.name
                slot.max_hr = known.max_hr if known.max_hr is not None else slot.max_hr
                slot.bike = known.bike if known.bike is not None else slot.bike
                slot._fragment = None
            self._mark(class_id)
            self._relay_event(class_id, Join(device))
            log.info("rider joined", extra={"class_id": class_id, "device": device})

    def rider_leave(self, class_id: str, device: str) -> None:
        if self._count_publisher(class_id, device, -1) == 0:
            self._relay_event(class_id, Leave(device))
            # The rider stays present while another hub process still holds one of its connections.
            if not self._held_remotely(class_id, device):
                self._leave(class_id, device)
            self.riders.left(class_id)
            log.info("rider left", extra={"class_id": class_id, "device": device})

    async def publish(self, class_id: str, event: InboundEvent) -> None:
        self.publish_now(class_id, event)

    def publish_now(self, class_id: str, event: InboundEvent) -> None:
        if self.apply(class_id, event):
            self._relay_event(class_id, event)

    def apply(self, class_id: str, event: InboundEvent) -> bool:
        if isinstance(event, HelloIn):
            self.riders.remember(class_id, event.device, event.name, event.max_hr, event.bike)
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
            pending = self._timers.pop(class_id, None)
            if pending is not None:
                pending[1].cancel()

    # --- the loops ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._control_loop(), name="live-flush-control")
                tg.create_task(self._sweep_loop(), name="live-sweep")
                tg.create_task(self._leaderboard_loop(), name="live-leaderboard")
                if self._relay is not None:
                    tg.create_task(self._relay.run(self.deliver_remote), name="live-relay")
        finally:
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            for _when, handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            self._loop = None

    def snapshot(self, class_id: str) -> tuple[dict[str, object], object]:
        fan = self.classes.get(class_id)
        if fan is None:
            return {}, None
        riders: dict[str, object] = {s.device: s.record() for s in fan.slots.changed_since(0)}
        leaderboard = json.loads(fan.leaderboard.full_frame) if fan.leaderboard.seq else None
        return riders, leaderboard

    def stats_details(self) -> dict[str, object]:
        out: dict[str, object] = {
            "classes": len(self.classes),
            "tick_interval_s": round(self.tick_interval, 4),
        }
        relay = self.relay_stats()
        if relay is not None:
            out["relay"] = relay
        return out

    def flush_delay(self) -> float | None:
        return self.tick_interval

    def relay_stats(self) -> dict[str, object] | None:
        stats = getattr(self._relay, "stats", None)
        to_json = getattr(stats, "to_json", None)
        if not callable(to_json):
            return None
        out: dict[str, object] = to_json()
        out["remote_riders"] = sum(len(h) for c in self._remote.values() for h in c.values())
        return out

    def _schedule(self, class_id: str, delay: float) -> None:
        loop = self._loop
        if loop is None:
            # Not running (yet, or any more): run() flushes whatever is pending when it starts.
            self._dirty.add(class_id)
            return
        when = loop.time() + delay
        pending = self._timers.get(class_id)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[class_id] = (when, loop.call_at(when, self._flush_class, class_id))

    async def _control_loop(self) -> None:
        """Adapt the flush delay to load (engine/live/flush_control.py). Process CPU time, not wall time
        (being preempted on a shared machine is not work), over short windows."""
        cfg = self.config
        for class_id in list(self._dirty):
            self._schedule(class_id, 0.0)
        self._dirty.clear()
        loop = asyncio.get_running_loop()
        control = FlushController(cfg)
        late_once = False
        last_cpu, last_t = time.process_time(), loop.time()
        while True:
            await asyncio.sleep(cfg.control_s)
            cpu, now_t = time.process_time(), loop.time()
            window = now_t - last_t
            if window <= 0:
                continue
            # Woken late: the event loop is behind (short of CPU, or starved of it by other processes, when
            # the CPU share alone would look fine) and every sample waits for it.
            # Twice in a row: once is a hiccup (a preemption, a GC pass) that a longer delay would not mend.
            late_once, was_late = window - cfg.control_s > _LOOP_BEHIND_S, late_once
            share = (cpu - last_cpu) / window
            last_cpu, last_t = cpu, now_t
            self.tick_interval = control.step(share, late_once and was_late)

    def _flush_class(self, class_id: str) -> None:
        self._timers.pop(class_id, None)
        fan = self.classes.get(class_id)
        if fan is None:
            return
        t0 = time.perf_counter()
        now = time.time()
        stats = self.stats
        try:
            fl = fan.flush(now, _writable)
            sent = 0
            if fl.wire is not None and fl.current:
                missed = _write_shared(fl.current, fl.wire, self.config.peer_buffer_limit)
                sent = len(fl.current) - len(missed)
                if missed:
                    fan.missed(fl, missed, now)
                    stats.peer_skips += len(missed)
                stats.deliveries += sent * len(fl.shared)
                for slot in fl.shared:
                    m = slot.metrics.get("hr")
                    if m is not None and m.state == "live":
                        stats.latency_s.observe(now - m.t)
            stats.frames_sent += sent
            stats.deliveries += fl.catch_up_deliveries
            stats.peer_skips += fl.skipped
            self._execute(Plan(sends=fl.sends, kicks=fl.kicks))
            stats.superseded += fan.slots.superseded
            fan.slots.superseded = 0
        except Exception:
            # A bug on one flush must not end the live lane for every class; it is logged loudly.
            log.exception("live flush failed", extra={"class_id": class_id})
        stats.ticks += 1
        stats.tick_s.observe(time.perf_counter() - t0)
        if fan.behind and class_id in self.classes:
            # Only lagging peers are left to retry: poll them at a relaxed pace rather than spinning.
            self._schedule(class_id, max(self.tick_interval, 0.05))

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
            for fan in self.classes.values():
                if peer.peer_id in fan.peers:
                    fan.remove_peer(peer)
            link: Connection = peer.link
            if link.closing or link.close_request is not None:
                continue  # already being closed (by the connection watchdog, or at its own request)
            self.stats.stalls_disconnected += 1
            log.info("peer stalled, disconnecting", extra={"device": peer.device, "peer": peer.peer_id})
            reason = f"stalled: not reading for more than {self.config.stall_limit_s:g} s"
            if self._tg is not None:
                self._tg.create_task(link.close(CLOSE_STALLED, reason))

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
                    # With the class's next flush (within one flush delay), in the same writes.
                    fan.leaderboard_due = True
                    self._schedule(class_id, self.tick_interval)
            for class_id in [c for c in due if c not in self.classes]:
                del due[class_id]


_LOOP_BEHIND_S = 0.05  # the controller's timer firing this late means the event loop is behind


def _write_shared(peers: list[Peer], wire: bytes, limit: int) -> list[Peer]:
    """Write one shared frame to every peer in `peers`; return those that could not take it.

    The hot loop of the hub (one iteration per frame sent), so it is written flat: no per-peer calls
    beyond the transport's own two getters. With nothing buffered in the transport the frame goes straight
    to the socket (what transport.write would do, minus its Python overhead); otherwise through the
    transport, after what is already buffered, as long as that is under `limit`.
    """
    missed: list[Peer] = []
    n = len(wire)
    write = os.write
    for peer in peers:
        conn: Connection = peer.link
        t = conn.transport
        if conn.closing or t.is_closing():
            missed.append(peer)
            continue
        size = t.get_write_buffer_size()
        if size == 0 and conn.fd >= 0:
            try:
                sent = write(conn.fd, wire)
            except OSError:
                # Would block, or a dead peer: the transport buffers it or meets the error on its own terms.
                sent = 0
            if sent != n:
                t.write(wire[sent:] if sent else wire)
        elif size <= limit:
            t.write(wire)
        else:
            missed.append(peer)
    return missed


def _writable(peer: Peer) -> bool:
    conn: Connection = peer.link
    return conn.writable()
