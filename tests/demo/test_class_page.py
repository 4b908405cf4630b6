"""A class an instructor can run, in real Chromium against a demo class and then a real `ridesync serve`
restarted on the same data dir: names and zones from each rider's own max HR, the class timer, the kJ
leaderboard with bikes without a power meter ranked apart, a refusal's reason on the page, a header that
holds together on a phone, the results page and ride pages after a restart, and a rider's name and max HR
(from the token or from the publisher, which wins) kept across a restart.

With RIDESYNC_SCREENSHOTS=DIR (`make screenshots` sets docs/) the screenshots go to DIR, cropped to the
content; otherwise to artifacts/screenshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from engine.auth.tokens import KeyRing, Role
from engine.cli.commands.demo import simulated_rig
from engine.demo.session import DemoConfig, running_demo
from engine.live.publisher import LivePublisher
from engine.live.slots import hr_zone
from engine.readings import Kind, Reading
from tests.demo.test_browser import until
from tests.support.browser import CHROMIUM_ARGS, SCREENSHOTS
from tests.support.paths import ROOT

pytestmark = pytest.mark.slow

pytest.importorskip("playwright.async_api")
from playwright.async_api import Browser, FloatRect, Page, async_playwright  # noqa: E402

CLASS = "spin-6am"
SHOTS = Path(os.environ["RIDESYNC_SCREENSHOTS"]) if os.environ.get("RIDESYNC_SCREENSHOTS") else SCREENSHOTS
if not SHOTS.is_absolute():
    SHOTS = ROOT / SHOTS


async def shot(page: Page, name: str, selector: str = "body") -> None:
    """A PNG of the page's content only (clipped to `selector`'s box), small enough for the README."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    box = await page.locator(selector).bounding_box()
    assert box is not None
    clip: FloatRect = {
        "x": 0,
        "y": 0,
        "width": box["x"] + box["width"],
        "height": min(box["y"] + box["height"], 1400),
    }
    await page.screenshot(path=str(SHOTS / name), clip=clip, full_page=True)


@contextlib.asynccontextmanager
async def ridesync_serve(data: Path) -> AsyncIterator[str]:
    """`ridesync serve` as a user runs it, on a free port; yields its base URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli.main",
        "serve",
        "--port",
        "0",
        "--data",
        str(data),
        "--leaderboard-interval",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
        url = json.loads(line)["url"]
        yield str(url).rstrip("/")
    finally:
        proc.terminate()
        with contextlib.suppress(TimeoutError, ProcessLookupError):
            async with asyncio.timeout(15):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def ridesync_ride(base: str, token: str, data: Path, *extra: str) -> asyncio.subprocess.Process:
    """`ridesync ride` as a user runs it: simulated strap and bike, publishing live to the class."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli.main",
        "ride",
        *("--backend", base, "--token", token, "--hr", "sim", "--serial", "sim", "--class", CLASS),
        *("--ride-id", "rita-1", "--duration", "3600", "--speed", "10", "--data", str(data), "--json"),
        *extra,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )


