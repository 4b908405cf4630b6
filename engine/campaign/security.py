"""The security campaign: a real `ridesync serve` on loopback, attacked with valid and invalid tokens,
hostile sync frames, ownership and class hijacks, floods and half-open connections, while an honest
`ridesync ride` records beside it and must end with every sample on the backend.

Every attack is expected to be refused; the report lists what was tried, what held, and the server's RSS
and open files before and after."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.auth.tokens import KeyRing
from engine.campaign import security_net as net
from engine.campaign.probes import http, upgrade_status
from engine.campaign.procs import ServeProcess, get_json, owned, proc_stats, spawn
from engine.campaign.report import CampaignOptions, CampaignReport, Progress, check_ride
from engine.campaign.security_rides import VICTIM, RideAttacks
from engine.campaign.security_wire import MAX_MESSAGE_BYTES, MAX_QUEUED_CHANGES, WireAttacks

CLASS = "spin"
HONEST_DEVICE = "bike-honest"
HONEST_RIDE = "honest-1"
# The hub's stall limit here (its default is 10 s): short, so the subscriber that never reads is closed,
# and checked, well within the attack's time.
STALL_LIMIT_S = 3.0


def honest_cmd(url: str, token: str, data: str, duration: int, speed: float) -> list[str]:
    return [
        "ride", "--backend", url, "--token", token, "--ride-id", HONEST_RIDE, "--hr", "sim",
        "--serial", "sim", "--class", CLASS, "--duration", str(duration), "--speed", str(speed),
        "--data", data, "--json", "--retry-cap", "1", "--heartbeat", "2", "--sync-timeout", "90",
    ]  # fmt: skip


class Security:
    def __init__(self, serve: ServeProcess, report: CampaignReport, progress: Progress, long: bool) -> None:
        self.serve = serve
        self.report = report
        self.progress = progress
        self.long = long
        self.ring = serve.ring()

    @property
    def url(self) -> str:
        return self.serve.url

    def token(self, role: str, device: str, **kw: Any) -> str:
        return self.ring.issue(role, device, **kw)

    async def attempt(self, name: str, attack: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        """Run one attack, bounded; an attack that raises or hangs did not show a refusal."""
        try:
            async with asyncio.timeout(120):
                held, detail = await attack()
        except Exception as exc:  # the attack itself broke: report it, keep going
            held, detail = False, f"attack raised {exc!r}"[:300]
        self.report.case(name, held, detail)
        self.progress(f"{'held' if held else 'NOT HELD'}: {name} ({detail})")

    # -- tokens -------------------------------------------------------------------------------------------

    async def tokens(self, other_ring: KeyRing) -> None:
        good = self.token("bike", "bike-probe")
        bad_tokens = {
            "no token": (None, 401),
            "forged token": ("rs1.nope.x.y", 401),
            "expired token": (self.token("bike", "bike-probe", ttl_s=60, now=time.time() - 3600), 401),
            "wrong-key token": (other_ring.issue("bike", "bike-probe"), 401),
            "tampered signature": (good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), 401),
            "cross-scope token (other ride)": (self.token("bike", "bike-probe", rides=["another"]), 403),
        }
        for label, (tok, want) in bad_tokens.items():

            async def read(tok: str | None = tok, want: int = want) -> tuple[bool, str]:
                status, body = await http(self.url, "GET", f"/v1/rides/{HONEST_RIDE}", tok)
                return status == want, f"GET ride: {status} {body}"[:200]

            async def sync(tok: str | None = tok, want: int = want) -> tuple[bool, str]:
                status = await upgrade_status(self.url, {"ride": HONEST_RIDE}, tok)
                return status == want, f"/v1/sync upgrade: {status}"

            async def live(tok: str | None = tok) -> tuple[bool, str]:
                path = f"/live/v1/classes/{CLASS}/ws?mode=sub" + (f"&token={tok}" if tok else "")
                status, _, writer = await net.ws_open(self.serve.port, path)
                net.close_quietly(writer)
                return status in (401, 403), f"/live/v1 upgrade: {status}"

            await self.attempt(f"{label}: read a ride", read)
            await self.attempt(f"{label}: sync upgrade", sync)
            if "other ride" not in label:
                await self.attempt(f"{label}: live hub upgrade", live)

        viewer = self.token("viewer", "dash-probe", classes=[CLASS])

        async def viewer_writes() -> tuple[bool, str]:
            status, body = await http(
                self.url, "PUT", f"/v1/rides/{HONEST_RIDE}/meta", viewer, {"title": "x"}
            )
            return status == 403, f"PUT meta as viewer: {status} {body}"[:200]

        async def other_class() -> tuple[bool, str]:
            tok = self.token("viewer", "dash-probe", classes=["elsewhere"])
            status, _, writer = await net.ws_open(self.serve.port, f"/live/v1/classes/{CLASS}/ws?token={tok}")
            net.close_quietly(writer)
            return status == 403, f"subscribe to another class: {status}"

        await self.attempt("viewer token writes shared fields", viewer_writes)
        await self.attempt("cross-scope token: subscribe to another class", other_class)

    # -- the socket level ---------------------------------------------------------------------------------

    async def floods(self) -> None:
        port, pid = self.serve.port, self.serve.pid
        frames = 1_000_000 if self.long else 120_000
        pub = self.token("bike", "bike-flood", classes=[CLASS])
        sub = self.token("viewer", "dash-stuck", classes=[CLASS])
        stuck = net.StuckSubscriber()
        try:
            status = await stuck.open(port, f"/live/v1/classes/{CLASS}/ws?mode=sub&token={sub}")
            if status != 101:
                raise ConnectionRefusedError(f"the subscriber's upgrade answered {status}")

            async def ping_flood() -> tuple[bool, str]:
                path = f"/live/v1/classes/{CLASS}/ws?mode=pub&token={pub}"
                out = await net.flood(port, path, frames, "ping", pid)
                slow = await net.healthz_s(port)
                # Every ping is answered: for a peer that never reads the pongs the server must close it,
                # push back (stop reading) or drop pongs, never buffer them all.
                growth = int(str(out["rss_growth_kb"]))
                bounded = out["closed"] or out["pushed_back"] or growth < net.PING_RSS_BUDGET_KB
                held = bool(bounded) and slow < 2
                return held, f"{out}, healthz {slow:.2f}s"

            async def publish_flood() -> tuple[bool, str]:
                # Many devices at once, so the class's deltas are large (and the stuck subscriber stalls).
                tokens = [self.token("bike", f"bike-flood-{i:02d}", classes=[CLASS]) for i in range(16)]
                path = f"/live/v1/classes/{CLASS}/ws?mode=pub&token="
                floods = [net.flood(port, path + t, frames // 16, "publish", pid) for t in tokens]
                outs = await asyncio.gather(*floods)
                growth = max(int(str(o["rss_growth_kb"])) for o in outs)
                slow = await net.healthz_s(port)
                sent = sum(int(str(o["sent"])) for o in outs)
                held = growth < net.FLOOD_RSS_BUDGET_KB and slow < 2
                return held, f"{sent} samples from 16 devices; RSS +{growth} KiB; healthz {slow:.2f}s"

            await self.attempt("ping flood on /live/v1 (never reading the pongs)", ping_flood)
            await self.attempt("publish flood on /live/v1 (16 devices)", publish_flood)

            async def never_reads() -> tuple[bool, str]:
                # Frames have waited for it since the publish flood at the latest; not a byte is read here
                # either (draining would make the hub see a reader and rightly keep it).
                t0, bound = time.monotonic(), net.stuck_close_bound_s(STALL_LIMIT_S)
                closed = await stuck.closed_by_peer(bound)
                waited = f"{time.monotonic() - t0:.1f} s after the floods (bound {bound:g} s)"
                return closed, f"the hub disconnected it {waited}" if closed else f"still connected {waited}"

            await self.attempt("a subscriber that never reads", never_reads)
        finally:
            stuck.close()

        async def churn() -> tuple[bool, str]:
            fds0 = proc_stats(pid)["fds"]
            n = await net.open_and_drop(port, 1000)
            await asyncio.sleep(2)
            fds1 = proc_stats(pid)["fds"]
            slow = await net.healthz_s(port)
            return fds1 <= fds0 + 16 and slow < 2, f"{n} dropped; fds {fds0} -> {fds1}; healthz {slow:.2f}s"

        await self.attempt("1,000 connections opened and dropped", churn)


async def run(options: CampaignOptions, progress: Progress, report: CampaignReport) -> CampaignReport:
    work = options.workdir
    duration, speed = (3600, 10.0) if options.long else (600, 20.0)
    serve = ServeProcess(
        data=work / "server",
        logs=work / "logs",
        extra=("--max-message-bytes", str(MAX_MESSAGE_BYTES), "--max-queued-changes", str(MAX_QUEUED_CHANGES),
               "--stall-limit", f"{STALL_LIMIT_S:g}"),
        log_level="INFO",  # the over-long request case counts the server's INFO lines
    )  # fmt: skip
    async with serve, owned() as procs:
        sec = Security(serve, report, progress, options.long)
        honest_token = sec.token("bike", HONEST_DEVICE, classes=[CLASS])
        honest = await spawn(
            *honest_cmd(serve.url, honest_token, str(work / "bike"), duration, speed),
            stderr_path=work / "logs" / "ride.log",
        )
        procs.append(honest)
        async with asyncio.timeout(60):
            await honest.wait_line(lambda o: o.get("event") == "sync" and o.get("state") == "reconciled")
        await asyncio.sleep(1)
        before = proc_stats(serve.pid)
        progress(f"server pid {serve.pid}: {before}; honest ride {HONEST_RIDE} syncing")
        loris = net.SlowLoris(serve.port, 40)
        await loris.start()
        try:
            await sec.tokens(KeyRing.load_or_create(work / "other-keys"))
            rides = RideAttacks(sec, work, options.seed)
            await rides.run_all()
            await WireAttacks(sec, VICTIM, "bike-victim", 30 if options.long else 8).run_all()
            await sec.floods()

            async def slow_loris() -> tuple[bool, str]:
                closed = await loris.closed_count(35 if not options.long else 120)
                return (
                    closed == loris.count,
                    f"{closed}/{loris.count} half-open requests closed by the server",
                )

            await sec.attempt("slow-loris (half-open request headers)", slow_loris)
        finally:
            loris.close()
        await asyncio.sleep(1)
        after = proc_stats(serve.pid)
        progress(f"server after the attacks: {after}; waiting for the honest ride")
        async with asyncio.timeout(duration / speed + 120):
            code = await honest.finish()
        summary = honest.last
        status, view = await get_json(f"{serve.url}/v1/rides/{HONEST_RIDE}", honest_token)
        recorded = int(summary.get("samples_recorded", -1))
        check = check_ride(HONEST_RIDE, view if status == 200 else {}, HONEST_DEVICE, recorded)
        report.lost, report.duplicated = check.lost, check.duplicated
        if code != 0 or not check.ok or summary.get("sync_state") != "reconciled":
            report.fail(f"the honest ride did not reconcile: exit {code}, {check.to_json()}")
        report.details["honest_ride"] = {**check.to_json(), "sync_state": summary.get("sync_state")}
        report.details["server"] = {"pid": serve.pid, "before": before, "after": after}
        with contextlib.suppress(Exception):
            report.details["server"]["final"] = proc_stats(serve.pid)
    return report
