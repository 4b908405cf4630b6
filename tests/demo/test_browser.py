"""The dashboard in real Chromium (Debian's, driven by Playwright through executable_path) against an
in-process demo: tiles appear and move, the leaderboard updates, a strap that walks out of range shows
"no contact" then "stale" and recovers, and the ride page renders."""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from aiohttp import web

from engine.cli.commands.demo import simulated_rig
from engine.demo.session import DemoConfig, DemoSession, running_demo
from engine.live.routes import OPEN
from tests.support.browser import CHROMIUM_ARGS, HANG_GUARD_S, SCREENSHOTS
from tests.support.paths import ROOT

pytestmark = pytest.mark.slow

pytest.importorskip("playwright.async_api")
from playwright.async_api import Page, async_playwright  # noqa: E402


async def until(check: Callable[[], Awaitable[bool]], what: str, guard_s: float = HANG_GUARD_S) -> None:
    """Poll a page condition; the timeout is only a hang guard."""
    try:
        async with asyncio.timeout(guard_s):
            # The condition lives in the browser: there is no event to wait on, so poll it.
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for: {what}") from None


LATENCY_TEXT = re.compile(r"^live latency p50 -?[\d.]+ ms · p99 -?[\d.]+ ms$")


async def check_page_latency(page: Page, demo: DemoSession) -> dict[str, Any]:
    """The page's own live-latency record (static/latency.js): one sample per heart-rate value it newly
    received, bounded by what the straps delivered; shown in the footer. Numbers, not speeds, are checked."""
    # One evaluate, so the summary and the samples are the same moment of the page (values keep arriving).
    both: dict[str, Any] = await page.evaluate(
        "() => ({summary: window.ridesyncLatency(), samples: window.ridesyncLatency.samples()})"
    )
    summary: dict[str, Any] = both["summary"]
    samples: list[float] = both["samples"]
    # Read after the page: the sensors' counters only grow, so this bounds what the page can have seen.
    delivered = sum(r.hr.readings["heart_rate"] for r in demo.riders)
    # Every rider's shown value changed since the snapshot, so each contributed at least one new value.
    assert len(demo.riders) <= summary["count"] <= delivered, (summary, delivered)
    assert summary["window"] == len(samples) == min(summary["count"], summary["window_size"])
    assert all(math.isfinite(x) for x in samples)
    # Causality, not speed: no value arrives before the bike received it (t is rounded to 1 ms, Date.now()
    # truncates to 1 ms; one machine, one clock).
    assert min(samples) >= -2.0, summary
    assert summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"] == round(max(samples), 2)

    await latency_shown(page)
    return summary


async def latency_shown(page: Page) -> None:
    async def footer_shows() -> bool:
        return LATENCY_TEXT.match(await page.inner_text("#latency")) is not None

    await until(footer_shows, "the live-latency readout in the footer")


