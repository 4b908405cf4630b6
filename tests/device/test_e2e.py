"""End-to-end with real processes on loopback (docs/architecture.md#the-contract): `ridesync serve`, `ridesync
ride`
with a simulated strap at --speed 60, `ridesync app`, the fault proxy in between."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from engine.chaos.proxy import ChaosProxy, Faults
from engine.events.idempotency import ride_end_idempotency_key
from engine.metrics_scrape import scrape_async
from tests.support.processes import HANG_GUARD_S, Backend, spawn

pytestmark = pytest.mark.slow

RIDE_S = 1800  # 30 minutes of ride time
NEVER_REACHED_S = 100 * 60  # at --speed 60, 100 s of wall time: within HANG_GUARD_S, a ride's end comes first


def ride_cmd(
    url: str, token: str, ride_id: str, data: Path, duration: int, *extra: str, speed: int = 60
) -> list[str]:
    return [
        "ride", "--backend", url, "--token", token, "--ride-id", ride_id, "--hr", "sim",
        "--duration", str(duration), "--speed", str(speed), "--data", str(data), "--json",
        "--retry-cap", "1", "--heartbeat", "2", "--sync-timeout", "90", "--log-level", "INFO", *extra,
    ]  # fmt: skip


def log_tail(tmp_path: Path, name: str = "ride.log", lines: int = 15) -> str:
    """The end of a process's log, for assertion messages: what it did when a wait ran out."""
    path = tmp_path / "logs" / name
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def assert_complete(view: dict[str, object], device: str, count: int) -> None:
    """Every sample exactly once: the backend holds `count` samples, declared as seqs 0..count-1."""
    assert view["samples"] == {device: count}
    # A ride ended before its first sample (a loaded machine can reconcile the empty ride first) declares
    # no last seq.
    assert view["declared"] == {device: {"last_seq": count - 1 if count else None, "count": count}}
    assert view["missing_samples"] == {}
    assert view["problems"] == []
    assert view["phase"] == "finalized"
    assert view["end_events_counted"] == 1


async def test_offline_for_the_middle_20_minutes(backend: Backend, tmp_path: Path) -> None:
    token = backend.token("bike", "bike-1")
    speed = 120  # 30 ride minutes in 15 wall seconds: the ride's length, not its pace, is the point here
    async with asyncio.timeout(HANG_GUARD_S), ChaosProxy(("127.0.0.1", backend.port)) as proxy:
        bike = await spawn(
            *ride_cmd(f"http://{proxy.address}", token, "ride-off", tmp_path / "bike", RIDE_S, speed=speed),
            stderr_path=tmp_path / "logs" / "ride.log",
        )
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "reconciled")
        # 5 ride minutes in, the backend becomes unreachable.
        await asyncio.sleep(5 * 60 / speed)
        proxy.partition()
        before = len(bike.lines)
        failed = await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "failed")
        # Offline for 20 ride minutes, counted by the bike itself: a sample a ride second, none acknowledged
        # since the partition (however fast or slow the loaded machine runs the ride).
        await bike.wait_line(
            lambda o: o.get("event") == "sync" and o["state"] == "failed" and o["unacked_samples"] >= 20 * 60
        )
        offline = [o for o in bike.lines[before:] if o.get("event") == "sync"]
        proxy.heal()
        assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
    summary = bike.last
    assert summary["samples_recorded"] == RIDE_S
    assert summary["sync_state"] == "reconciled", summary
    assert summary["end_events_counted"] == 1
    assert summary["phase"] == "finalized"
    # While cut off the bike kept recording and said so: failed, with the backlog kept on the device.
    assert "kept on this device" in failed["reason"]
    assert max(o["unacked_samples"] for o in offline) >= 20 * 60
    assert summary["sync_connects"] >= 2
    view = await backend.ride("ride-off", token)
    assert_complete(view, "bike-1", RIDE_S)
    assert view["totals"]["duration_s"] == RIDE_S
    assert view["totals"] == summary["totals"]


def app_cmd(url: str, token: str, ride_id: str, data: Path, *extra: str) -> list[str]:
    return [
        "app", "--backend", url, "--token", token, "--ride-id", ride_id, "--data", str(data), "--json",
        "--retry-cap", "1", "--heartbeat", "2", "--sync-timeout", "90", "--log-level", "INFO", *extra,
    ]  # fmt: skip


def same_view(a: dict[str, object], b: dict[str, object]) -> None:
    for key in ("phase", "authority", "samples", "totals", "end_events_counted", "shared"):
        assert a[key] == b[key], (key, a[key], b[key])


