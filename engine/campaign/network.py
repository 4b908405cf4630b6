"""The network campaign: a bike (`ridesync ride`) and an app (`ridesync app`) each reach the backend
through their own fault proxy (engine/chaos/proxy.py). Every proxy mode in turn (drop, reset, cut
mid-message, stall, bandwidth cap, partition, reset of every connection), a partition between the app
and the backend while the bike stays connected, flapping every 1.5 s, and (long) a 30-simulated-minute
outage. After each fault heals the bike must report its ride reconciled again; at the end the ride is on
the backend with 0 lost, 0 duplicated and its end counted once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable

from engine.campaign.procs import LOOPBACK, Proc, ServeProcess, get_json, owned, spawn
from engine.campaign.report import CampaignOptions, CampaignReport, Progress, check_ride
from engine.chaos.proxy import ChaosProxy, Faults

RIDE = "net-1"
BIKE = "bike-net"
APP = "tablet-net"


def _state(bike: Proc) -> str:
    syncs = bike.events("sync")
    return str(syncs[-1].get("state")) if syncs else ""


async def reconciled_again(bike: Proc, limit_s: float) -> bool:
    """True once the bike's latest sync state is reconciled again, or it ended reconciled."""
    deadline = time.monotonic() + limit_s
    for _ in itertools.count():
        if _state(bike) == "reconciled" or (
            not bike.running and bike.lines[-1].get("sync_state") == "reconciled"
        ):
            return True
        if time.monotonic() > deadline or not bike.running:
            return False
        await asyncio.sleep(0.1)
    return False


class Network:
    def __init__(self, options: CampaignOptions, report: CampaignReport, progress: Progress) -> None:
        self.options = options
        self.report = report
        self.progress = progress
        self.hold_s = 12.0 if options.long else 2.5
        self.recover_s = 60.0 if options.long else 20.0
        self.speed = 10.0 if options.long else 30.0

    async def phase(
        self, bike: Proc, proxy: ChaosProxy, name: str, inject: Callable[[], None], heal: Callable[[], None]
    ) -> None:
        mark = len(bike.lines)
        before = len(proxy.events)
        inject()
        await asyncio.sleep(self.hold_s)
        heal()
        injected = {e.kind for e in proxy.events[before:]} - {"set_faults", "planned"}
        ok = await reconciled_again(bike, self.recover_s)
        states = [o["state"] for o in bike.lines[mark:] if o.get("event") == "sync"]
        self.report.case(name, ok, f"proxy: {sorted(injected)}; bike sync states: {states[-6:]}")
        self.progress(f"{'held' if ok else 'NOT HELD'}: {name} (bike: {states[-3:]})")

    async def modes(self, bike: Proc, proxy: ChaosProxy) -> None:
        clear = lambda: proxy.set_faults(Faults())  # noqa: E731

        def faults(**kw: object) -> Callable[[], None]:
            def go() -> None:
                proxy.set_faults(Faults(**kw))  # type: ignore[arg-type]
                proxy.reset_all()  # the open connection meets the new faults when it reconnects

            return go

        modes: list[tuple[str, Callable[[], None]]] = [
            ("drop: half the new connections closed at once", faults(drop=0.5)),
            ("reset: RST after a random number of bytes", faults(reset=0.6, kill_min=200, kill_window=8000)),
            ("cut: FIN mid-message", faults(cut=0.6, kill_min=200, kill_window=8000, cut_mid_message=True)),
            ("stall: reads held up to 2 s", faults(stall_probability=0.2, stall_max=2.0)),
            ("bandwidth: 8 KB/s per direction", faults(bandwidth=8_000)),
        ]
        for name, inject in modes:
            await self.phase(bike, proxy, name, inject, clear)
        await self.phase(bike, proxy, "partition (black hole) and heal", proxy.partition, proxy.heal)

        def reset_all() -> None:
            proxy.reset_all()

        await self.phase(bike, proxy, "reset every open connection", reset_all, clear)

    async def flapping(self, bike: Proc, proxy: ChaosProxy, cycles: int) -> None:
        for _ in range(cycles):
            proxy.partition()
            await asyncio.sleep(1.5)
            proxy.heal()
            await asyncio.sleep(1.5)
        ok = await reconciled_again(bike, self.recover_s)
        self.report.case(
            f"flapping: partition/heal every 1.5 s, {cycles} cycles", ok, f"bike state {_state(bike)}"
        )
        self.progress(f"{'held' if ok else 'NOT HELD'}: flapping x{cycles}")

    async def app_partition(
        self, bike: Proc, app_proxy: ChaosProxy, app_cmd: list[str], procs: list[Proc]
    ) -> None:
        """The app is cut off from the backend while the bike stays connected; the app's edit arrives
        after the heal, and the bike never noticed."""
        app_proxy.partition()
        mark = len(bike.lines)
        log = self.options.workdir / "logs" / "app.log"
        app = await spawn(*app_cmd, "--set", "title=edited during a partition", stderr_path=log)
        procs.append(app)
        await asyncio.sleep(self.hold_s + 2)
        # The bike's own link is untouched: it never fails while only the app is cut off.
        bike_states = [o["state"] for o in bike.lines[mark:] if o.get("event") == "sync"]
        app_proxy.heal()
        async with asyncio.timeout(self.recover_s + 30):
            code = await app.finish()
        ok = "failed" not in bike_states and code == 0
        self.report.case("partition between app and backend, bike connected", ok,
                         f"bike states meanwhile: {bike_states[-6:]}; app exit {code}")  # fmt: skip
        self.progress(f"{'held' if ok else 'NOT HELD'}: app partitioned (app exit {code})")

    async def outage(self, bike: Proc, proxy: ChaosProxy, ride_s: float) -> None:
        wall = ride_s / self.speed
        self.progress(f"outage: {ride_s / 60:.0f} ride minutes ({wall:.0f} s wall) partitioned")
        proxy.partition()
        await asyncio.sleep(wall)
        proxy.heal()
        ok = await reconciled_again(bike, self.recover_s * 2)
        self.report.case(f"outage of {ride_s / 60:.0f} simulated minutes", ok, f"bike state {_state(bike)}")
        self.progress(f"{'held' if ok else 'NOT HELD'}: outage of {ride_s / 60:.0f} simulated minutes")