async def publish_hr(pub: LivePublisher, bpm: float, stop: asyncio.Event) -> None:
    seq = 0
    while not stop.is_set():
        seq += 1
        pub.offer(Reading(time.time(), "hrm-test", seq, Kind.HEART_RATE, bpm))
        pub.offer(Reading(time.time(), "cad-test", seq, Kind.CADENCE, 80.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await stop.wait()


@contextlib.asynccontextmanager
async def publishing(base: str, token: str, bpm: float, **hello: Any) -> AsyncIterator[LivePublisher]:
    pub = LivePublisher(base, token, CLASS, **hello)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(pub.run())
        tg.create_task(publish_hr(pub, bpm, stop))
        try:
            yield pub
        finally:
            stop.set()
            run.cancel()


async def tile(page: Page, device: str) -> dict[str, Any]:
    """A tile's name, zone, max HR and heart rate, read in one go (values keep arriving)."""
    out: dict[str, Any] = await page.evaluate(
        """(d) => { const t = document.querySelector(`.tile[data-device="${d}"]`);
          if (!t) return null;
          return {name: t.querySelector('.name').textContent, zone: Number(t.dataset.zone),
                  maxHr: t.dataset.maxHr ? Number(t.dataset.maxHr) : null,
                  hr: t.querySelector('.hr-value').textContent,
                  hrState: t.querySelector('.hr-value').dataset.state}; }""",
        device,
    )
    return out


async def open_page(browser: Browser, url: str, width: int = 1280, height: int = 800) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(30_000)
    await page.goto(url)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def class_page_checks(browser: Browser, url: str, specs: dict[str, Any], no_power: str) -> None:
    page = await open_page(browser, url, 1280, 800)

    async def all_live() -> bool:
        views = [await tile(page, d) for d in specs]
        return all(v is not None and v["hrState"] == "live" for v in views)

    await until(all_live, "a live tile per rider")
    # Names, and zones from each rider's own max HR (not a fixed 190).
    for device, spec in specs.items():
        view = await tile(page, device)
        assert view["name"] == spec.name
        assert view["maxHr"] == spec.max_hr
        if view["hrState"] == "live" and view["hr"].isdigit():
            # The hub computed the zone from the very value shown; allow a neighbour zone at a boundary
            # only if the value moved between the hub's zone and the page's read (both in one frame).
            assert view["zone"] == hr_zone(int(view["hr"]), spec.max_hr), (device, view, spec.max_hr)

    # The class timer advances.
    await until(lambda: page.is_visible("#timer"), "the class timer")
    t1 = int(await page.get_attribute("#timer", "data-elapsed") or "-1")
    assert t1 >= 0, t1

    async def timer_advanced() -> bool:
        return int(await page.get_attribute("#timer", "data-elapsed") or "-1") >= t1 + 1

    await until(timer_advanced, "the class timer to advance")
    assert ":" in await page.inner_text("#timer")

    # The leaderboard ranks by cumulative output (kJ); the bike without a power meter is ranked apart.
    async def board_ready() -> bool:
        n = await page.locator("#board-rows tr").count()
        return n == len(specs) - 1 and await page.is_visible("#effort")

    await until(board_ready, "the kJ leaderboard and the no-power list")

    async def kj_apart() -> bool:
        kj = await page.eval_on_selector_all(
            "#board-rows tr", "rows => rows.map(r => r.cells[2].textContent)"
        )
        return len(set(kj)) == len(kj)

    await until(kj_apart, "the riders' outputs to differ (so that the order means something)")
    board: dict[str, Any] = await page.evaluate(
        """() => ({
          main: [...document.querySelectorAll('#board-rows tr')].map(r => ({device: r.dataset.device,
                 rank: r.cells[0].textContent, kj: r.cells[2].textContent})),
          effort: [...document.querySelectorAll('#effort-rows tr')].map(r => ({device: r.dataset.device,
                 rank: r.cells[0].textContent, hard: r.cells[2].textContent}))})"""
    )
    assert [r["device"] for r in board["effort"]] == [no_power], board
    assert board["effort"][0]["rank"] == "1"
    assert no_power not in [r["device"] for r in board["main"]]
    kjs = [float(r["kj"]) for r in board["main"]]
    assert kjs == sorted(kjs, reverse=True) and kjs[0] > 0, board
    assert [r["rank"] for r in board["main"]] == [str(i + 1) for i in range(len(kjs))]

    # Normal syncing is neutral, not amber.
    colours: dict[str, str] = await page.evaluate(
        """() => { const s = document.querySelector('.sync[data-sync="syncing"]');
          const probe = document.createElement('span'); probe.style.color = 'var(--warn)';
          document.body.append(probe);
          const out = {sync: s ? getComputedStyle(s).color : null, warn: getComputedStyle(probe).color};
          probe.remove(); return out; }"""
    )
    if colours["sync"] is not None:
        assert colours["sync"] != colours["warn"], colours
    await shot(page, "class-desktop.png", ".class-view")

    # A phone: the header keeps the title on one line and wraps only its meta items.
    await page.set_viewport_size({"width": 390, "height": 844})

    async def phone_layout() -> bool:
        return bool(await page.evaluate("() => document.documentElement.clientWidth <= 390"))

    await until(phone_layout, "the page laid out at the phone's width")
    header: dict[str, float] = await page.evaluate(
        """() => { const h = document.querySelector('.bar'), t = document.getElementById('title');
          const cs = getComputedStyle(t), box = t.getBoundingClientRect();
          const lh = parseFloat(cs.lineHeight) || parseFloat(cs.fontSize) * 1.3;
          const doc = document.documentElement;
          return {height: h.getBoundingClientRect().height, titleW: box.width, titleH: box.height,
                  lineH: lh, width: doc.clientWidth, scrollW: doc.scrollWidth}; }"""
    )
    assert header["titleH"] <= header["lineH"] * 1.5, header  # one line, not a letter per line
    assert header["titleW"] >= 120, header
    assert header["height"] <= 140, header  # a few lines at most
    assert header["scrollW"] <= header["width"] + 1, header  # nothing sticks out sideways
    await shot(page, "class-phone.png", "body")
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    await page.close()


async def refusal_check(browser: Browser, base: str, keys: KeyRing) -> None:
    other = keys.issue(Role.VIEWER, "dash-x", classes=["another-class"])
    page = await open_page(browser, f"{base}/classes/{CLASS}?token={quote(other)}", 1280, 600)
    await until(lambda: page.is_visible("#conn-detail"), "the refusal's reason on the page")
    text = await page.inner_text("#conn-detail")
    assert "token_wrong_scope" in text and CLASS in text, text
    await page.close()


async def test_class_page_results_and_identity_across_restarts(tmp_path: Path, chromium: Path) -> None:
    data = tmp_path / "data"
    config = DemoConfig(
        riders=3,
        speed=8.0,
        port=0,
        data_dir=data,
        class_id=CLASS,
        leaderboard_s=1.0,
        start_at_s=540,
        sync_timeout_s=30.0,
    )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            async with running_demo(config, simulated_rig) as demo:
                specs = {r.spec.device: r.spec for r in demo.riders}
                no_power = next(r.spec.device for r in demo.riders if r.spec.bike != "peloton")
                peloton = next(r for r in demo.riders if r.spec.bike == "peloton")

                # The shared title and rating, as an app would set them (here the owning bike's token),
                # once the backend has the ride (its first samples synced).
                async def ride_on_backend() -> bool:
                    return bool(demo.backend_seqs(peloton))

                await until(ride_on_backend, "the Peloton rider's ride on the backend")
                async with aiohttp.ClientSession() as http:
                    resp = await http.put(
                        f"{demo.base_url}/v1/rides/{peloton.ride_id}/meta",
                        json={"title": "Hill climb", "rating": 4},
                        headers={"Authorization": f"Bearer {peloton.token}"},
                    )
                    assert resp.status == 200, await resp.text()
                await class_page_checks(browser, demo.dashboard_url, specs, no_power)
                await refusal_check(browser, demo.base_url, KeyRing.load_or_create(data))

                # Every bike's ride carries cadence (the DIY sensor's first revolutions) before the end:
                # samples with a cadence on the backend, not only readings the sensor delivered.
                async def cadence_stored() -> bool:
                    return all(demo.backend_with(r)["cadence"] > 0 for r in demo.riders)

                await until(cadence_stored, "samples carrying cadence from every bike on the backend")
                await demo.end_rides()
                for rider in demo.riders:
                    out = rider.outcome
                    assert out is not None and out.backend_with["cadence"] > 0, rider.spec.device
                viewer = demo.viewer_token
                rides = {r.spec.device: r.ride_id for r in demo.riders}

            # The class is over and the server restarts (a real `ridesync serve` on the same data dir):
            # the demo's viewer token still opens the results and every ride.
            keys = KeyRing.load_or_create(data)
            async with ridesync_serve(data) as base:
                # The class page, with nobody riding any more, opens (the token is still good) and points
                # at the results.
                page = await open_page(browser, f"{base}/classes/{CLASS}?token={quote(viewer)}")
                await until(lambda: page.is_visible("#empty a"), "the link to the results on the class page")
                assert "/results" in (await page.get_attribute("#empty a", "href") or "")

                # The empty class shows from the rides fetch; the hub connection opens on its own.
                async def hub_live() -> bool:
                    return await page.inner_text("#conn") == "live"

                await until(hub_live, "the class page's hub connection live")
                await page.close()
                page = await open_page(browser, f"{base}/classes/{CLASS}/results?token={quote(viewer)}")

                async def results_loaded() -> bool:
                    return await page.get_attribute("#results", "data-loaded") == str(len(rides))

                await until(results_loaded, "every ride's totals on the results page")
                rows: list[dict[str, str]] = await page.evaluate(
                    """() => [...document.querySelectorAll('#results-rows tr')].map(r => ({
                      device: r.dataset.device, ride: r.dataset.ride, who: r.cells[0].textContent,
                      kj: r.cells[4].textContent, state: r.cells[10].textContent}))"""
                )
                assert {r["device"]: r["ride"] for r in rows} == rides
                for r in rows:
                    assert r["who"] == specs[r["device"]].name, r
                    assert r["state"].startswith("finalized"), r
                    if r["device"] == no_power:
                        assert r["kj"] == "no meter", r
                    else:
                        assert float(r["kj"]) > 0, r
                await shot(page, "results.png", ".results")
                assert not page.errors, page.errors  # type: ignore[attr-defined]
                await page.close()

                # A finished ride with power: charts from the backend, cadence too, no live-trace note.
                page = await open_page(
                    browser, f"{base}/rides/{quote(peloton.ride_id)}?token={quote(viewer)}&class={CLASS}"
                )

                async def charted() -> bool:
                    pts = await page.get_attribute("#cad-chart", "data-points")
                    return int(pts or "0") > 0

                await until(charted, "the cadence chart of a stored ride")

                # The class lookup (live trace or not) has answered once the title names the rider.
                async def looked_up() -> bool:
                    return peloton.spec.name in await page.inner_text("#title")

                await until(looked_up, "the rider's name in the title (the class lookup answered)")
                notes = " ".join([await page.inner_text(f"#{k}-note") for k in ("hr", "pwr", "cad")])
                assert "No live trace" not in notes and "Live trace" not in notes, notes
                title = await page.inner_text("#title")
                assert "Hill climb" in title, title
                assert await page.get_attribute("#rating", "data-rating") == "4"
                assert int(await page.get_attribute("#pwr-chart", "data-points") or "0") > 0
                await shot(page, "ride.png", ".ride")
                await page.close()

                # A ride without a power meter says so.
                page = await open_page(
                    browser, f"{base}/rides/{quote(rides[no_power])}?token={quote(viewer)}&class={CLASS}"
                )

                # The ride's summary alone already says "No power meter" (and the page may redraw its
                # still empty charts then); the stored series is charted a request later, with its note.
                async def no_meter() -> bool:
                    empty = await page.get_attribute("#pwr-chart", "data-empty")
                    note = await page.inner_text("#pwr-note")
                    return empty == "No power meter" and "no power meter" in note

                await until(no_meter, '"No power meter" on a ride without power, its series charted')
                assert int(await page.get_attribute("#cad-chart", "data-points") or "0") > 0
                assert "No live trace" not in await page.inner_text("#hr-note")
                await page.close()

                # Real riders joining: the name and max HR from the token, or from the publisher (which
                # wins over its token). 125 bpm is Z2 of 190, Z3 of 160, Z4 of 150.
                flag_tok = keys.issue(Role.BIKE, "bike-7", classes=[CLASS], name="Token Name", max_hr=150)
                token_tok = keys.issue(Role.BIKE, "bike-8", classes=[CLASS], name="Zoe", max_hr=150)
                page = await open_page(browser, f"{base}/classes/{CLASS}?token={quote(viewer)}")
                async with (
                    publishing(base, flag_tok, 125, name="Ann Flag", max_hr=160),
                    publishing(base, token_tok, 125),
                ):

                    async def named() -> bool:
                        a, b = await tile(page, "bike-7"), await tile(page, "bike-8")
                        return bool(
                            a and b and a["hrState"] == b["hrState"] == "live" and a["name"] == "Ann Flag"
                        )

                    await until(named, "the real riders' tiles with their names")
                    assert await tile(page, "bike-7") == {
                        "name": "Ann Flag",
                        "zone": 3,
                        "maxHr": 160,
                        "hr": "125",
                        "hrState": "live",
                    }
                    assert await tile(page, "bike-8") == {
                        "name": "Zoe",
                        "zone": 4,
                        "maxHr": 150,
                        "hr": "125",
                        "hrState": "live",
                    }

                # `ridesync ride --name --max-hr` over a token naming someone else: the flags win.
                rita_tok = keys.issue(Role.BIKE, "bike-9", classes=[CLASS], name="Token Rita", max_hr=150)
                ride = await ridesync_ride(
                    base, rita_tok, tmp_path / "bike-9", "--name", "Rita", "--max-hr", "170"
                )

                try:

                    async def rita_live() -> bool:
                        r = await tile(page, "bike-9")
                        return bool(r and r["hrState"] == "live")

                    await until(rita_live, "the tile of the bike started with `ridesync ride`")
                    rita = await tile(page, "bike-9")
                    assert (rita["name"], rita["maxHr"]) == ("Rita", 170), rita
                    assert rita["zone"] == hr_zone(int(rita["hr"]), 170), rita
                    # Ctrl-C ends the ride (a duration it never reaches kept it on while its tile was read).
                    ride.send_signal(signal.SIGINT)
                    async with asyncio.timeout(120):
                        assert await ride.wait() == 0
                finally:
                    if ride.returncode is None:
                        ride.kill()
                        await ride.wait()
                await page.close()

            # Another restart: bike-7 comes back with a token that names nobody and no hello name; the
            # class page still shows its name and zones, the results page still names the demo riders.
            async with ridesync_serve(data) as base:
                plain = keys.issue(Role.BIKE, "bike-7", classes=[CLASS])
                page = await open_page(browser, f"{base}/classes/{CLASS}?token={quote(viewer)}")
                async with publishing(base, plain, 125):

                    async def remembered() -> bool:
                        a = await tile(page, "bike-7")
                        return bool(a and a["hrState"] == "live")

                    await until(remembered, "bike-7's tile after the restart")
                    assert await tile(page, "bike-7") == {
                        "name": "Ann Flag",
                        "zone": 3,
                        "maxHr": 160,
                        "hr": "125",
                        "hrState": "live",
                    }
                await page.close()
                page = await open_page(browser, f"{base}/classes/{CLASS}/results?token={quote(viewer)}")
                await until(
                    results_loaded_on(page, len(rides) + 1), "the results page after the second restart"
                )
                names = await page.eval_on_selector_all(
                    "#results-rows td.who", "els => els.map(e => e.textContent)"
                )
                assert sorted(names) == sorted([*(s.name for s in specs.values()), "Rita"])
                await page.close()
        finally:
            await browser.close()


def results_loaded_on(page: Page, n: int) -> Any:
    async def check() -> bool:
        return await page.get_attribute("#results", "data-loaded") == str(n)

    return check
