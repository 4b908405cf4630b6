"""`ridesync demo` as a user runs it: a subprocess on loopback with simulated straps and bikes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.demo.victims import DEFAULT_CHAOS_SEED, chaos_victims
from tests.support.paths import ROOT

# The installed console script, as a user runs it (`python -m engine.cli.main` would load the CLI twice).
RIDESYNC = [str(Path(sys.executable).parent / "ridesync")]
HANG_GUARD_S = 120.0


async def _run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *RIDESYNC, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(HANG_GUARD_S):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.slow
async def test_demo_json_report_shows_every_rider_streaming(tmp_path: Path) -> None:
    rc, out, err = await _run(
        "demo", "--headless", "--riders", "3", "--duration", "20", "--speed", "10", "--json", "--port", "0",
        "--data", str(tmp_path / "data"),
    )  # fmt: skip
    assert rc == 0, err[-2000:]
    assert "Traceback" not in err
    lines = _lines(out)
    assert lines[0]["event"] == "listening"
    assert lines[0]["dashboard_url"].startswith("http://127.0.0.1:")
    assert any(line.get("event") == "summary" for line in lines)
    report = lines[-1]
    assert report["report"] == "demo"
    # The durable lane: every rider is also a bike replica, synced to the backend and ended at the end.
    assert report["durable_lane"] == {"rides": 3, "reconciled": 3, "lost": 0, "duplicated": 0}
    riders = report["riders"]
    assert [r["device"] for r in riders] == ["bike-01", "bike-02", "bike-03"]
    assert {r["bike"] for r in riders} == {"peloton", "line"}
    for r in riders:
        # What the sensors delivered, what the publisher sent, and what a viewer of the class received.
        assert r["sensors"]["hr"]["readings"]["heart_rate"] > 0, r
        assert r["sensors"]["bike"]["readings"]["cadence"] > 0, r
        assert r["published"]["sent"] > 0, r
        assert r["received_by_viewer"]["hr"] > 0, r
        assert r["received_by_viewer"]["cad"] > 0, r
        if r["bike"] == "peloton":
            assert r["sensors"]["bike"]["readings"]["power"] > 0, r
            assert r["received_by_viewer"]["pwr"] > 0, r
        else:  # a DIY reed-switch sensor has no power meter: no power, rather than a made-up one
            assert "pwr" not in r["received_by_viewer"], r
        rec = report["reconciliation"][r["ride_id"]]
        assert rec["device"] == r["device"]
        # 20 s at --speed 10 is ~200 ride seconds, one sample each; the backend holds exactly the bike's.
        assert rec["samples_bike"] > 100, rec
        assert rec["samples_backend"] == rec["samples_bike"], rec
        assert rec["lost"] == 0, rec
        assert rec["duplicated"] == 0, rec
        assert rec["end_events_counted"] == 1, rec
        assert rec["phase"] == "finalized", rec
        assert rec["sync_state"] == "reconciled", rec
        assert rec["bike_sync_state"] == "reconciled", rec
        # The replica recorded the same readings the live lane streamed (fanned out by the demo's pumps).
        assert rec["backend_samples_with"]["hr"] > 0, rec
        assert rec["backend_samples_with"]["cadence"] > 0, rec
    assert set(report["reconciliation"]) == {r["ride_id"] for r in riders}
    assert report["live_latency_hr"]["n"] > 0


@pytest.mark.slow
async def test_mix_puts_every_kind_of_bike_in_the_class_and_reconciles_them(tmp_path: Path) -> None:
    """`--mix`: Peloton-bus bikes, a DIY line sensor and BLE bikes of all three profiles (read through
    bleak on the straps' radio) all reach a viewer of the class, and every ride reconciles."""
    rc, out, err = await _run(
        "demo", "--headless", "--riders", "6", "--duration", "12", "--speed", "10", "--json", "--port", "0",
        "--mix",
    )  # fmt: skip
    assert rc == 0, err[-2000:]
    assert "Traceback" not in err
    report = _lines(out)[-1]
    riders = {r["bike"]: r for r in report["riders"]}
    assert [r["bike"] for r in report["riders"]] == [
        "peloton", "ble-ftms", "line", "ble-cps", "peloton", "ble-csc",
    ]  # fmt: skip
    for kind in ("ble-ftms", "ble-cps", "ble-csc"):
        assert riders[kind]["sensors"]["bike"]["source"].startswith("ble-bike:F0:52:53:42:"), riders[kind]
    # A viewer of the class (as the dashboard's tiles) was told each rider's kind of bike by the rider's own
    # hello: the serial ones from the port they opened, the BLE ones from the service discovery picked.
    assert [r["bike_seen_by_viewer"] for r in report["riders"]] == [r["bike"] for r in report["riders"]]
    with_power = {"peloton", "ble-ftms", "ble-cps"}
    for r in report["riders"]:
        seen = r["received_by_viewer"]
        assert seen["hr"] > 0 and seen["cad"] > 0, r
        # Power only from bikes that measure it: a CSC pod and a reed switch have no power meter.
        assert (seen.get("pwr", 0) > 0) == (r["bike"] in with_power), r
        rec = report["reconciliation"][r["ride_id"]]
        assert rec["sync_state"] == "reconciled" and rec["lost"] == 0 and rec["duplicated"] == 0, rec
        assert rec["samples_backend"] == rec["samples_bike"] > 50, rec
        assert rec["backend_samples_with"]["cadence"] > 0, rec
    assert report["durable_lane"] == {"rides": 6, "reconciled": 6, "lost": 0, "duplicated": 0}


@pytest.mark.slow
async def test_ctrl_c_stops_cleanly_with_a_report(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = await asyncio.create_subprocess_exec(
        *RIDESYNC, "demo", "--riders", "2", "--speed", "5", "--json", "--port", "0", "--summary-every", "1",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            # Wait until a viewer sees both riders streaming, then press Ctrl-C.
            while True:
                line = json.loads(await proc.stdout.readline())
                if line.get("event") == "summary" and line["streaming"] == 2:
                    break
            proc.send_signal(signal.SIGINT)
            rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    report = _lines(rest.decode())[-1]
    assert report["report"] == "demo"
    assert all(r["received_by_viewer"]["hr"] > 0 for r in report["riders"])
    # Ctrl-C ends every ride on its bike replica and waits for the backend before stopping.
    assert len(report["reconciliation"]) == 2
    for rec in report["reconciliation"].values():
        assert rec["lost"] == 0 and rec["duplicated"] == 0, rec
        assert rec["end_events_counted"] == 1, rec
        assert (rec["phase"], rec["sync_state"]) == ("finalized", "reconciled"), rec
    # The simulated bikes' ptys and the demo's temporary data lived under TMPDIR: all closed and removed.
    assert sorted(p.name for p in tmpdir.iterdir()) == []


@pytest.mark.slow
async def test_chaos_faults_are_injected_healed_and_lose_nothing(tmp_path: Path) -> None:
    rc, out, err = await _run(
        # The shortest class the three faults and their recoveries fit in (chaos.MIN_DURATION_S).
        "demo", "--headless", "--riders", "3", "--duration", "30", "--speed", "10", "--chaos", "--json",
        "--port", "0", "--data", str(tmp_path / "data"),
    )  # fmt: skip
    assert rc == 0, err[-2000:]
    assert "Traceback" not in err
    lines = _lines(out)
    # Who gets which fault is printed before the first fault, from the (default, fixed) seed.
    plan = next(e for e in lines if e.get("event") == "chaos_plan")
    first_fault = next(i for i, e in enumerate(lines) if e.get("event") == "chaos")
    assert lines.index(plan) < first_fault
    assert plan["seed"] == DEFAULT_CHAOS_SEED
    assert plan["victims"] == chaos_victims(["bike-01", "bike-02", "bike-03"], DEFAULT_CHAOS_SEED)
    # Each fault is shown as it happens: injected, healed, then recovered, in that order.
    shown = [(e["fault"], e["phase"]) for e in lines if e.get("event") == "chaos"]
    for fault in ("network", "strap_range", "usb"):
        assert [p for f, p in shown if f == fault] == ["injected", "healed", "recovered"], shown
    report = lines[-1]
    assert report["report"] == "demo"
    chaos = report["chaos"]
    faults = {f["fault"]: f for f in chaos["faults"]}
    assert set(faults) == {"network", "strap_range", "usb"}
    assert {f: faults[f]["device"] for f in faults} == plan["victims"]
    assert chaos["plan"]["seed"] == DEFAULT_CHAOS_SEED
    # Three different riders: one loses its sync network, one its strap, one its bike's USB.
    assert len({f["device"] for f in faults.values()}) == 3
    for f in faults.values():
        assert f["recovered"], f
        assert f["injected_at_s"] < f["healed_at_s"] <= f["recovered_at_s"], f
        assert f["ride_reconciled"], f
    assert chaos["all_recovered"] is True
    # The strap and the bike really went away: their adapters reported the link lost.
    by_device = {r["device"]: r for r in report["riders"]}
    assert by_device[faults["strap_range"]["device"]]["sensors"]["hr"]["reconnects"] >= 1
    assert by_device[faults["usb"]["device"]]["sensors"]["bike"]["reconnects"] >= 1
    assert report["durable_lane"] == {"rides": 3, "reconciled": 3, "lost": 0, "duplicated": 0}
    assert len(report["reconciliation"]) == 3
    for rec in report["reconciliation"].values():
        assert rec["samples_backend"] == rec["samples_bike"], rec
        assert rec["lost"] == 0 and rec["duplicated"] == 0, rec
        assert rec["end_events_counted"] == 1, rec
        assert (rec["phase"], rec["sync_state"]) == ("finalized", "reconciled"), rec


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--riders", "0"], "--riders"),
        (["--riders", "99"], "--riders"),
        (["--speed", "0"], "--speed"),
        (["--duration", "-1"], "--duration"),
        (["--class", "no spaces/allowed"], "--class"),
        (["--chaos", "--duration", "10"], "--chaos needs --duration"),
        (["--chaos-seed", "7"], "--chaos-seed only applies with --chaos"),
    ],
)
async def test_bad_options_are_refused_before_anything_starts(args: list[str], message: str) -> None:
    rc, out, err = await _run("demo", "--headless", *args)
    assert rc == 2
    assert out == ""
    assert message in json.loads(err.strip().splitlines()[-1])["error"]