async def run(options: CampaignOptions, progress: Progress, report: CampaignReport) -> CampaignReport:
    work = options.workdir
    net = Network(options, report, progress)
    duration = 7200 if options.long else 1200
    async with ServeProcess(data=work / "server", logs=work / "logs") as serve, owned() as procs:
        target = (LOOPBACK, serve.port)
        bike_token = serve.token("bike", BIKE, rider="rider-net")
        app_token = serve.token("app", APP, rider="rider-net")  # the bike's rider: may write its ride
        async with (
            ChaosProxy(target, seed=options.seed) as bike_proxy,
            ChaosProxy(target, seed=options.seed + 1) as app_proxy,
        ):
            bike_url, app_url = f"http://{bike_proxy.address}", f"http://{app_proxy.address}"
            bike = await spawn(
                "ride", "--backend", bike_url, "--token", bike_token, "--ride-id", RIDE, "--hr", "sim",
                "--duration", str(duration), "--speed", str(net.speed), "--data", str(work / "bike"),
                "--json",
                "--retry-cap", "1", "--heartbeat", "1", "--sync-timeout", "120",
                stderr_path=work / "logs" / "ride.log",
            )  # fmt: skip
            procs.append(bike)
            async with asyncio.timeout(60):
                await bike.wait_line(lambda o: o.get("event") == "sync" and o.get("state") == "reconciled")
            app_cmd = [
                "app", "--backend", app_url, "--token", app_token, "--ride-id", RIDE,
                "--data", str(work / "app"), "--json", "--retry-cap", "1", "--heartbeat", "1",
                "--sync-timeout", "120",
            ]  # fmt: skip
            await net.modes(bike, bike_proxy)
            await net.app_partition(bike, app_proxy, app_cmd, procs)
            await net.flapping(bike, bike_proxy, 10 if options.long else 4)
            if options.long:
                await net.outage(bike, bike_proxy, 1800)
            progress("faults done; waiting for the ride to end")
            async with asyncio.timeout(duration / net.speed + 180):
                code = await bike.finish()
            app = await spawn(
                *app_cmd, "--end", "--wait-phase", "finalized", stderr_path=work / "logs" / "app.log"
            )
            procs.append(app)
            async with asyncio.timeout(120):
                app_code = await app.finish()
            report.details["proxy_events"] = {
                "bike": _counts(bike_proxy), "app": _counts(app_proxy),
            }  # fmt: skip
        summary = bike.last
        status, view = await get_json(f"{serve.url}/v1/rides/{RIDE}", bike_token)
        check = check_ride(
            RIDE, view if status == 200 else {}, BIKE, int(summary.get("samples_recorded", -1))
        )
        report.lost, report.duplicated = check.lost, check.duplicated
        report.details["ride"] = {**check.to_json(), "bike_exit": code, "app_end_exit": app_code,
                                  "sync_connects": summary.get("sync_connects")}  # fmt: skip
        if code != 0 or app_code != 0 or not check.ok:
            report.fail(
                f"the ride did not reconcile once: bike exit {code}, app exit {app_code}, {check.to_json()}"
            )
    return report


def _counts(proxy: ChaosProxy) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in proxy.events:
        out[e.kind] = out.get(e.kind, 0) + 1
    with contextlib.suppress(KeyError):
        del out["planned"]
    return out
