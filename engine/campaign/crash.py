"""The crash campaign: SIGKILL at seeded random moments to bike replicas (`ridesync ride`), app replicas
(`ridesync app`) and the backend with its class hub (`ridesync serve`, restarted on the same data dir and
port). Each killed replica is started again with the same data dir and ride id (a bike resumes its ride
from its raw log). At the end: no acknowledged sample lost (what the backend served before a kill is
there after it; every recorded sample is on the backend), none duplicated, every ride reconciled once,
and every SQLite file in every data dir passes PRAGMA integrity_check."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.campaign.procs import Proc, ServeProcess, get_json, issue_token, spawn
from engine.campaign.report import (
    CampaignOptions,
    CampaignReport,
    Case,
    Progress,
    check_ride,
    integrity_check,
    sqlite_files,
)
from engine.ride import documents
from engine.ride.schema import Role
from engine.store import ReplicaStore

CLASS = "crash"


# The last stderr line of `ridesync ride` asked to record a ride its bike ended (engine/device/bike.py).
ALREADY_ENDED = "already ended on this bike"


@dataclass
class Replica:
    """One bike or app replica: its command, its current process, how often it was killed."""

    name: str
    kind: str  # "bike" | "app"
    device: str
    token: str
    data: Path
    log: Path
    ride_id: str
    args: list[str]
    proc: Proc | None = None
    kills: int = 0
    runs: int = 0
    done: bool = False
    rides: list[str] = field(default_factory=list)

    def cmd(self, url: str, *extra: str) -> list[str]:
        command = "ride" if self.kind == "bike" else "app"
        return [
            command, "--backend", url, "--token", self.token, "--ride-id", self.ride_id,
            "--data", str(self.data), "--json", "--retry-cap", "1", "--heartbeat", "1", *self.args, *extra,
        ]  # fmt: skip

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    async def start(self, url: str, *extra: str) -> None:
        self.proc = await spawn(*self.cmd(url, *extra), stderr_path=self.log)
        self.runs += 1

    async def reap(self) -> int | None:
        if self.proc is None:
            return None
        code = await self.proc.finish()
        return code

    def refused_as_ended(self, code: int | None) -> bool:
        """Was the last run refused because this bike had already ended its ride? A kill that lands after
        the bike claimed the end, before its process exited, leaves a ride `ridesync ride` will not
        record again (exit 2, naming `ridesync sync`)."""
        if self.kind != "bike" or code != 2:
            return False
        lines = log_tail(self.log, 2000).strip().splitlines()
        return bool(lines) and ALREADY_ENDED in lines[-1]

    async def push(self, url: str) -> int:
        """`ridesync sync` on this replica's data dir: what it holds of its ride reaches the backend (the
        product's way to finish a ride whose bike stopped after ending it). 0 once it is reconciled."""
        proc = await spawn(
            "sync", "--backend", url, "--token", self.token, "--data", str(self.data), "--ride-id",
            self.ride_id, "--json", "--retry-cap", "1", "--sync-timeout", "60", stderr_path=self.log,
        )  # fmt: skip
        return await proc.finish()


