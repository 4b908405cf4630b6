"""An app opens only a ride that exists on the backend: `ridesync app --ride-id typo` creates nothing,
neither on the backend nor in the app's replica, and says why (real `ridesync serve` on loopback)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from engine.device.common import replica_dir
from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.device.test_e2e import app_cmd, ride_cmd
from tests.support.processes import HANG_GUARD_S, Backend, spawn


async def test_app_with_a_mistyped_ride_id_is_refused_and_creates_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    bike_token = backend.token("bike", "bike-t1", rider="ana")
    app_token = backend.token("app", "tablet-t1", rider="ana")
    async with asyncio.timeout(HANG_GUARD_S):
        app = await spawn(
            *app_cmd(backend.url, app_token, "typo", tmp_path / "app", "--set", "title=Oops", "--end"),
            stderr_path=tmp_path / "app.log",
        )
        code = await app.finish()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{backend.url}/v1/rides", headers={"Authorization": f"Bearer {bike_token}"}) as resp,
        ):
            listed = await resp.json()
    assert code == 2, app.lines[-3:]
    assert json.loads((tmp_path / "app.log").read_text().strip().splitlines()[-1]) == {
        "error": "ride typo does not exist on the backend"
    }
    assert [r["ride_id"] for r in listed["rides"]] == []
    store = ReplicaStore(
        replica_dir(tmp_path / "app", Role.APP, "tablet-t1"), device_id="tablet-t1", role=Role.APP
    )
    try:
        assert store.rides() == []
    finally:
        store.close()


async def test_after_finalization_the_app_renames_and_rates_but_leaves_targets(
    backend: Backend, tmp_path: Path
) -> None:
    bike_token = backend.token("bike", "bike-t2", rider="bo")
    app_token = backend.token("app", "tablet-t2", rider="bo")
    async with asyncio.timeout(HANG_GUARD_S):
        bike = await spawn(*ride_cmd(backend.url, bike_token, "r-fin", tmp_path / "bike", 120))
        assert await bike.finish() == 0 and bike.last["phase"] == "finalized"
        ok = await spawn(
            *app_cmd(backend.url, app_token, "r-fin", tmp_path / "app", "--set", "title=Yesterday", "--set",
                     "rating=4", "--set", "notes=felt strong"),
            stderr_path=tmp_path / "ok.log",
        )  # fmt: skip
        assert await ok.finish() == 0, (ok.lines[-3:], (tmp_path / "ok.log").read_text()[-2000:])
        frozen = await spawn(
            *app_cmd(backend.url, app_token, "r-fin", tmp_path / "app", "--set", "target.power_w=250"),
            stderr_path=tmp_path / "frozen.log",
        )
        code = await frozen.finish()
        view = await backend.ride("r-fin", bike_token)
    assert ok.last["shared"] == {"title": "Yesterday", "rating": 4, "notes": "felt strong"}
    assert ok.last["sync_state"] == "reconciled"
    assert code == 2
    error = json.loads((tmp_path / "frozen.log").read_text().strip().splitlines()[-1])["error"]
    assert "target.power_w can no longer change" in error and "nothing was written" in error
    assert view["shared"] == {"title": "Yesterday", "rating": 4, "notes": "felt strong"}
    assert view["phase"] == "finalized" and view["sync"]["state"] == "reconciled"
    assert view["samples"] == {"bike-t2": 120} and view["totals"] == bike.last["totals"]