async def test_class_view_and_ride_page_in_chromium(demo: DemoSession, chromium: Path) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(demo.dashboard_url)

            def hr_state(device: str) -> Awaitable[str | None]:
                return page.get_attribute(f'.tile[data-device="{device}"] .hr-value', "data-state")

            def hr_text(device: str) -> Awaitable[str]:
                return page.inner_text(f'.tile[data-device="{device}"] .hr-value')

            # Tiles appear, one per rider, with live numbers.
            devices = [r.spec.device for r in demo.riders]

            async def all_live() -> bool:
                return all(
                    [await page.locator(f'.tile[data-device="{d}"]').count() == 1 for d in devices]
                ) and all([await hr_state(d) == "live" for d in devices])

            await until(all_live, "a live tile per rider")
            assert await page.inner_text("#conn") == "live"
            first = {d: await hr_text(d) for d in devices}
            assert all(v.isdigit() and int(v) > 0 for v in first.values()), first

            async def values_changed() -> bool:
                return all([await hr_text(d) != first[d] for d in devices])

            await until(values_changed, "every rider's heart rate to change")
            measured = await check_page_latency(page, demo)

            async def power_shown() -> bool:
                text = await page.inner_text(f'.tile[data-device="{devices[0]}"] .pwr')
                return text.endswith(" W") and text[:-2].isdigit()

            await until(power_shown, "power on a Peloton rider's tile")

            # The leaderboard fills and updates.
            async def board_seq() -> int:
                return int(await page.get_attribute("#board", "data-seq") or "0")

            async def board_full() -> bool:
                # Ranked by output, bikes without a power meter are listed apart (#effort-rows).
                ranked = await page.locator("#board-rows tr, #effort-rows tr").count()
                return ranked == len(devices)

            await until(board_full, "a leaderboard row per rider")
            seq = await board_seq()

            async def board_moved() -> bool:
                return await board_seq() > seq

            await until(board_moved, "a leaderboard update")
            await page.screenshot(path=str(SCREENSHOTS / "class-view.png"))

            # A strap walks out of range: "no contact", then "stale" -- never a frozen number -- then back.
            walker = demo.riders[0]
            assert walker.sensors.strap is not None
            walker.sensors.strap.walk_out_of_range()

            async def state_is(state: str) -> bool:
                return await hr_state(walker.spec.device) == state

            await until(lambda: state_is("no_contact"), "no contact after the strap walked away")
            assert await hr_text(walker.spec.device) == "no contact"
            await page.screenshot(path=str(SCREENSHOTS / "no-contact.png"))
            await until(lambda: state_is("stale"), "stale after no contact")
            assert await hr_text(walker.spec.device) == "stale"
            await page.screenshot(path=str(SCREENSHOTS / "stale.png"))
            # The others kept streaming meanwhile.
            assert all([await hr_state(d) == "live" for d in devices[1:]])
            walker.sensors.strap.walk_back()
            await until(lambda: state_is("live"), "live again after the strap came back", guard_s=90)
            assert (await hr_text(walker.spec.device)).isdigit()
            await page.screenshot(path=str(SCREENSHOTS / "recovered.png"))
            later = await check_page_latency(page, demo)
            assert later["count"] > measured["count"]

            # The sync state is the backend's for the rider's ride: its bike replica is syncing it.
            async def syncing() -> bool:
                return await page.inner_text(f'.tile[data-device="{devices[0]}"] .sync') == "sync: syncing"

            await until(syncing, "the backend's sync state on the tile")
            assert await page.get_attribute(f'.tile[data-device="{devices[0]}"] .sync', "title")

            # The ride page: the backend's ride chart when it serves one, else a clear message plus the
            # rider's live trace, which is drawn on the canvas.
            await page.click(f'.tile[data-device="{devices[0]}"] a.name')
            await page.wait_for_url(f"**/rides/{demo.riders[0].ride_id}**")

            async def chart_drawn() -> bool:
                return int(await page.get_attribute("#hr-chart", "data-points") or "0") >= 3

            async def message_or_summary() -> bool:
                return await page.is_visible("#ride-message") or await page.is_visible("#ride-summary")

            await until(message_or_summary, "the ride page's message or summary")
            # The backend serves this ride (the rider's bike replica syncs it): its summary, not a message.
            await until(lambda: page.is_visible("#ride-summary"), "the backend's ride summary")
            # One download link per format, each the backend's export of this ride, named for it.
            await until(lambda: page.is_visible("#ride-export"), "the ride's download links")
            for fmt in ("fit", "tcx", "csv"):
                href = await page.get_attribute(f'#ride-export a[data-format="{fmt}"]', "href")
                assert href is not None and f"/export?format={fmt}" in href
                download = await page.request.get(urljoin(page.url, href))
                assert download.status == 200, await download.text()
                disposition = download.headers["content-disposition"]
                assert disposition == f'attachment; filename="{demo.riders[0].ride_id}.{fmt}"'
            await until(chart_drawn, "the heart-rate chart")
            await page.screenshot(path=str(SCREENSHOTS / "ride-page.png"))

            # Back to the class, later in the ride (riders in different zones), for the README.
            await page.click("#back")
            await until(all_live, "the class view again")
            await latency_shown(page)  # a fresh page measures again (the README's screenshot shows it)
            await page.screenshot(path=str(SCREENSHOTS / "class-view-later.png"))
            # The README's screenshot: refreshed on request, so CI runs leave the tree clean.
            docs_png = ROOT / "docs" / "dashboard.png"
            if os.environ.get("RIDESYNC_UPDATE_SCREENSHOT") == "1" or not docs_png.exists():
                shutil.copyfile(SCREENSHOTS / "class-view-later.png", docs_png)
            assert errors == []
        finally:
            await browser.close()


def _ride_endpoints(states: dict[str, str]) -> Callable[[web.Application], None]:
    """A stand-in for the durable lane's endpoints, serving exactly the JSON engine/dashboard/README.md
    specifies, so the page's side of that contract is checked before the sync lane exists."""

    async def ride(request: web.Request) -> web.Response:
        ride_id = request.match_info["ride_id"]
        if ride_id not in states:
            return web.json_response({"error": "unknown_ride", "detail": ride_id}, status=404)
        state = states[ride_id]
        return web.json_response(
            {
                "ride_id": ride_id,
                "phase": "active",
                "authority": "bike",
                "samples": {"bike-01": 600},
                "duration_s": 600.0,
                "totals": {"avg_hr": 141.2, "max_hr": 171, "avg_power_w": 187.5, "output_kj": 112.4},
                "end_events_counted": 0,
                "sync_state": state,
                "sync_reason": "HTTP 503 from backend, retrying" if state == "failed" else None,
            }
        )

    async def series(request: web.Request) -> web.Response:
        hr = [[float(t), None if 200 <= t < 230 else 120 + 40 * (t % 180 < 120)] for t in range(600)]
        pwr = [[float(t), 150.0 + (t % 60)] for t in range(600)]
        return web.json_response(
            {"ride_id": request.match_info["ride_id"], "t0": 1795777397.0, "series": {"hr": hr, "pwr": pwr}}
        )

    def setup(app: web.Application) -> None:
        app.router.add_get("/v1/rides/{ride_id}", ride)
        app.router.add_get("/v1/rides/{ride_id}/series", series)

    return setup


