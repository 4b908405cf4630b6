"""Running the demo: the backend in-process, tokens, and per rider a live publisher fed by its sensors.

    async with running_demo(DemoConfig(riders=8, speed=10), rig) as demo:
        print(demo.dashboard_url)
        await asyncio.sleep(60)

Everything long-running belongs to one TaskGroup inside the context; leaving it cancels the publishers,
pumps and the monitor, closes the sensors (the rig's ptys and radio), then shuts the server down.
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
from urllib.parse import quote

from aiohttp import web

from engine.auth.tokens import KeyRing, Role
from engine.dashboard.directory import RIDES
from engine.dashboard.routes import setup_dashboard
from engine.demo.monitor import ClassMonitor, OnValue
from engine.demo.roster import RiderSpec, make_roster
from engine.demo.sensors import RiderSensors, SensorRig
from engine.live.config import HubConfig
from engine.live.publisher import LivePublisher
from engine.live.wire import METRIC_KEYS
from engine.readings import Reading, SensorSource, SourceEvent, SourceState
from engine.server.app import Setup, build_app
from engine.server.config import ServerConfig

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
    token_ttl_s: float = 7 * 86400.0


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
class Rider:
    spec: RiderSpec
    ride_id: str
    token: str
    sensors: RiderSensors
    publisher: LivePublisher
    hr: SensorCounters = field(default_factory=SensorCounters)
    bike: SensorCounters = field(default_factory=SensorCounters)

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


def ride_id_for(class_id: str, device: str, started: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    return f"{class_id}.{stamp}.{device}"


async def _pump(source: SensorSource, counters: SensorCounters, publisher: LivePublisher) -> None:
    """Feed one sensor into the rider's publisher, counting what it delivered. Runs until cancelled."""
    counters.source = source.source_id
    while True:
        try:
            stream = source.stream()
            try:
                async for item in stream:
                    counters.count(item)
                    # Work-around: LivePublisher fans a source's state event out to every kind that source
                    # delivered, battery and body location included, and the hub closes the connection
                    # (4400) on those kinds. Offer only the kinds the live lane carries.
                    if isinstance(item, Reading) and item.kind.value not in METRIC_KEYS:
                        continue
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
    extra_setup: Sequence[Setup] = (),
) -> AsyncIterator[DemoSession]:
    specs = (
        list(roster)
        if roster is not None
        else make_roster(config.riders, seed=config.seed, start_at_s=config.start_at_s)
    )
    async with contextlib.AsyncExitStack() as stack:
        if config.data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ridesync-demo-")))
        else:
            data_dir = config.data_dir
        keyring = KeyRing.load_or_create(data_dir)
        hub = HubConfig(stale_after_s=config.stale_after_s, leaderboard_s=config.leaderboard_s)
        server = ServerConfig(data_dir=data_dir, host=config.host, port=config.port, hub=hub)
        app = build_app(server, extra_setup=[setup_dashboard, *extra_setup], keyring=keyring)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
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
        started = time.time()
        riders: list[Rider] = []
        for spec, rs in zip(specs, sensors, strict=True):
            ride_id = ride_id_for(config.class_id, spec.device, started)
            token = keyring.issue(Role.BIKE, spec.device, classes=[config.class_id], ttl_s=config.token_ttl_s)
            publisher = LivePublisher(base_url, token, config.class_id, name=spec.name, max_hr=spec.max_hr)
            riders.append(Rider(spec, ride_id, token, rs, publisher))
            app[RIDES].register(config.class_id, spec.device, ride_id, spec.name)
        session = DemoSession(config, base_url, data_dir, viewer, riders, monitor, app)
        tasks: list[asyncio.Task[None]] = []
        async with asyncio.TaskGroup() as tg:
            tasks.append(tg.create_task(monitor.run(), name="demo-monitor"))
            for r in riders:
                tasks.append(tg.create_task(r.publisher.run(), name=f"publisher {r.spec.device}"))
                tasks.append(
                    tg.create_task(_pump(r.sensors.hr, r.hr, r.publisher), name=f"hr {r.spec.device}")
                )
                tasks.append(
                    tg.create_task(_pump(r.sensors.bike, r.bike, r.publisher), name=f"bike {r.spec.device}")
                )
            try:
                yield session
            finally:
                for task in tasks:
                    task.cancel()
