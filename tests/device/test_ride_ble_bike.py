"""`ridesync ride --bike sim`: a ride recorded from a simulated BLE bike (an FTMS trainer read through
bleak on the virtual radio), synced to a real backend on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.device.conftest import HANG_GUARD_S, Backend, spawn

RIDE_S = 120


@pytest.mark.slow
async def test_a_ride_from_a_ble_bike_records_cadence_and_power_and_reconciles(
    backend: Backend, tmp_path: Path
) -> None:
    token = backend.token("bike", "bike-ble")
    async with asyncio.timeout(HANG_GUARD_S):
        bike = await spawn(
            "ride", "--backend", backend.url, "--token", token, "--ride-id", "ride-ble", "--bike", "sim",
            "--duration", str(RIDE_S), "--speed", "30", "--data", str(tmp_path / "bike"), "--json",
            "--retry-cap", "1", "--sync-timeout", "60",
            stderr_path=tmp_path / "ride.log",
        )  # fmt: skip
        assert await bike.finish() == 0, bike.lines[-3:]
    summary = bike.last
    assert summary["samples_recorded"] == RIDE_S
    assert summary["sync_state"] == "reconciled" and summary["phase"] == "finalized", summary
    view = await backend.ride("ride-ble", token)
    assert view["samples"] == {"bike-ble": RIDE_S}
    totals = view["totals"]
    # The simulated trainer rides the serial simulator's generated profile: 60-100 rpm, 80-300 W.
    assert 50 <= totals["avg_cadence"] <= 110, totals
    assert 60 <= totals["avg_power_w"] <= 320, totals