class Crash:
    def __init__(self, options: CampaignOptions, report: CampaignReport, progress: Progress) -> None:
        self.options = options
        self.report = report
        self.progress = progress
        self.rnd = random.Random(options.seed)
        self.work = options.workdir
        self.serve = ServeProcess(data=self.work / "server", logs=self.work / "logs")
        self.replicas: list[Replica] = []
        self.kills: list[dict[str, Any]] = []
        self.pending: list[tuple[Case, str]] = []
        self.rides: dict[str, Replica] = {}  # ride id -> its bike
        self.long = options.long
        self.duration, self.speed = (1200, 20.0) if options.long else (600, 30.0)

    def bike_args(self) -> list[str]:
        return ["--hr", "sim", "--class", CLASS, "--duration", str(self.duration), "--speed", str(self.speed),
                "--sync-timeout", "60"]  # fmt: skip

    def add_replicas(self, bikes: int, apps: int) -> None:
        ring = self.serve.ring()
        for i in range(bikes):
            device = f"bike-{i:02d}"
            ride = f"crash-{i:02d}-r0"
            token = issue_token(ring, "bike", device, classes=[CLASS], rider=f"rider-{device}")
            log = self.work / "logs" / f"{device}.log"
            r = Replica(
                f"bike {device}", "bike", device, token, self.work / device, log, ride, self.bike_args()
            )
            r.rides.append(ride)
            self.rides[ride] = r
            self.replicas.append(r)
        for i in range(apps):
            device = f"tablet-{i:02d}"
            bike = self.replicas[i % bikes]
            token = issue_token(ring, "app", device, rider=f"rider-{bike.device}")
            log = self.work / "logs" / f"{device}.log"
            args = ["--sync-timeout", "20"]
            r = Replica(f"app {device}", "app", device, token, self.work / device, log, bike.ride_id, args)
            self.replicas.append(r)

    async def keep_running(self) -> None:
        """Restart what was killed or ended; a bike whose ride reconciled starts its next ride (long)."""
        for r in self.replicas:
            if r.running:
                continue
            code = await r.reap()
            if r.kind == "bike":
                if r.refused_as_ended(code):
                    code = await r.push(self.serve.url)
                if code == 0:
                    if not self.long:
                        r.done = True
                        continue
                    n = len(r.rides)
                    r.ride_id = f"crash-{r.device[5:]}-r{n}"
                    r.rides.append(r.ride_id)
                    self.rides[r.ride_id] = r
                if not r.done:
                    await r.start(self.serve.url)
            else:
                bike = next(b for b in self.replicas if b.kind == "bike" and b.device[5:] == r.device[7:])
                r.ride_id = bike.ride_id
                await r.start(self.serve.url, "--set", f"title=crash run {r.runs}")

    async def acked(self) -> dict[str, int]:
        """Samples the backend serves per ride right now (what it has acknowledged)."""
        out: dict[str, int] = {}
        for ride, bike in self.rides.items():
            with contextlib.suppress(Exception):
                status, view = await get_json(f"{self.serve.url}/v1/rides/{ride}", bike.token)
                if status == 200:
                    out[ride] = int(view.get("samples", {}).get(bike.device, 0))
        return out

    async def kill_one(self) -> None:
        running = [r for r in self.replicas if r.running]
        weights = [1.0 if r.kind == "bike" else 0.6 for r in running]
        pick_backend = self.rnd.random() < 0.25 or not running
        t = round(time.monotonic() - self.progress.t0, 2)
        if pick_backend:
            before = await self.acked()
            await self.serve.killed()
            await asyncio.sleep(self.rnd.uniform(0, 1.0))
            await self.serve.start()
            after = await self.acked()
            lost = {r: (n, after.get(r, 0)) for r, n in before.items() if after.get(r, 0) < n}
            self.kills.append({"t": t, "target": "backend+hub", "acked_lost": lost})
            self.report.case(
                f"SIGKILL backend+hub at +{t}s", not lost, f"acknowledged then lost: {lost}" if lost else ""
            )
            self.progress(f"killed the backend (and hub) at +{t}s; restarted on port {self.serve.port}")
            return
        victim = self.rnd.choices(running, weights)[0]
        assert victim.proc is not None
        await asyncio.sleep(self.rnd.random() * 0.2)  # not only right after a line: mid-write too
        victim.proc.kill()
        await victim.reap()
        victim.kills += 1
        self.kills.append({"t": t, "target": victim.name, "ride": victim.ride_id})
        # Held once the end shows that ride whole and reconciled once (verify()).
        case = self.report.case(f"SIGKILL {victim.name} at +{t}s", True, f"ride {victim.ride_id}")
        self.pending.append((case, victim.ride_id))
        self.progress(f"killed {victim.name} (ride {victim.ride_id}) at +{t}s")

    async def finish(self) -> None:
        """No more kills: every bike finishes its ride; then each app ends its ride (counted once)."""
        for r in self.replicas:
            if r.kind == "bike" and not r.running and not r.done:
                await r.start(self.serve.url)
        async with asyncio.timeout(self.duration / self.speed + 120):
            for r in self.replicas:
                if r.kind == "bike" and r.proc is not None:
                    code = await r.reap()
                    if r.refused_as_ended(code):
                        code = await r.push(self.serve.url)
                    if code != 0:
                        self.report.fail(
                            f"{r.name}: last run exited {code}: {r.proc.lines[-1:]} {log_tail(r.log)}"
                        )
        for r in self.replicas:
            if r.kind == "app":
                if r.proc is not None:
                    r.proc.kill()
                    await r.reap()
                await r.start(self.serve.url, "--end", "--wait-phase", "finalized")
        async with asyncio.timeout(90):
            for r in self.replicas:
                if r.kind == "app" and r.proc is not None and await r.reap() != 0:
                    self.report.fail(
                        f"{r.name}: the final run (--end) failed: {r.proc.lines[-1:]} {log_tail(r.log)}"
                    )

    async def verify(self) -> None:
        checks = []
        ok: dict[str, bool] = {}
        for ride, bike in self.rides.items():
            status, view = await get_json(f"{self.serve.url}/v1/rides/{ride}", bike.token)
            check = check_ride(ride, view if status == 200 else {}, bike.device, self.duration)
            checks.append(check.to_json())
            ok[ride] = check.ok
            self.report.lost += check.lost
            self.report.duplicated += check.duplicated
            if not check.ok:
                self.report.fail(f"ride {ride} did not reconcile once: {check.to_json()}")
        self.report.details["rides"] = checks
        for case, ride in self.pending:
            case.held = ok.get(ride, False)

    def audit(self) -> None:
        """After every process stopped: every SQLite file opens and passes integrity_check, and no sample
        is stored twice in the backend's documents."""
        bad = {}
        files = 0
        for path in sqlite_files(self.work):
            files += 1
            verdict = integrity_check(path)
            if verdict != "ok":
                bad[str(path.relative_to(self.work))] = verdict
        if bad:
            self.report.fail(f"SQLite files not ok: {bad}")
        self.report.details["sqlite_files_checked"] = files
        self.report.details["sqlite_not_ok"] = bad
        twice = backend_records_twice(self.serve.data / "backend", self.rides)
        self.report.details["backend_records_twice"] = twice
        self.report.duplicated += twice