async def test_double_end_through_a_faulty_link_counts_once(backend: Backend, tmp_path: Path) -> None:
    # Issued for the same rider, as in the README: the tablet may then write the rides bike-2 starts.
    bike_token = backend.token("bike", "bike-2", rider="rider-2")
    app_token = backend.token("app", "tablet-2", rider="rider-2")
    faults = Faults(reset=0.3, kill_min=200, kill_window=4000, stall_probability=0.05, stall_max=0.5)
    async with (
        asyncio.timeout(HANG_GUARD_S),
        ChaosProxy(("127.0.0.1", backend.port), faults=faults, seed=7) as proxy,
    ):
        url = f"http://{proxy.address}"
        # Only the app's end stops the bike: a duration the bike could reach first (a few wall seconds at
        # --speed 60, less than the app may need to start on a loaded machine) would end and finalize the
        # ride before the app sets its title, and the bike, gone by then, could not hold that title.
        bike = await spawn(
            *ride_cmd(url, bike_token, "ride-2", tmp_path / "bike", NEVER_REACHED_S),
            stderr_path=tmp_path / "logs" / "ride.log",
        )
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "reconciled")
        # The app ends the ride while the bike is still riding; the bike learns of it through sync,
        # stops and ends it too (the same logical end).
        app = await spawn(
            *app_cmd(url, app_token, "ride-2", tmp_path / "app", "--end", "--set", "title=Hill climb",
                     "--wait-phase", "finalized"),
            stderr_path=tmp_path / "logs" / "app.log",
        )  # fmt: skip
        assert await app.finish() == 0, (app.lines[-3:], log_tail(tmp_path, "app.log"))
        assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
        # A retry long after the fact, under the same key and body, replays: still one end.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{backend.url}/v1/rides/ride-2/end",
                data=b'{"device":"tablet-2","role":"app"}',  # byte for byte what `ridesync app` sent
                headers={
                    "Authorization": f"Bearer {app_token}",
                    "Idempotency-Key": ride_end_idempotency_key("ride-2"),
                },
            ) as resp,
        ):
            assert resp.status == 200
        # Seed 7 plans a reset for connection 3 at byte 364; this test makes at least four.
        assert proxy.count("reset") > 0
    app_view, bike_view = app.last, bike.last
    assert bike_view["end_post"]["ok"] and app_view["end_post"]["ok"]
    view = await backend.ride("ride-2", bike_token)
    # The bike stopped at the app's end; every sample it took is there.
    assert bike_view["ended_by"] == "remote", bike_view
    recorded = bike_view["samples_recorded"]
    assert 0 < recorded < NEVER_REACHED_S
    assert_complete(view, "bike-2", recorded)
    assert view["shared"]["title"] == "Hill climb"
    same_view(view, bike_view)
    # The app may have finished before the bike's last edits reached it; it re-syncs to the same view.
    app2 = await spawn(*app_cmd(backend.url, app_token, "ride-2", tmp_path / "app"))
    assert await app2.finish() == 0
    same_view(view, app2.last)
    assert app_view["end_events_counted"] == 1


async def test_backend_killed_mid_sync_loses_nothing_acknowledged(backend: Backend, tmp_path: Path) -> None:
    token = backend.token("bike", "bike-3")
    speed = 120  # 20 ride minutes in 10 wall seconds
    async with asyncio.timeout(HANG_GUARD_S):
        bike = await spawn(
            *ride_cmd(backend.url, token, "ride-3", tmp_path / "bike", 1200, speed=speed),
            stderr_path=tmp_path / "logs" / "ride.log",
        )
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "reconciled")
        await asyncio.sleep(4 * 60 / speed)  # the kill comes 4 ride minutes into syncing
        acked = await backend.ride("ride-3", token)
        backend.kill()
        await backend.proc.finish() if backend.proc else None
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "failed")
        await backend.start()
        after = await backend.ride("ride-3", token)
        # Everything the backend had acknowledged (served) before the kill is still there.
        assert after["samples"]["bike-3"] >= acked["samples"]["bike-3"] > 0
        assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
    summary = bike.last
    assert summary["sync_state"] == "reconciled"
    assert summary["sync_connects"] >= 2
    assert_complete(await backend.ride("ride-3", token), "bike-3", 1200)


async def test_bike_killed_mid_ride_resumes_from_its_raw_log(backend: Backend, tmp_path: Path) -> None:
    token = backend.token("bike", "bike-4")
    speed = 120  # 10 ride minutes in 5 wall seconds
    cmd = ride_cmd(backend.url, token, "ride-4", tmp_path / "bike", 600, speed=speed)
    async with asyncio.timeout(HANG_GUARD_S):
        bike = await spawn(*cmd, stderr_path=tmp_path / "logs" / "ride.log")
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "reconciled")
        await asyncio.sleep(3 * 60 / speed)  # killed 3 ride minutes in
        bike.kill()
        await bike.finish()
        again = await spawn(*cmd, stderr_path=tmp_path / "logs" / "ride.log")
        assert await again.finish() == 0, (again.lines[-3:], log_tail(tmp_path))
    start = again.events("ride")[0]
    assert start["resumed"] is True and start["next_seq"] > 0
    summary = again.last
    assert summary["samples_recorded"] == 600
    assert summary["recorded_this_run"] == 600 - start["next_seq"]
    assert_complete(await backend.ride("ride-4", token), "bike-4", 600)


