"""Running the demo: the backend in-process, tokens, and per rider both lanes fed by its sensors.

    async with running_demo(DemoConfig(riders=8, speed=10), rig) as demo:
        print(demo.dashboard_url)
        await asyncio.sleep(60)
        await demo.end_rides()  # the durable lane: end every ride, wait (bounded) until reconciled

Per rider, the same readings go to a `LivePublisher` (live lane, to the class hub) and to a bike replica
(`engine.device.bike.BikeRide`, durable lane: its own store under DATA/replicas/, synced to the in-process
backend). Everything long-running belongs to one TaskGroup inside the context; leaving it cancels the
publishers, replicas, pumps and the monitor, closes the sensors (the rig's ptys and radio) and the
replicas' stores, then shuts the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from engine.auth.tokens import KeyRing, Role
from engine.backend.routes import setup_backend
from engine.backend.state import BACKEND
from engine.bike_kinds import bike_kind_of
from engine.chaos.proxy import ChaosProxy
from engine.dashboard.directory import RIDES
from engine.dashboard.routes import setup_dashboard
from engine.demo.monitor import ClassMonitor, OnValue
from engine.demo.roster import RiderSpec, make_roster
from engine.demo.sensors import RiderSensors, SensorRig
from engine.demo.victims import DEFAULT_CHAOS_SEED, chaos_victims
from engine.device.bike import BikeOptions, BikeRide
from engine.device.common import own_doc
from engine.live.config import HubConfig
from engine.live.lane import live_lane
from engine.live.publisher import LivePublisher
from engine.live.wire import METRIC_KEYS
from engine.readings import Reading, SensorSource, SourceEvent, SourceState
from engine.server.app import build_app
from engine.server.config import ServerConfig
from engine.server.guard import GuardedRunner
from engine.server.lane import Lane

log = logging.getLogger(__name__)

DEFAULT_PORT = 8750
# A pump whose source raised (an adapter bug, not a sensor fault: those are states) restarts after this.
PUMP_RESTART_S = 1.0


@dataclass(frozen=True, slots=True)
class DemoConfig:
    riders: int = 8
    speed: float = 1.0
    class_id: str = "demo-class"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port; a taken port falls back to a free one
    data_dir: Path | None = None  # None: a temporary directory, removed at the end
    stale_after_s: float = 3.0
    leaderboard_s: float = 3.0
    seed: int = 2026
    start_at_s: int = 0  # join the class this many (simulated) seconds in: past the warm-up, say
    mix: bool = False  # every kind of bike: Peloton-bus, DIY line sensors and BLE bikes (roster.MIX)
    token_ttl_s: float = 7 * 86400.0
    # The durable lane: the bike replicas' bounded wait at the end (end POST, then reconciliation), and
    # their reconnect backoff cap (a class is short: 5 s rather than a bike's 30).
    sync_timeout_s: float = 30.0
    retry_cap_s: float = 5.0
    # False: the live lane only, no backend sync endpoint (a test serving its own /v1/rides stand-in).
    durable_lane: bool = True
    # --chaos: the network victim's replica (victims.chaos_victims with chaos_seed) syncs through a
    # ChaosProxy (engine/chaos) in front of the backend, so its durable-lane network can be dropped and
    # restored (`DemoSession.proxy`).
    chaos: bool = False
    chaos_seed: int = DEFAULT_CHAOS_SEED


@dataclass(slots=True)
class SensorCounters:
    source: str = ""
    readings: Counter[str] = field(default_factory=Counter)  # by kind
    states: Counter[str] = field(default_factory=Counter)  # by SourceState
    reconnects: int = 0  # links lost and re-established (BLE disconnects, unplugged serial)
    errors: int = 0  # pump restarts after an unexpected exception

    def count(self, item: Reading | SourceEvent) -> None:
        if isinstance(item, Reading):
            self.readings[item.kind.value] += 1
            return
        self.states[item.state.value] += 1
        if item.state is SourceState.LOST:
            self.reconnects += 1

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "readings": dict(sorted(self.readings.items())),
            "samples_read": sum(self.readings.values()),
            "states": dict(sorted(self.states.items())),
            "reconnects": self.reconnects,
            "errors": self.errors,
        }


@dataclass(slots=True)
class DurableOutcome:
    """What the durable lane ended with for one ride: the bike's view and the backend's."""

    bike_summary: dict[str, Any]  # BikeRide.summary(): sync state, phase, end post, ...
    bike_seqs: list[int]  # sample seqs in the bike's own document
    backend_seqs: list[int] | None  # the same document as the backend holds it (None: never arrived)
    # Of those backend samples, how many carry a heart rate / a cadence: the readings really got there.
    backend_with: dict[str, int]
    backend_view: dict[str, Any] | None  # GET /v1/rides/{id} with the rider's token (None: unreachable)
    finished: bool  # the replica's run returned within the bound (else it was cancelled)


@dataclass(slots=True)
class Rider:
    spec: RiderSpec
    ride_id: str
    token: str
    sensors: RiderSensors
    publisher: LivePublisher
    replica: BikeRide | None
    hr: SensorCounters = field(default_factory=SensorCounters)
    bike: SensorCounters = field(default_factory=SensorCounters)
    ride_task: asyncio.Task[dict[str, Any]] | None = None
    outcome: DurableOutcome | None = None

    @property
    def reconnects(self) -> int:
        return max(0, self.publisher.stats.connects - 1) + self.hr.reconnects + self.bike.reconnects


@dataclass(slots=True)
class DemoSession:
    config: DemoConfig
    base_url: str
    data_dir: Path
    viewer_token: str
    riders: list[Rider]
    monitor: ClassMonitor
    app: web.Application
    started: float = field(default_factory=time.monotonic)
    proxy: ChaosProxy | None = None  # the chaos rider's network (config.chaos), else None
    proxied_device: str | None = None

    @property
    def dashboard_url(self) -> str:
        return f"{self.base_url}/classes/{quote(self.config.class_id)}?token={quote(self.viewer_token)}"

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def rider(self, device: str) -> Rider:
        for rider in self.riders:
            if rider.spec.device == device:
                return rider
        raise KeyError(device)

    async def end_rides(self) -> None:
        """End every rider's ride on its bike replica and wait, bounded, until each is reconciled (the
        replica's own bound: the end POST and the reconciliation wait, `sync_timeout_s` each); then record
        what the bike and the backend hold. Replicas that did not finish in time are cancelled."""
        for rider in self.riders:
            if rider.replica is not None:
                rider.replica.stop.set()
        tasks = [r.ride_task for r in self.riders if r.ride_task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2 * self.config.sync_timeout_s + 5.0)
        async with aiohttp.ClientSession() as http:
            for rider in self.riders:
                if rider.replica is not None:
                    rider.outcome = await self._outcome(http, rider, rider.replica)

    def _backend_doc(self, rider: Rider) -> Any:
        """The rider's bike document as the backend's store holds it (None: not arrived yet)."""
        state = self.app[BACKEND]
        # has_ride reads the ride back if the backend released it from memory while it was idle.
        if state.backend is not None and state.backend.has_ride(rider.ride_id):
            return state.backend.store.ride_docs(rider.ride_id).device_doc(rider.spec.device, Role.BIKE)
        return None

    def backend_seqs(self, rider: Rider) -> list[int]:
        """Sample seqs of the rider's bike document on the backend so far."""
        doc = self._backend_doc(rider)
        return [] if doc is None else [s.seq for s in doc.samples]

    def backend_with(self, rider: Rider) -> dict[str, int]:
        """Of the rider's samples on the backend so far, how many carry a heart rate / a cadence."""
        doc = self._backend_doc(rider)
        samples = [] if doc is None else doc.samples
        return {
            "hr": sum(1 for s in samples if s.hr is not None),
            "cadence": sum(1 for s in samples if s.cadence is not None),
        }

    async def _outcome(self, http: aiohttp.ClientSession, rider: Rider, replica: BikeRide) -> DurableOutcome:
        task = rider.ride_task
        finished = task is not None and task.done() and not task.cancelled() and task.exception() is None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        summary = task.result() if finished and task is not None else replica.summary()
        mine = own_doc(replica.store, rider.ride_id)
        bike_seqs = [s.seq for s in mine.samples] if mine is not None else []
        doc = self._backend_doc(rider)
        backend_seqs = [s.seq for s in doc.samples] if doc is not None else None
        backend_with = self.backend_with(rider)
        view: dict[str, Any] | None = None
        url = f"{self.base_url}/v1/rides/{quote(rider.ride_id, safe='')}"
        try:
            async with asyncio.timeout(10.0):
                async with http.get(url, headers={"Authorization": f"Bearer {rider.token}"}) as resp:
                    if resp.status == 200:
                        view = await resp.json()
                    else:
                        log.warning("ride view refused", extra={"ride": rider.ride_id, "status": resp.status})
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("ride view unreachable", extra={"ride": rider.ride_id, "error": repr(exc)})
        return DurableOutcome(summary, bike_seqs, backend_seqs, backend_with, view, finished)


