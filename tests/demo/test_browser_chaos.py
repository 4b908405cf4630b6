"""A `--chaos` run watched in real Chromium: each fault shows on its rider's tile and each recovers.

The faults (engine/demo/chaos.py) hit the riders `--chaos-seed` picks: one bike's sync network is
partitioned (its tile's sync line says "offline" once the backend's heartbeat notices, then comes back), one
strap walks out of range ("no contact", then "stale", then live again) and one Peloton bike is unplugged
(cadence and power "no contact"/"stale", then live again). At the end the rides are ended and every tile
shows `reconciled`. Each fault is held until the page has shown it (`ChaosRun(hold_until=...)`), so the
test waits on what the page shows rather than on guessed durations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from engine.cli.commands.demo import simulated_rig
from engine.demo.chaos import ChaosPlan, ChaosRun
from engine.demo.session import DemoConfig, running_demo
from engine.demo.victims import DEFAULT_CHAOS_SEED
from tests.demo.test_browser import until
from tests.support.browser import CHROMIUM_ARGS, HANG_GUARD_S, SCREENSHOTS

pytestmark = pytest.mark.slow

pytest.importorskip("playwright.async_api")
from playwright.async_api import Page, async_playwright  # noqa: E402

# What the watcher reads from every tile, several times a second.
TILE_STATES_JS = """() => Object.fromEntries([...document.querySelectorAll('.tile')].map((t) => [
  t.dataset.device, {
    hr: t.querySelector('.hr-value').dataset.state,
    cad: t.querySelector('.cad').dataset.state,
    pwr: t.querySelector('.pwr').dataset.state,
    sync: t.querySelector('.sync').dataset.sync,
    link: t.querySelector('.sync').dataset.link,
  }]))"""
WATCH_EVERY_S = 0.1


class TileWatcher:
    """Records, per (device, field), the sequence of distinct values the page showed, and wakes waiters."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.history: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.changed = asyncio.Event()

    async def run(self) -> None:
        # The states live in the browser: there is no event to wait on, so poll them.
        while True:
            tiles: dict[str, dict[str, str]] = await self.page.evaluate(TILE_STATES_JS)
            for device, fields in tiles.items():
                for name, value in fields.items():
                    seen = self.history[(device, name)]
                    if not seen or seen[-1] != value:
                        seen.append(value)
                        self.changed.set()
            await asyncio.sleep(WATCH_EVERY_S)

    def showed(self, device: str, name: str, *values: str) -> bool:
        """The field showed `values` in this order (other values may come between them)."""
        it = iter(self.history[(device, name)])
        return all(any(v == want for v in it) for want in values)

    def now(self, device: str, name: str) -> str | None:
        seen = self.history[(device, name)]
        return seen[-1] if seen else None

    async def wait(self, device: str, name: str, *values: str) -> None:
        while not self.showed(device, name, *values):
            self.changed.clear()
            await self.changed.wait()


