"""Re-running an ended ride is refused, and `ridesync sync` pushes what a replica holds without sensors;
real processes on loopback."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from engine.chaos.proxy import ChaosProxy
from tests.device.test_e2e import assert_complete, log_tail, ride_cmd
from tests.support.processes import HANG_GUARD_S, Backend, spawn

pytestmark = pytest.mark.slow


def sync_cmd(url: str, token: str, data: Path, *extra: str) -> list[str]:
    return [
        "sync", "--backend", url, "--token", token, "--data", str(data), "--json", "--retry-cap", "1",
        "--sync-timeout", "60", *extra,
    ]  # fmt: skip


async def test_rerunning_a_ride_ended_with_ctrl_c_is_refused(backend: Backend, tmp_path: Path) -> None:
    token = backend.token("bike", "bike-r1")
    cmd = ride_cmd(backend.url, token, "r-rerun", tmp_path / "bike", 3600)
    async with asyncio.timeout(HANG_GUARD_S):
        bike = await spawn(*cmd, stderr_path=tmp_path / "logs" / "ride.log")
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "reconciled")
        bike.proc.send_signal(signal.SIGINT)  # Ctrl-C ends the ride
        assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
        recorded = bike.last["samples_recorded"]
        again = await spawn(*cmd, stderr_path=tmp_path / "logs" / "again.log")
        code = await again.finish()
        # Nothing more on the backend either: the ride is as the first run left it.
        view = await backend.ride("r-rerun", token)
        pushed = await spawn(*sync_cmd(backend.url, token, tmp_path / "bike"))
        assert await pushed.finish() == 0, pushed.lines[-3:]
    assert code != 0
    error = json.loads((tmp_path / "logs" / "again.log").read_text().strip().splitlines()[-1])
    assert "ride r-rerun already ended on this bike" in error["error"]
    assert "ridesync sync" in error["error"]
    assert not again.lines  # no ride event, no summary: it did not start
    assert_complete(view, "bike-r1", recorded)
    result = pushed.last
    assert result["ok"] is True and result["device"] == "bike-r1" and result["role"] == "bike"
    [ride] = result["rides"]
    assert ride["ride_id"] == "r-rerun" and ride["sync_state"] == "reconciled"
    assert ride["phase"] == "finalized" and ride["unacked_samples"] == 0


async def test_sync_pushes_a_ride_recorded_entirely_offline(backend: Backend, tmp_path: Path) -> None:
    token = backend.token("bike", "bike-r2")
    async with asyncio.timeout(HANG_GUARD_S), ChaosProxy(("127.0.0.1", backend.port)) as proxy:
        proxy.partition()
        cmd = ride_cmd(f"http://{proxy.address}", token, "r-offline", tmp_path / "bike", 300)
        cmd[cmd.index("--sync-timeout") + 1] = "1"
        bike = await spawn(*cmd, stderr_path=tmp_path / "logs" / "ride.log")
        # The backend never heard of it: the bike ends the ride, gives up waiting and says so.
        assert await bike.finish() == 1
        assert bike.last["sync_state"] == "failed" and bike.last["samples_recorded"] == 300
        pushed = await spawn(*sync_cmd(backend.url, token, tmp_path / "bike"))
        assert await pushed.finish() == 0, pushed.lines[-3:]
    events = [o for o in pushed.lines if o.get("event") == "sync"]
    assert events and events[-1]["state"] == "reconciled"
    [ride] = pushed.last["rides"]
    assert (
        ride["sync_state"] == "reconciled"
        and ride["phase"] == "finalized"
        and ride["samples"] == {"bike-r2": 300}
    )
    assert_complete(await backend.ride("r-offline", token), "bike-r2", 300)


async def test_sync_without_a_replica_says_so(backend: Backend, tmp_path: Path) -> None:
    token = backend.token("bike", "bike-r3")
    async with asyncio.timeout(HANG_GUARD_S):
        proc = await spawn(*sync_cmd(backend.url, token, tmp_path / "empty"), stderr_path=tmp_path / "e.log")
        assert await proc.finish() == 2
    assert "no replica of bike bike-r3" in json.loads((tmp_path / "e.log").read_text())["error"]
    assert not (tmp_path / "empty").exists()