async def test_converges_through_resets_stalls_and_a_10_kb_s_cap(backend: Backend, tmp_path: Path) -> None:
    token = backend.token("bike", "bike-5")
    faults = Faults(
        reset=0.5, kill_min=300, kill_window=6000, cut_mid_message=True,
        stall_probability=0.02, stall_max=10.0, bandwidth=10_000,
    )  # fmt: skip
    async with (
        asyncio.timeout(HANG_GUARD_S),
        ChaosProxy(("127.0.0.1", backend.port), faults=faults, seed=0) as proxy,
    ):
        # Cut off for the first 5 ride minutes, so a backlog has to cross the faulty link.
        proxy.partition()
        bike = await spawn(
            *ride_cmd(f"http://{proxy.address}", token, "ride-5", tmp_path / "bike", 900),
            stderr_path=tmp_path / "logs" / "ride.log",
        )
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["unacked_samples"] >= 300)
        proxy.heal()
        assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
        # Seed 0 plans a reset for each of the first three connections (drawn per connection number).
        assert proxy.count("reset") >= 1
    summary = bike.last
    assert summary["sync_state"] == "reconciled"
    assert_complete(await backend.ride("ride-5", token), "bike-5", 900)


@pytest.mark.parametrize(
    ("sensors", "bike_kind"),
    [((), "hr-only"), (("--bike", "sim"), "ble-ftms"), (("--serial", "sim"), "peloton")],
)
async def test_with_a_class_the_ride_also_streams_live(
    backend: Backend, tmp_path: Path, sensors: tuple[str, ...], bike_kind: str
) -> None:
    """Live with a class: the viewer's record has heart rates and the kind of bike the ride opened (a strap
    alone, the simulated BLE bike's FTMS service found on connecting, a serial Peloton bus)."""
    from engine.auth.tokens import KeyRing

    ring = KeyRing.load_or_create(backend.data)
    token = ring.issue("bike", "bike-6", classes=["spin-1"])
    viewer = ring.issue("viewer", "screen-1", classes=["spin-1"])
    # A duration the bike never reaches: the ride must still be on when the live record is read (a rider
    # who left shows no heart rate), and Ctrl-C ends it as soon as that is seen.
    cmd = ride_cmd(backend.url, token, "ride-6", tmp_path / "bike", NEVER_REACHED_S, "--class", "spin-1")
    async with asyncio.timeout(HANG_GUARD_S), aiohttp.ClientSession() as http:
        bike = await spawn(*cmd, *sensors, stderr_path=tmp_path / "logs" / "ride.log")
        # The rider is present (hello) before its first heart rate arrives: wait for a live value.
        record: dict[str, object] = {}
        while "hr" not in record or "bike" not in record:
            async with http.get(f"{backend.url}/live/v1/classes/spin-1", params={"token": viewer}) as resp:
                assert resp.status == 200
                record = (await resp.json())["riders"].get("bike-6", {})
            await asyncio.sleep(0.2)  # polling interval; the loop waits on the condition, not a time
        bike.proc.send_signal(signal.SIGINT)  # Ctrl-C ends the ride
        assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
    hr = record["hr"]
    assert isinstance(hr, dict) and hr["v"] > 0 and hr["state"] == "live"
    assert record["bike"] == bike_kind
    summary = bike.last
    assert summary["ended_by"] == "stopped" and summary["sync_state"] == "reconciled", summary
    assert_complete(await backend.ride("ride-6", token), "bike-6", summary["samples_recorded"])


async def test_segment_interval_picks_live_segments_or_none(backend: Backend, tmp_path: Path) -> None:
    """`ridesync ride` folds into live segments by default (the backend retires them once the bike
    document covers them) and into its bike document alone with `--segment-interval 0`; either way every
    sample arrives once."""
    token = backend.token("bike", "bike-seg")
    retired = []
    for ride_id, extra in (("ride-seg", ()), ("ride-noseg", ("--segment-interval", "0"))):
        before = (await scrape_async(backend.url)).total("ridesync_live_segments_retired_total")
        cmd = ride_cmd(backend.url, token, ride_id, tmp_path / ride_id, 120, *extra)
        async with asyncio.timeout(HANG_GUARD_S):
            bike = await spawn(*cmd, stderr_path=tmp_path / "logs" / "ride.log")
            assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
        assert_complete(await backend.ride(ride_id, token), "bike-seg", 120)
        after = (await scrape_async(backend.url)).total("ridesync_live_segments_retired_total")
        retired.append(after - before)
    assert retired[0] >= 1 and retired[1] == 0, retired