async def test_chaos_run_shows_each_fault_and_its_recovery_in_chromium(
    tmp_path: Path, chromium: Path
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    config = DemoConfig(
        riders=3,
        speed=5.0,
        port=0,
        data_dir=tmp_path / "data",
        leaderboard_s=1.0,
        start_at_s=540,
        chaos=True,
        chaos_seed=DEFAULT_CHAOS_SEED,
    )
    async with running_demo(config, simulated_rig) as demo, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        watcher_task: asyncio.Task[None] | None = None
        chaos_task: asyncio.Task[None] | None = None
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(demo.dashboard_url)
            watcher = TileWatcher(page)
            watcher_task = asyncio.create_task(watcher.run())
            devices = [r.spec.device for r in demo.riders]

            def all_live(d: str) -> bool:
                # Every metric the rider has, so a fault can only take away what the page already showed
                # (a Peloton bike's first power reading comes after its calibration read).
                metrics = ["hr", "cad"] + (["pwr"] if demo.rider(d).spec.has_power else [])
                return all(watcher.now(d, m) == "live" for m in metrics)

            async def streaming_and_syncing() -> bool:
                return all(all_live(d) and watcher.now(d, "link") == "online" for d in devices)

            await until(
                streaming_and_syncing, "every rider's metrics live, its ride syncing with the bike connected"
            )

            events: list[dict[str, Any]] = []
            shown: dict[str, asyncio.Future[Any]] = {}

            async def hold_until(fault: str) -> None:
                await shown[fault]
                # The fault is still in place: this is what the room sees.
                await page.screenshot(path=str(SCREENSHOTS / f"chaos-{fault}.png"))

            plan = ChaosPlan(start_s=0.5, stagger_s=1.0, hold_s=4.0)
            run = ChaosRun(demo, plan, events.append, hold_until=hold_until)
            victims = run.victims
            net, strap, usb = victims["network"], victims["strap_range"], victims["usb"]
            # Three different riders, and the unplugged bike is a Peloton bike: it has power to lose.
            assert len({net, strap, usb}) == 3
            assert demo.rider(usb).spec.has_power
            assert demo.proxied_device == net
            # Each fault stays in place until the page has shown it.
            shown["network"] = asyncio.ensure_future(watcher.wait(net, "link", "online", "offline"))
            shown["strap_range"] = asyncio.ensure_future(
                watcher.wait(strap, "hr", "live", "no_contact", "stale")
            )
            shown["usb"] = asyncio.ensure_future(
                asyncio.gather(
                    watcher.wait(usb, "pwr", "live", "no_contact", "stale"),
                    watcher.wait(usb, "cad", "live", "no_contact", "stale"),
                )
            )
            chaos_task = asyncio.create_task(run.run())
            try:
                async with asyncio.timeout(HANG_GUARD_S):
                    await asyncio.gather(*shown.values())
            except TimeoutError:
                raise AssertionError(f"not every fault showed on the page: {dict(watcher.history)}") from None
            # Each fault shows on its own rider's tile only: the other two riders' same fields are fine.
            assert watcher.now(strap, "link") == "online" and watcher.now(usb, "link") == "online"
            assert watcher.now(net, "hr") == "live" and watcher.now(usb, "hr") == "live"
            assert watcher.now(strap, "cad") == "live" and watcher.now(net, "cad") == "live"

            async with asyncio.timeout(HANG_GUARD_S):
                await chaos_task  # every fault healed and recovered, by the demo's own evidence

            # The page shows each recovery.
            async def recovered() -> bool:
                return (
                    watcher.showed(net, "link", "offline", "online")
                    and watcher.showed(strap, "hr", "stale", "live")
                    and watcher.showed(usb, "pwr", "stale", "live")
                    and watcher.showed(usb, "cad", "stale", "live")
                    and all(watcher.now(d, "hr") == "live" for d in devices)
                )

            await until(recovered, "every fault to recover on the page")
            await page.screenshot(path=str(SCREENSHOTS / "chaos-recovered.png"))
            phases = [(e["fault"], e["phase"]) for e in events]
            for fault in ("network", "strap_range", "usb"):
                assert [p for f, p in phases if f == fault] == ["injected", "healed", "recovered"], phases
            assert all(record.recovered for record in run.records)

            # End the class: every ride reconciles, the partitioned one included, and the tiles say so.
            await demo.end_rides()

            async def reconciled() -> bool:
                return all(watcher.now(d, "sync") == "reconciled" for d in devices)

            await until(reconciled, "every tile to show its ride reconciled")
            await page.screenshot(path=str(SCREENSHOTS / "chaos-reconciled.png"))
            for rider in demo.riders:
                assert rider.outcome is not None
                bike, backend = rider.outcome.bike_seqs, rider.outcome.backend_seqs
                assert backend is not None and sorted(backend) == sorted(bike), rider.spec.device
            assert errors == []
        finally:
            for task in (chaos_task, watcher_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            await browser.close()
