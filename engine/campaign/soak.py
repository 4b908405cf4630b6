"""The soak campaign: N riders at --speed 10 against one `ridesync serve` (backend and class hub in one
process) for M wall minutes. Each rider is the product's bike replica (engine/device/bike.py: its own
SQLite store, durable sync, live publishing to the class) fed by a synthetic strap+bike source, so a
hundred fit in one process. RSS and open files of the server are sampled every few seconds; growth of
more than 5 % over the steady part of the run (after the warm-up: every rider synced once and a fifth of
the time passed; before the first ride ends) fails, as does any ride that does not reconcile with 0 lost
and 0 duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from engine.campaign.procs import ServeProcess, get_json, proc_stats
from engine.campaign.report import CampaignOptions, CampaignReport, Progress, check_ride
from engine.device.bike import BikeOptions, BikeRide
from engine.readings import Contact, Kind, Reading, SensorSource, SourceEvent, SourceItem, SourceState

CLASS = "soak"
SPEED = 10.0
GROWTH_LIMIT = 0.05


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


def _growth(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Over the steady samples (every rider connected, warm-up over, none ended yet): the median of the
    first three against the median of the last three."""
    steady = [s[key] for s in samples if s["phase"] == "steady"]
    if len(steady) < 4:
        return {"ok": False, "why": f"only {len(steady)} steady samples: run longer (--minutes)"}
    base, end = statistics.median(steady[:3]), statistics.median(steady[-3:])
    growth = (end - base) / base if base else 0.0
    return {"baseline": base, "end": end, "growth_pct": round(100 * growth, 2), "steady_samples": len(steady),
            "ok": growth <= GROWTH_LIMIT}  # fmt: skip


def _per_sample(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the steady samples: RSS growth (bytes) per sample the riders recorded meanwhile. Not a pass
    criterion; it says how much of the growth the held ride data explains (an Automerge ride document
    holds some tens of bytes per sample in memory)."""
    steady = [s for s in samples if s["phase"] == "steady"]
    if len(steady) < 2 or steady[-1]["recorded"] <= steady[0]["recorded"]:
        return {"steady_samples": len(steady)}
    rss = (steady[-1]["rss_kb"] - steady[0]["rss_kb"]) * 1024
    recorded = steady[-1]["recorded"] - steady[0]["recorded"]
    return {
        "rss_growth_bytes": rss,
        "samples_recorded": recorded,
        "bytes_per_sample": round(rss / recorded, 1),
    }


class Phases:
    """Warm-up until every rider synced once and a fifth of the time passed; steady until a ride ends."""

    def __init__(self, riders: int, warmup_s: float) -> None:
        self.riders = riders
        self.t0 = time.monotonic()
        self.warmup_s = warmup_s
        self.connected: set[str] = set()
        self.ending = False

    def on_event(self, device: str) -> Any:
        def seen(obj: dict[str, Any]) -> None:
            if obj.get("event") == "sync" and obj.get("state") == "reconciled":
                self.connected.add(device)
            elif obj.get("event") == "ride_ended":
                self.ending = True

        return seen

    def now(self) -> str:
        if self.ending:
            return "ending"
        warm = time.monotonic() - self.t0 < self.warmup_s or len(self.connected) < self.riders
        return "warmup" if warm else "steady"


async def run(options: CampaignOptions, progress: Progress, report: CampaignReport) -> CampaignReport:
    riders = 100 if options.long else 3
    minutes = options.minutes or (30.0 if options.long else 0.4)
    every_s = 10.0 if options.long else 1.0
    wall_s = minutes * 60
    ride_s = wall_s * SPEED
    work = options.workdir
    serve = ServeProcess(data=work / "server", logs=work / "logs")
    samples: list[dict[str, Any]] = []
    phases = Phases(riders, warmup_s=wall_s / 5)
    summaries: dict[str, dict[str, Any]] = {}
    async with serve:
        ring = serve.ring()
        bikes: list[BikeRide] = []
        tokens: dict[str, str] = {}
        for i in range(riders):
            device = f"soak-{i:03d}"
            tokens[device] = ring.issue("bike", device, classes=[CLASS])
            bikes.append(BikeRide(BikeOptions(
                backend=serve.url, token=tokens[device], device=device, ride_id=f"soak-ride-{i:03d}",
                data_root=Path(work / "riders"), class_id=CLASS, duration_s=ride_s, speed=SPEED,
                retry_cap_s=2.0, heartbeat_s=2.0, sync_timeout_s=120.0, on_event=phases.on_event(device),
                sensors=_opener(SyntheticSensor(f"synth-{i:03d}", SPEED, f"{options.seed}:{i}")),
            )))  # fmt: skip
        progress(f"{riders} riders at --speed {SPEED:g} for {minutes:g} min ({ride_s:.0f} ride-s each)")

        async def sampler() -> None:
            t0 = time.monotonic()
            while True:
                now = proc_stats(serve.pid)
                # Samples the riders recorded so far: the data the server must hold grows with them, so
                # RSS growth per sample tells a leak from data (see _per_sample).
                recorded = sum(b.recorded_this_run for b in bikes)
                samples.append(
                    {**now, "t": round(time.monotonic() - t0), "phase": phases.now(), "recorded": recorded}
                )
                if options.long or len(samples) % 10 == 0:
                    progress(
                        f"server RSS {now['rss_kb'] // 1024} MiB, {now['fds']} open files ({phases.now()})"
                    )
                await asyncio.sleep(every_s)

        async def ride(bike: BikeRide) -> None:
            try:
                summaries[bike.o.ride_id] = await bike.run()
            finally:
                bike.close()

        try:
            async with asyncio.TaskGroup() as tg:
                watch = tg.create_task(sampler())
                rides = [tg.create_task(ride(b)) for b in bikes]
                await asyncio.wait(rides)
                watch.cancel()
        finally:
            for b in bikes:
                with contextlib.suppress(Exception):
                    b.close()
        progress("rides done; checking the backend")
        checks = []
        for bike in bikes:
            ride_id, device = bike.o.ride_id, bike.o.device
            summary = summaries.get(ride_id, {})
            status, view = await get_json(f"{serve.url}/v1/rides/{ride_id}", tokens[device])
            check = check_ride(
                ride_id, view if status == 200 else {}, device, int(summary.get("samples_recorded", -1))
            )
            checks.append(check.to_json())
            report.lost += check.lost
            report.duplicated += check.duplicated
            if not check.ok:
                report.fail(f"ride {ride_id} did not reconcile once: {check.to_json()}")
    for key in ("rss_kb", "fds"):
        verdict = _growth(samples, key)
        report.case(f"server {key} growth after warm-up <= 5 %", verdict["ok"], str(verdict))
        report.details[f"server_{key}"] = verdict
    report.details["server_rss_per_sample"] = _per_sample(samples)
    report.details["riders"] = riders
    report.details["minutes"] = minutes
    report.details["rides_ok"] = sum(1 for c in checks if c["ok"])
    report.details["samples_over_time"] = samples if options.long else samples[:: max(len(samples) // 10, 1)]
    return report
