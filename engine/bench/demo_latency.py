"""`ridesync bench demo`: end-to-end live latency in the demo, simulated strap notification -> a class
viewer's receipt (what the dashboard gets), next to a baseline without the BLE stack.

Demo path (the whole `ridesync demo` in one process): the strap notifies on bumble's virtual radio ->
bumble central -> bleak backend -> `BleHeartRateSource` -> `LivePublisher` -> hub WebSocket -> class hub
(coalescing tick) -> viewer WebSocket -> receipt. Each strap notifies heart rates it cycles through
(100..179 bpm), so the viewer's value identifies the notification it came from; latency is receipt time
minus the time just before `notify`. Also reported: sensor timestamp (host receipt at the BLE adapter,
the `t` every frame carries) -> viewer.

Baseline: the same demo (same riders, the same simulated bikes on ptys, same hub and viewer) with each
strap replaced by a source that creates heart-rate readings directly at the same rate: latency is
receipt minus the reading's creation time. The ratio is the price of the BLE stack plus its load on the
shared event loop. Phases run one after the other in the same invocation.

`--browser`: the dashboard page itself, in Debian's Chromium (Playwright, `executable_path`), is the
receiver: the page records sensor timestamp -> its own receipt for every heart-rate value it newly sees
(engine/dashboard/static/latency.js, `window.ridesyncLatency`). One phase, the BLE demo as above with the
page open; its baseline is the Python class viewer in the same run, over the same seconds (the same
values, received by a process that does nothing else). The browser runs on this machine, so the page's
Date.now() and the sensor's time.time() are one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from engine.demo.monitor import LiveValue
from engine.demo.roster import RiderSpec
from engine.demo.sensors import RiderSensors, SensorRig
from engine.demo.session import DemoConfig, DemoSession, running_demo
from engine.readings import Contact, Kind, Reading, SourceItem

NAME = "demo"
HELP = (
    "demo live latency: strap notify -> dashboard viewer (or, with --browser, the page in Chromium), p50/p99"
)
CYCLE = 80  # distinct bpm values per strap: a value identifies its notification for CYCLE periods
READY_GUARD_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--riders", type=int, default=8)
    parser.add_argument(
        "--rate", type=float, default=1.0, help="notifications per second per strap (1 = real)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per phase")
    parser.add_argument(
        "--browser",
        action="store_true",
        help="measure in the dashboard page in Debian's Chromium (package `chromium`), next to the Python "
        "viewer of the same run",
    )


def _bpm(spec: RiderSpec, k: int) -> int:
    return 100 + (spec.index * 7 + k) % CYCLE


def pct(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    s = sorted(values)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 2)

    return {"n": len(s), "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": q(1.0)}


class SyntheticHr:
    """A heart-rate source with no radio: readings made on the spot at `rate` per second."""

    def __init__(self, spec: RiderSpec, rate: float) -> None:
        self.spec = spec
        self.rate = rate

    @property
    def source_id(self) -> str:
        return f"synthetic-hr-{self.spec.device}"

    async def stream(self) -> AsyncIterator[SourceItem]:
        start = time.monotonic()
        k = 0
        while True:
            k += 1
            await asyncio.sleep(max(0.0, start + k / self.rate - time.monotonic()))
            yield Reading(
                t=time.time(),
                source=self.source_id,
                seq=k,
                kind=Kind.HEART_RATE,
                value=float(_bpm(self.spec, k)),
                contact=Contact.DETECTED,
            )


@contextlib.asynccontextmanager
async def synthetic_rig(
    specs: Sequence[RiderSpec], speed: float, *, rate: float
) -> AsyncIterator[list[RiderSensors]]:
    from engine.cli.commands.demo import open_sim_bike

    async with contextlib.AsyncExitStack() as stack:
        out = []
        for spec in specs:
            bike, path = await open_sim_bike(stack, spec, speed)
            out.append(
                RiderSensors(hr=SyntheticHr(spec, rate), bike=bike, describe=f"synthetic HR; bike on {path}")
            )
        yield out


async def _all_live(demo: DemoSession) -> None:
    async with asyncio.timeout(READY_GUARD_S):
        while True:
            seen = demo.monitor.riders
            if all(
                (m := seen.get(r.spec.device)) is not None
                and "hr" in m.metrics
                and m.metrics["hr"].state == "live"
                for r in demo.riders
            ):
                return
            demo.monitor.changed.clear()
            await demo.monitor.changed.wait()


async def _phase(
    rig: SensorRig, riders: int, duration: float, sent_at: dict[tuple[str, int], float] | None
) -> dict[str, Any]:
    e2e: list[float] = []
    from_t: list[float] = []
    measuring = False

    def on_value(v: LiveValue) -> None:
        if not measuring or v.metric != "hr":
            return
        from_t.append(v.received - v.t)
        if sent_at is not None:
            sent = sent_at.get((v.device, int(v.value)))
            if sent is not None:
                e2e.append(v.received - sent)

    config = DemoConfig(riders=riders, speed=1.0, port=0)
    async with running_demo(config, rig, on_value=on_value) as demo:
        await _all_live(demo)
        measuring = True
        await asyncio.sleep(duration)
        measuring = False
        reconnects = sum(r.reconnects for r in demo.riders)
    out: dict[str, Any] = {"sensor_t_to_viewer": pct(from_t), "reconnects": reconnects}
    if sent_at is not None:
        out = {"strap_notify_to_viewer": pct(e2e), **out}
    return out


PAGE_ALL_LIVE_JS = "(n) => document.querySelectorAll('.hr-value[data-state=live]').length >= n"


async def _browser_phase(
    rig: SensorRig, riders: int, duration: float, sent_at: dict[tuple[str, int], float]
) -> dict[str, Any]:
    """The BLE demo with the dashboard open in Chromium: the page's own numbers and the Python viewer's,
    over the same measured seconds."""
    from playwright.async_api import async_playwright

    from engine.demo.browser import CHROMIUM, CHROMIUM_ARGS

    # (receipt time, latency) at the viewer: cut to the measured seconds afterwards, as the page's are.
    e2e: list[tuple[float, float]] = []
    from_t: list[tuple[float, float]] = []

    def on_value(v: LiveValue) -> None:
        if v.metric != "hr":
            return
        from_t.append((v.received, v.received - v.t))
        sent = sent_at.get((v.device, int(v.value)))
        if sent is not None:
            e2e.append((v.received, v.received - sent))

    config = DemoConfig(riders=riders, speed=1.0, port=0)
    async with running_demo(config, rig, on_value=on_value) as demo, async_playwright() as pw:
        await _all_live(demo)
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            await page.goto(demo.dashboard_url)
            async with asyncio.timeout(READY_GUARD_S):
                # The page's state lives in the browser; poll it until every tile is live.
                while not await page.evaluate(PAGE_ALL_LIVE_JS, riders):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            await page.evaluate("window.ridesyncLatency.reset()")
            # The page and this process share one clock: both sides are cut to exactly these seconds.
            start = time.time()
            await asyncio.sleep(duration)
            end = time.time()
            # One evaluate: the summary and the entries must describe the same moment of the page.
            both: dict[str, Any] = await page.evaluate(
                "() => ({summary: window.ridesyncLatency(), entries: window.ridesyncLatency.entries()})"
            )
            summary: dict[str, Any] = both["summary"]
            entries: list[list[float]] = both["entries"]
            readout = await page.inner_text("#latency")
            version = browser.version
        finally:
            await browser.close()
        reconnects = sum(r.reconnects for r in demo.riders)

    def cut(pairs: Sequence[Sequence[float]], scale: float) -> list[float]:
        return [lat / scale for at, lat in pairs if start <= at / scale < end]

    page_stats = pct(cut(entries, 1000.0))
    return {
        "page": {
            "sensor_t_to_page": page_stats,
            "values_seen_since_reset": summary["count"],
            # The page keeps a bounded window; past it, the numbers are over the most recent values only.
            "window_overflow": summary["count"] > summary["window"],
            "footer": readout,
        },
        "viewer_baseline": {
            "sensor_t_to_viewer": pct(cut(from_t, 1.0)),
            "strap_notify_to_viewer": pct(cut(e2e, 1.0)),
        },
        "browser": f"{CHROMIUM} {version}",
        "reconnects": reconnects,
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from engine.cli.commands.demo import simulated_rig

    sent_at: dict[tuple[str, int], float] = {}
    rate = args.rate

    async def player(strap: Any, spec: RiderSpec, speed: float) -> None:
        start = time.monotonic()
        k = 0
        while True:
            k += 1
            await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
            bpm = _bpm(spec, k)
            sent_at[(spec.device, bpm)] = time.time()
            with contextlib.suppress(Exception):  # a link dropping mid-notify: that value is simply lost
                await strap.notify(bpm)

    ble_rig = functools.partial(simulated_rig, player=player)
    if args.browser:
        return await _run_browser(args, ble_rig, sent_at)
    demo = await _phase(ble_rig, args.riders, args.duration, sent_at)
    baseline = await _phase(functools.partial(synthetic_rig, rate=rate), args.riders, args.duration, None)

    def ratio(key: str) -> float | None:
        a = demo["strap_notify_to_viewer"][key]
        b = baseline["sensor_t_to_viewer"][key]
        return round(a / b, 2) if a and b else None

    return {
        "riders": args.riders,
        "rate_hz_per_rider": rate,
        "duration_s": args.duration,
        "demo_ble": demo,
        "baseline_synthetic": baseline,
        "ratio_p50": ratio("p50_ms"),
        "ratio_p99": ratio("p99_ms"),
        "note": "one process: straps, radio, bikes on ptys, publishers, hub and viewer share one event loop",
    }


async def _run_browser(
    args: argparse.Namespace, rig: SensorRig, sent_at: dict[tuple[str, int], float]
) -> dict[str, Any]:
    from engine.demo.browser import browser_missing

    head = {"riders": args.riders, "rate_hz_per_rider": args.rate, "duration_s": args.duration}
    missing = browser_missing()
    if missing is not None:
        return {**head, "mode": "browser", "skipped": missing}
    result = await _browser_phase(rig, args.riders, args.duration, sent_at)
    page = result["page"]["sensor_t_to_page"]
    viewer = result["viewer_baseline"]["sensor_t_to_viewer"]

    def ratio(key: str) -> float | None:
        a, b = page[key], viewer[key]
        return round(a / b, 2) if a and b else None

    return {
        **head,
        "mode": "browser",
        **result,
        "ratio_p50": ratio("p50_ms"),
        "ratio_p99": ratio("p99_ms"),
        "note": "sensor t = the bike's BLE adapter receiving the strap's notification; page = Date.now() in "
        "Chromium's onmessage; viewer = the demo's Python subscriber (same hub, same seconds). One machine, "
        "one clock; the hub carries t rounded to 1 ms and Date.now() has 1 ms resolution.",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not 1 <= args.riders <= 24 or not 0 < args.rate <= 50 or not args.duration > 0:
        raise ValueError("--riders 1..24, --rate (0, 50], --duration > 0")
    return asyncio.run(_run(args))