def ride_id_for(class_id: str, device: str, started: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    return f"{class_id}.{stamp}.{device}"


async def _pump(
    source: SensorSource,
    counters: SensorCounters,
    publisher: LivePublisher,
    replica: BikeRide | None,
    rider_sources: Sequence[SensorSource] = (),
) -> None:
    """Feed one sensor into both lanes of its rider, counting what it delivered. Runs until cancelled.

    The bike replica gets every item (its sampler keeps what a sample carries), the same way
    `BikeRide` feeds its own sensors; the live lane only the kinds it carries."""
    counters.source = source.source_id
    while True:
        try:
            stream = source.stream()
            try:
                async for item in stream:
                    counters.count(item)
                    if replica is not None:
                        replica.builder.offer(item, time.monotonic())
                    # Work-around: LivePublisher fans a source's state event out to every kind that source
                    # delivered, battery and body location included, and the hub closes the connection
                    # (4400) on those kinds. Offer only the kinds the live lane carries.
                    if isinstance(item, Reading) and item.kind.value not in METRIC_KEYS:
                        continue
                    if isinstance(item, SourceEvent):
                        # The kind of bike, as `ridesync ride` says it: from what the sources found.
                        publisher.announce(bike_kind_of(rider_sources))
                    publisher.offer(item)
            finally:
                # Close the generator here, in this task, so the source releases its port or link now.
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
        except Exception as exc:  # an adapter bug must not take the whole class down; it is counted
            counters.errors += 1
            log.warning(
                "sensor stream failed; restarting", extra={"source": source.source_id, "error": repr(exc)}
            )
        await asyncio.sleep(PUMP_RESTART_S)


async def _ride(replica: BikeRide) -> dict[str, Any]:
    """One rider's bike replica; its failure is reported for that ride and does not end the class."""
    try:
        return await replica.run()
    except Exception as exc:
        log.warning("bike replica failed", extra={"device": replica.o.device, "error": repr(exc)})
        return {"ride_id": replica.o.ride_id, "error": repr(exc)}


async def _start_site(runner: web.AppRunner, host: str, port: int) -> int:
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
        log.warning("port taken; using a free one", extra={"port": port})
        site = web.TCPSite(runner, host, 0)
        await site.start()
    return int(runner.addresses[-1][1])


@contextlib.asynccontextmanager
async def running_demo(
    config: DemoConfig,
    rig: SensorRig,
    *,
    roster: Sequence[RiderSpec] | None = None,
    on_value: OnValue | None = None,
    extra_lanes: Sequence[Lane] = (),
) -> AsyncIterator[DemoSession]:
    specs = (
        list(roster)
        if roster is not None
        else make_roster(config.riders, seed=config.seed, start_at_s=config.start_at_s, mix=config.mix)
    )
    async with contextlib.AsyncExitStack() as stack:
        if config.data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ridesync-demo-")))
        else:
            data_dir = config.data_dir
        keyring = KeyRing.load_or_create(data_dir)
        hub = HubConfig(stale_after_s=config.stale_after_s, leaderboard_s=config.leaderboard_s)
        server = ServerConfig(data_dir=data_dir, host=config.host, port=config.port)
        durable = [setup_backend] if config.durable_lane else []
        lanes = [live_lane(hub), setup_dashboard, *durable, *extra_lanes]
        app = build_app(server, lanes, keyring=keyring)
        # The same guard as `ridesync serve` (timeouts, pending cap, quiet refusals): the demo's server is
        # a real one, open to whatever else is on the network.
        runner = GuardedRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        port = await _start_site(runner, config.host, config.port)
        base_url = f"http://{config.host}:{port}"
        viewer = keyring.issue(Role.VIEWER, "dashboard", classes=[config.class_id], ttl_s=config.token_ttl_s)
        monitor = ClassMonitor(
            base_url,
            keyring.issue(Role.VIEWER, "demo-monitor", classes=[config.class_id], ttl_s=config.token_ttl_s),
            config.class_id,
            on_value,
        )
        sensors = await stack.enter_async_context(rig(specs, config.speed))
        proxy: ChaosProxy | None = None
        proxied: str | None = None
        if config.chaos and config.durable_lane and specs:
            proxy = await stack.enter_async_context(ChaosProxy((config.host, port), seed=config.seed))
            proxied = chaos_victims([s.device for s in specs], config.chaos_seed)["network"]
        started = time.time()
        riders: list[Rider] = []
        for spec, rs in zip(specs, sensors, strict=True):
            ride_id = ride_id_for(config.class_id, spec.device, started)
            # Scoped to the rider's ride and class: the backend then registers the ride in the class when
            # the replica connects, as it does for a real bike.
            token = keyring.issue(
                Role.BIKE,
                spec.device,
                classes=[config.class_id],
                rides=[ride_id],
                ttl_s=config.token_ttl_s,
                name=spec.name,
                max_hr=spec.max_hr,
            )
            publisher = LivePublisher(
                base_url,
                token,
                config.class_id,
                name=spec.name,
                max_hr=spec.max_hr,
                bike=bike_kind_of((rs.hr, rs.bike)),
            )
            replica = None
            if config.durable_lane:
                replica = BikeRide(
                    BikeOptions(
                        backend=f"http://{proxy.address}"
                        if proxy is not None and spec.device == proxied
                        else base_url,
                        token=token,
                        device=spec.device,
                        ride_id=ride_id,
                        data_root=data_dir / "replicas",
                        speed=config.speed,
                        retry_cap_s=config.retry_cap_s,
                        sync_timeout_s=config.sync_timeout_s,
                    )
                )
                stack.callback(replica.close)
            riders.append(Rider(spec, ride_id, token, rs, publisher, replica))
            app[RIDES].register(config.class_id, spec.device, ride_id, spec.name)
        session = DemoSession(config, base_url, data_dir, viewer, riders, monitor, app)
        if proxy is not None:
            session.proxy = proxy
            session.proxied_device = proxied
        tasks: list[asyncio.Task[None]] = []
        async with asyncio.TaskGroup() as tg:
            tasks.append(tg.create_task(monitor.run(), name="demo-monitor"))
            for r in riders:
                both = (r.sensors.hr, r.sensors.bike)
                tasks.append(tg.create_task(r.publisher.run(), name=f"publisher {r.spec.device}"))
                if r.replica is not None:
                    r.ride_task = tg.create_task(_ride(r.replica), name=f"replica {r.spec.device}")
                tasks.append(
                    tg.create_task(
                        _pump(r.sensors.hr, r.hr, r.publisher, r.replica, both),
                        name=f"hr {r.spec.device}",
                    )
                )
                tasks.append(
                    tg.create_task(
                        _pump(r.sensors.bike, r.bike, r.publisher, r.replica, both),
                        name=f"bike {r.spec.device}",
                    )
                )
            try:
                yield session
            finally:
                for task in tasks:
                    task.cancel()
                for r in riders:
                    if r.ride_task is not None:
                        r.ride_task.cancel()
