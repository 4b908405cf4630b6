"""The real `ridesync serve` process: a bike syncs a ride, the server is killed with SIGKILL, and a new
server on the same data dir still holds everything it acknowledged, and still counts the end once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from engine.auth.tokens import KeyRing
from engine.campaign.sync_client import SyncClient
from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.support.backend_server import HANG_GUARD
from tests.support.samples import T0, sample

RIDE = "ride-proc"


@asynccontextmanager
async def serve(data: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    log = open(data.parent / f"serve-{os.getpid()}.log", "ab")  # noqa: ASYNC230, SIM115  # closed below
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--data", str(data), "--init",
        stdout=asyncio.subprocess.PIPE, stderr=log,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        assert line, "ridesync serve printed nothing"
        yield json.loads(line)["url"], proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        log.close()


async def _get(url: str, token: str) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status, await r.json()


async def test_sigkill_loses_nothing_the_backend_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "server"
    bike = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(60)])
    bike.fold(RIDE)
    bike.end_ride(RIDE, t=T0 + 60)
    async with asyncio.timeout(HANG_GUARD):
        async with serve(data) as (url, proc):
            ring = KeyRing.load_or_create(data)
            token = ring.issue("bike", "bike-1")
            async with SyncClient(url, token, bike, RIDE) as client:
                await client.open_ride()
                # Finalized = the backend stored every declared sample and told the bike so.
                await client.wait_for(lambda: bike.view(RIDE).phase.label == "finalized")
            async with aiohttp.ClientSession() as http:
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "end-1"}
                async with http.post(f"{url}/v1/rides/{RIDE}/end", headers=headers, json={}) as r:
                    ended = await r.json()
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        async with serve(data) as (url, _):
            status, body = await _get(f"{url}/v1/rides/{RIDE}", token)
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{url}/v1/rides/{RIDE}/end", headers=headers, json={}) as r,
            ):
                again = (r.status, await r.json(), r.headers["Idempotent-Replayed"])
    assert status == 200
    assert body["phase"] == "finalized"
    assert body["samples"] == {"bike-1": 60}
    assert body["end_events_counted"] == 1
    assert body["sync_state"] == "reconciled"
    assert again == (200, ended, "true")
    bike.close()