async def test_sync_state_and_ride_chart_when_the_backend_serves_rides(
    tmp_path: Path, chromium: Path
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    states: dict[str, str] = {}
    # The live lane only: this test serves its own stand-in for the backend's ride routes.
    config = DemoConfig(riders=2, speed=4.0, port=0, data_dir=tmp_path / "data", durable_lane=False)
    async with running_demo(config, simulated_rig, extra_lanes=[_ride_endpoints(states)]) as demo:
        states[demo.riders[0].ride_id] = "reconciled"
        states[demo.riders[1].ride_id] = "failed"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(demo.dashboard_url)

                async def sync_of(device: str) -> str | None:
                    return await page.get_attribute(f'.tile[data-device="{device}"] .sync', "data-sync")

                async def synced() -> bool:
                    return await sync_of("bike-01") == "reconciled" and await sync_of("bike-02") == "failed"

                await until(synced, "each tile's sync state from GET /v1/rides/{id}")

                # The hub drops every connection: the page says so, reconnects by itself, and streams again.
                assert await page.get_attribute("#conn", "data-connects") == "1"
                await asyncio.gather(*(c.close(1012, "restarting") for c in list(demo.app[OPEN].conns)))

                async def reconnected() -> bool:
                    return await page.get_attribute("#conn", "data-connects") == "2" and (
                        await page.get_attribute("#conn", "data-state") == "live"
                    )

                await until(reconnected, "the page to reconnect to the hub")
                before = await page.inner_text('.tile[data-device="bike-01"] .hr-value')

                async def streaming_again() -> bool:
                    text = await page.inner_text('.tile[data-device="bike-01"] .hr-value')
                    return text.isdigit() and text != before

                await until(streaming_again, "values moving again after the reconnect")
                title = await page.get_attribute('.tile[data-device="bike-02"] .sync', "title")
                assert title == "HTTP 503 from backend, retrying"
                await page.screenshot(path=str(SCREENSHOTS / "class-view-sync.png"))

                await page.goto(f"{demo.base_url}/rides/{demo.riders[0].ride_id}?token={demo.viewer_token}")

                async def charted() -> bool:
                    return (await page.get_attribute("#pwr-chart", "data-points")) == "600"

                await until(charted, "the power chart from GET /v1/rides/{id}/series")
                # 30 s without contact are a gap in the line, not zeros.
                assert await page.get_attribute("#hr-chart", "data-points") == "570"
                assert await page.is_hidden("#ride-message")
                summary = await page.inner_text("#ride-summary")
                assert "reconciled" in summary and "141 bpm" in summary
                await page.screenshot(path=str(SCREENSHOTS / "ride-page-series.png"))

                # A refused token is shown as such, with the hub's reason, not as an endless spinner.
                await page.goto(f"{demo.base_url}/classes/{config.class_id}?token=rs1.bogus.bogus.bogus")

                async def refused() -> bool:
                    return await page.get_attribute("#conn", "data-state") == "refused"

                await until(refused, "the header to say the token was refused")
                assert "token_unknown_key" in (await page.get_attribute("#conn", "title") or "")
                # The picker takes ?class=&token= straight to the class.
                await page.goto(f"{demo.base_url}/?class={config.class_id}&token={demo.viewer_token}")
                await page.wait_for_url(f"**/classes/{config.class_id}?token=*")
                assert errors == []
            finally:
                await browser.close()


async def test_a_mixed_class_s_tiles_say_each_rider_s_kind_of_bike(tmp_path: Path, chromium: Path) -> None:
    """`--mix`: Peloton-bus bikes, a DIY cadence sensor and BLE bikes of all three profiles; every tile says
    which, from the rider's hello (the BLE ones once service discovery picked the profile)."""
    config = DemoConfig(riders=6, speed=8.0, port=0, data_dir=tmp_path / "data", durable_lane=False, mix=True)
    expected = {
        "bike-01": "Peloton bus",
        "bike-02": "BLE FTMS",
        "bike-03": "DIY cadence",
        "bike-04": "BLE power",
        "bike-05": "Peloton bus",
        "bike-06": "BLE CSC",
    }
    async with running_demo(config, simulated_rig) as demo:
        assert [r.spec.device for r in demo.riders] == list(expected)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1600, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(demo.dashboard_url)

                async def labels() -> dict[str, str]:
                    return {d: await page.inner_text(f'.tile[data-device="{d}"] .bike') for d in expected}

                async def all_labelled() -> bool:
                    counts = [await page.locator(f'.tile[data-device="{d}"]').count() for d in expected]
                    return counts == [1] * len(expected) and await labels() == expected

                await until(all_labelled, "every tile to say its rider's kind of bike")
                kinds = {
                    d: await page.get_attribute(f'.tile[data-device="{d}"] .bike', "data-bike")
                    for d in expected
                }
                assert kinds == {r.spec.device: r.spec.bike for r in demo.riders}
                # The label sits in the tile's header, visible, beside the rider's name.
                assert await page.is_visible('.tile[data-device="bike-02"] .tile-head .bike')
                assert errors == []
            finally:
                await browser.close()