def log_tail(path: Path, chars: int = 600) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def backend_records_twice(directory: Path, rides: dict[str, Replica]) -> int:
    """Samples stored in more than one record of a bike's document on the backend."""
    store = ReplicaStore(directory, device_id="backend", role=Role.BACKEND)
    twice = 0
    try:
        for ride in rides:
            for ref in store.ride_refs(ride):
                if ref.kind.value != "bike" or not store.has_doc(ref.doc_id):
                    continue
                items = store.doc(ref.doc_id).items()
                problems: list[str] = []
                unique = len(documents.decode_samples(items, problems))
                written = sum(len(documents.decode_samples({k: v}, problems)) for k, v in items.items())
                twice += written - unique
    finally:
        store.close()
    return twice


async def run(options: CampaignOptions, progress: Progress, report: CampaignReport) -> CampaignReport:
    crash = Crash(options, report, progress)
    target = 200 if options.long else 12
    gap = (0.5, 2.5) if options.long else (0.6, 1.6)
    try:
        async with crash.serve:
            crash.add_replicas(*((4, 2) if options.long else (2, 1)))
            await crash.keep_running()
            await asyncio.sleep(2)
            while len(crash.kills) < target:
                await asyncio.sleep(crash.rnd.uniform(*gap))
                await crash.kill_one()
                await crash.keep_running()
                if len(crash.kills) % 20 == 0:
                    progress(f"{len(crash.kills)}/{target} kills, {len(crash.rides)} rides")
            await crash.finish()
            await crash.verify()
    finally:
        for r in crash.replicas:
            if r.proc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(r.proc.stop(grace_s=5))
    crash.audit()
    report.details["kills"] = {
        "total": len(crash.kills),
        "backend": sum(1 for k in crash.kills if k["target"] == "backend+hub"),
        "bike": sum(1 for k in crash.kills if k["target"].startswith("bike")),
        "app": sum(1 for k in crash.kills if k["target"].startswith("app")),
    }
    report.details["rides_total"] = len(crash.rides)
    return report
