"""The soak campaign: a studio's day against one `ridesync serve` (backend and class hub in one process).
N riders ride classes back to back at --speed 10, each class `--class-minutes` ride-minutes (45 by
default: 4.5 wall minutes) with new ride ids, for M wall minutes. Each rider is the product's bike replica
(engine/device/bike.py: its own SQLite store, durable sync, live publishing to the class) fed by a
synthetic strap+bike source, so a hundred fit in one process.

What it checks:
- every ride of every class reconciles once with 0 lost and 0 duplicated samples;
- leaks, measured the way a studio runs. A server holds the rides in progress in memory (that is data,
  not a leak: ~94 B per recorded sample) and releases each ride once it has been idle for
  `--unload-idle-s` (engine/backend/workingset.py). So RSS and open files are compared at the same
  phase of each class: every ride of the class ended, reconciled and checked, and the server had its
  idle time to release them (its `ridesync_rides_in_memory` gauge back to 0). The last class's figure
  against the second's (the first warms allocators, caches and the SQLite page cache) must grow by at
  most 5 %, for RSS and for open files alike; every class must end with no ride left in memory.
RSS and open files are also sampled over time, for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from engine.campaign.procs import ServeProcess, get_json, proc_stats
from engine.campaign.report import CampaignOptions, CampaignReport, Progress, check_ride
from engine.device.bike import BikeOptions, BikeRide
from engine.metrics_scrape import scrape_async
from engine.readings import Contact, Kind, Reading, SensorSource, SourceEvent, SourceItem, SourceState

CLASS = "soak"
SPEED = 10.0
GROWTH_LIMIT = 0.05
LONG_CLASS_MINUTES = 45.0  # ride-minutes: a studio class
SHORT_CLASS_MINUTES = 0.75  # 45 ride-seconds, 4.5 wall seconds
# How soon the server releases an idle ride: short, so the same-phase point comes soon after a class.
UNLOAD_IDLE_S = 2.0
# How often the server may give freed heap back (engine/server/heap.py); short for the same reason. The
# same-phase reading waits two of these after the release, so a class's memory has had its trim.
HEAP_TRIM_S = 2.0
RELEASE_GRACE_S = 30.0  # beyond the idle time, how long to wait for the server to release a class
MIN_CLASSES = 3  # the first warms up; the second is the baseline; the last is compared with it
SETTLE_SAMPLES = 3  # the same-phase figure is the median of this many readings, 0.5 s apart


class SyntheticSensor:
    """Heart rate, cadence and power at `speed` readings per second each, from a seeded random walk."""

    def __init__(self, source_id: str, speed: float, seed: str) -> None:
        self._id = source_id
        self.speed = speed
        self.rnd = random.Random(seed)

    @property
    def source_id(self) -> str:
        return self._id

    async def stream(self) -> AsyncIterator[SourceItem]:
        yield SourceEvent(time.time(), self._id, SourceState.STREAMING)
        hr, cad, seq = 110.0, 80.0, 0
        while True:
            hr = min(max(hr + self.rnd.uniform(-2, 2), 80), 190)
            cad = min(max(cad + self.rnd.uniform(-3, 3), 50), 110)
            t = time.time()
            for kind, value in ((Kind.HEART_RATE, hr), (Kind.CADENCE, cad), (Kind.POWER, cad * 2.5)):
                contact = Contact.DETECTED if kind is Kind.HEART_RATE else None
                yield Reading(t, self._id, seq, kind, round(value), contact=contact)
                seq += 1
            await asyncio.sleep(1 / self.speed)


def _opener(source: SensorSource) -> Any:
    @contextlib.asynccontextmanager
    async def sensors() -> AsyncIterator[list[SensorSource]]:
        yield [source]

    return sensors


def _growth(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The last class's same-phase figure against the second class's."""
    if len(rows) < MIN_CLASSES:
        return {"ok": False, "why": f"only {len(rows)} classes ran: the run stopped early"}
    base, end = rows[1][key], rows[-1][key]
    growth = (end - base) / base if base else 0.0
    return {"baseline_class": rows[1]["class"], "baseline": base, "end_class": rows[-1]["class"], "end": end,
            "growth_pct": round(100 * growth, 2), "ok": growth <= GROWTH_LIMIT}  # fmt: skip


async def _rides_in_memory(http: aiohttp.ClientSession, url: str) -> int | None:
    """The server's `ridesync_rides_in_memory` gauge (None if /metrics did not answer)."""
    try:
        value = (await scrape_async(url, http)).value("ridesync_rides_in_memory")
    except aiohttp.ClientError:
        return None
    return None if value is None else int(value)


