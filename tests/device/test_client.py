"""DeviceSync's reconnect decisions against real aiohttp servers on loopback: Retry-After honoured,
refusals reported as the ride's sync state. Sleeps are injected, so no test waits out a backoff."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from engine.backoff import Backoff
from engine.device.connection import DeviceSync, sync_url
from engine.ride.schema import Role
from engine.store import ReplicaStore, SyncState


@asynccontextmanager
async def refusing(status: int, headers: dict[str, str]) -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": "refused"}, status=status, headers=headers)

    app = web.Application()
    app.router.add_get("/v1/sync", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def delays_against(url: str, store: ReplicaStore, n: int = 2, *, fail_fast: bool = False) -> DeviceSync:
    enough = asyncio.Event()

    async def fake_sleep(delay: float) -> None:
        if len(sync.delays) >= n:
            enough.set()
            await asyncio.Event().wait()

    sync = DeviceSync(
        store, url, "token", backoff=Backoff(base=0.5, cap=4.0), sleep=fake_sleep, fail_fast=fail_fast
    )
    sync.track("r1")
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        task = tg.create_task(sync.run())
        await enough.wait()
        task.cancel()
    return sync


def bike_store(tmp_path: Path) -> ReplicaStore:
    store = ReplicaStore(tmp_path, device_id="bike-1", role=Role.BIKE)
    store.start_ride("r1")
    return store


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    store = bike_store(tmp_path)
    async with refusing(429, {"Retry-After": "7"}) as url:
        sync = await delays_against(url, store)
    assert all(d >= 7 for d in sync.delays)
    status = store.sync_status("r1")
    assert status.state is SyncState.FAILED
    assert "HTTP 429" in status.reason and "kept on this device" in status.reason
    store.close()


async def test_a_refused_token_is_retried_at_the_cap_and_said(tmp_path: Path) -> None:
    store = bike_store(tmp_path)
    async with refusing(401, {}) as url:
        sync = await delays_against(url, store)
    assert list(sync.delays)[:2] == [4.0, 4.0]
    assert "HTTP 401" in store.sync_status("r1").reason
    store.close()


async def test_unreachable_backend_backs_off_with_jitter_under_the_cap(tmp_path: Path) -> None:
    store = bike_store(tmp_path)
    async with refusing(200, {}) as url:
        pass  # the port is closed now: connections are refused
    sync = await delays_against(url, store, n=6)
    assert all(0 <= d <= 4.0 for d in sync.delays)
    assert len(set(sync.delays)) > 1
    assert "unreachable" in store.sync_status("r1").reason
    store.close()


def test_sync_url() -> None:
    assert sync_url("http://127.0.0.1:8750") == "ws://127.0.0.1:8750/v1/sync"
    assert sync_url("https://h") == "wss://h/v1/sync"
    assert sync_url("ws://h:1/custom") == "ws://h:1/custom"