async def _heap_trims(http: aiohttp.ClientSession, url: str) -> dict[str, int | None]:
    """How often the server has given freed heap back to the system so far, and how much
    (engine/server/heap.py): beside each class's RSS in the report, so a reader sees what the trims did."""
    try:
        scrape = await scrape_async(url, http)
    except aiohttp.ClientError:
        return {"heap_trims": None, "heap_trim_released_kb": None}
    trims, released = (
        scrape.value("ridesync_heap_trims_total"),
        scrape.value("ridesync_heap_trim_released_bytes_total"),
    )
    return {
        "heap_trims": None if trims is None else int(trims),
        "heap_trim_released_kb": None if released is None else int(released) // 1024,
    }


class Soak:
    def __init__(self, options: CampaignOptions, progress: Progress, report: CampaignReport) -> None:
        self.options, self.progress, self.report = options, progress, report
        self.riders = options.riders or (100 if options.long else 3)
        self.class_minutes = options.class_minutes or (
            LONG_CLASS_MINUTES if options.long else SHORT_CLASS_MINUTES
        )
        class_wall_s = self.class_minutes * 60 / SPEED
        self.minutes = options.minutes or (30.0 if options.long else MIN_CLASSES * class_wall_s / 60)
        self.classes = int(self.minutes * 60 // class_wall_s)
        if self.classes < MIN_CLASSES:
            # The growth rule compares the last class with the second: a run too short for three
            # classes of the asked length gets three shorter ones (the report says how long).
            self.classes = MIN_CLASSES
            self.class_minutes = self.minutes * SPEED / MIN_CLASSES
        self.every_s = 10.0 if options.long else 1.0
        work = options.workdir
        self.serve = ServeProcess(
            data=work / "server",
            logs=work / "logs",
            extra=("--unload-idle-s", f"{UNLOAD_IDLE_S:g}", "--heap-trim-interval", f"{HEAP_TRIM_S:g}"),
        )
        self.tokens: dict[str, str] = {}
        self.over_time: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []  # one per class, at the same phase
        self.stage = "starting"
        self.klass = 0
        self.bikes: list[BikeRide] = []
        self.recorded_before = 0  # samples recorded by the classes before the current one

    def device(self, i: int) -> str:
        return f"soak-{i:03d}"

    def bike(self, k: int, i: int) -> BikeRide:
        """Rider `i`'s bike for class `k`: the same device every class, with a replica dir per class (a
        bike opening its store loads every ride it holds, on the one event loop all riders share; the
        server, which is what the soak measures, sees the same device ride ride after ride)."""
        device = self.device(i)
        return BikeRide(BikeOptions(
            backend=self.serve.url, token=self.tokens[device], device=device, ride_id=f"soak-c{k}-{i:03d}",
            data_root=Path(self.options.workdir / "riders" / f"class-{k}"), class_id=CLASS,
            duration_s=self.class_minutes * 60, speed=SPEED, retry_cap_s=2.0, heartbeat_s=2.0,
            sync_timeout_s=120.0,
            sensors=_opener(SyntheticSensor(f"synth-{i:03d}", SPEED, f"{self.options.seed}:{k}:{i}")),
        ))  # fmt: skip

    async def sampler(self, http: aiohttp.ClientSession) -> None:
        t0 = time.monotonic()
        while True:
            now = proc_stats(self.serve.pid)
            recorded = self.recorded_before + sum(b.recorded_this_run for b in self.bikes)
            self.over_time.append({
                **now, "t": round(time.monotonic() - t0), "class": self.klass, "stage": self.stage,
                "recorded": recorded, "rides_in_memory": await _rides_in_memory(http, self.serve.url),
            })  # fmt: skip
            if self.options.long or len(self.over_time) % 10 == 0:
                self.progress(
                    f"server RSS {now['rss_kb'] // 1024} MiB, {now['fds']} open files "
                    f"(class {self.klass}, {self.stage})"
                )
            await asyncio.sleep(self.every_s)

    async def ride_class(self, k: int) -> tuple[int, list[dict[str, Any]]]:
        """Every rider rides class `k` to its end; then every ride is checked on the backend. Returns the
        samples recorded and the checks."""
        self.klass, self.stage = k, "riding"
        self.bikes = [self.bike(k, i) for i in range(self.riders)]
        summaries: dict[str, dict[str, Any]] = {}

        async def ride(bike: BikeRide) -> None:
            try:
                summaries[bike.o.ride_id] = await bike.run()
            finally:
                bike.close()

        try:
            async with asyncio.TaskGroup() as tg:
                for b in self.bikes:
                    tg.create_task(ride(b))
        finally:
            for b in self.bikes:
                with contextlib.suppress(Exception):
                    b.close()
        self.stage = "checking"
        checks = []
        for bike in self.bikes:
            ride_id, device = bike.o.ride_id, bike.o.device
            status, view = await get_json(f"{self.serve.url}/v1/rides/{ride_id}", self.tokens[device])
            recorded = int(summaries.get(ride_id, {}).get("samples_recorded", -1))
            check = check_ride(ride_id, view if status == 200 else {}, device, recorded)
            checks.append(check.to_json())
            self.report.lost += check.lost
            self.report.duplicated += check.duplicated
            if not check.ok:
                self.report.fail(f"ride {ride_id} did not reconcile once: {check.to_json()}")
        recorded = sum(b.recorded_this_run for b in self.bikes)
        self.recorded_before += recorded
        self.bikes = []
        return recorded, checks

    async def same_phase(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """Wait for the server to release the class's rides (its idle time, plus a grace), then read RSS
        and open files."""
        self.stage = "releasing"
        in_memory = await _rides_in_memory(http, self.serve.url)
        deadline = time.monotonic() + UNLOAD_IDLE_S + RELEASE_GRACE_S
        while in_memory != 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            in_memory = await _rides_in_memory(http, self.serve.url)
        self.stage = "released"
        await asyncio.sleep(2 * HEAP_TRIM_S)
        readings = []
        for _ in range(SETTLE_SAMPLES):
            readings.append(proc_stats(self.serve.pid))
            await asyncio.sleep(0.5)
        heap = await _heap_trims(http, self.serve.url)
        return {
            "rss_kb": statistics.median(r["rss_kb"] for r in readings),
            "fds": statistics.median(r["fds"] for r in readings),
            "rides_in_memory": in_memory,
            **heap,
        }

    async def run(self) -> None:
        self.progress(
            f"{self.riders} riders at --speed {SPEED:g}: {self.classes} classes of {self.class_minutes:g} "
            f"ride-minutes back to back; the server releases idle rides after {UNLOAD_IDLE_S:g} s"
        )
        async with self.serve, aiohttp.ClientSession() as http, asyncio.TaskGroup() as tg:
            ring = self.serve.ring()
            for i in range(self.riders):
                self.tokens[self.device(i)] = ring.issue("bike", self.device(i), classes=[CLASS])
            watch = tg.create_task(self.sampler(http))
            try:
                for k in range(1, self.classes + 1):
                    recorded, checks = await self.ride_class(k)
                    row = {"class": k, "rides": len(checks), "rides_ok": sum(1 for c in checks if c["ok"]),
                           "samples": recorded, **await self.same_phase(http)}  # fmt: skip
                    self.rows.append(row)
                    self.progress(
                        f"class {k}: {row['rides_ok']}/{row['rides']} rides ok, {recorded} samples; after "
                        f"release: RSS {row['rss_kb'] / 1024:.1f} MiB, {row['fds']} open files, "
                        f"{row['rides_in_memory']} rides in memory"
                    )
            finally:
                watch.cancel()

    def verdict(self) -> None:
        report = self.report
        for key, label in (("rss_kb", "RSS"), ("fds", "open files")):
            verdict = _growth(self.rows, key)
            report.case(
                f"server {label} at the same phase of each class: last vs second class <= 5 %",
                verdict["ok"],
                str(verdict),
            )
            report.details[f"server_{key}"] = verdict
        kept = [r["class"] for r in self.rows if r["rides_in_memory"] != 0]
        report.case(
            f"server released every class's rides within {UNLOAD_IDLE_S + RELEASE_GRACE_S:g} s of its end",
            not kept and bool(self.rows),
            f"classes with rides still in memory: {kept}" if kept else "",
        )
        report.details.update(
            riders=self.riders, minutes=self.minutes, class_minutes=self.class_minutes,
            unload_idle_s=UNLOAD_IDLE_S, classes=self.rows,
            rides_ok=sum(r["rides_ok"] for r in self.rows), rides=sum(r["rides"] for r in self.rows),
        )  # fmt: skip
        samples = self.over_time
        report.details["samples_over_time"] = (
            samples if self.options.long else samples[:: max(len(samples) // 10, 1)]
        )


async def run(options: CampaignOptions, progress: Progress, report: CampaignReport) -> CampaignReport:
    soak = Soak(options, progress, report)
    try:
        await soak.run()
    finally:
        soak.verdict()
    return report
