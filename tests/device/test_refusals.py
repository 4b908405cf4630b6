"""A refusal no retry can fix ends `ride` and `app` at once with the backend's reason and the fix (one JSON
error line, exit 2); 429 and 503 stay retryable. Real `ridesync serve` and real client processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from engine.auth.tokens import KeyRing
from engine.backoff import Backoff
from engine.device.connection import DeviceSync, SyncRefused
from engine.store import ReplicaStore
from tests.device.test_client import bike_store, delays_against
from tests.support.processes import RIDESYNC, Backend

HANG_GUARD_S = 90


async def run_cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *RIDESYNC, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(HANG_GUARD_S):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return str(json.loads(lines[0])["error"])


async def test_ride_with_a_token_from_other_keys_fails_fast_with_the_reason(
    backend: Backend, tmp_path: Path
) -> None:
    stranger = KeyRing.load_or_create(tmp_path / "other-keys").issue("bike", "bike-1")
    code, out, err = await run_cli(
        "ride", "--backend", backend.url, "--token", stranger, "--serial", "sim", "--ride-id", "r1",
        "--data", str(tmp_path / "bike"), "--retry-cap", "30", "--json",
    )  # fmt: skip
    assert code == 2, (out, err)
    error = one_error(err)
    assert "HTTP 401 token_unknown_key" in error
    assert "token issue" in error and "data dir" in error  # the fix


async def test_app_of_another_rider_fails_fast_with_not_ride_owner(backend: Backend, tmp_path: Path) -> None:
    bike = backend.token("bike", "bike-1", rider="alice")
    code, out, err = await run_cli(
        "ride", "--backend", backend.url, "--token", bike, "--serial", "sim", "--ride-id", "r1",
        "--duration", "3", "--speed", "10", "--data", str(tmp_path / "bike"), "--json",
    )  # fmt: skip
    assert code == 0, (out, err)
    stranger = backend.token("app", "tablet-9", rider="bob")
    code, out, err = await run_cli(
        "app", "--backend", backend.url, "--token", stranger, "--ride-id", "r1",
        "--data", str(tmp_path / "app"), "--retry-cap", "30", "--json",
    )  # fmt: skip
    assert code == 2, (out, err)
    error = one_error(err)
    assert "HTTP 403 not_ride_owner" in error and "belongs to" in error, error


async def _refusing(status: int, code: str, *, header: bool) -> web.AppRunner:
    async def handler(request: web.Request) -> web.Response:
        headers = {"X-Ridesync-Error": code} if header else {}
        return web.json_response(
            {"error": code, "detail": "why it was refused"}, status=status, headers=headers
        )

    app = web.Application()
    app.router.add_get("/v1/sync", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.mark.parametrize("header", [True, False], ids=["header", "body-only"])
async def test_a_fatal_refusal_raises_with_the_reason_from_the_body(tmp_path: Path, header: bool) -> None:
    """With or without the backend's header naming the code, the reason comes from the refusal's body."""
    runner = await _refusing(401, "token_expired", header=header)
    store = bike_store(tmp_path)
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        sync = DeviceSync(store, url, "token", backoff=Backoff(base=0.5, cap=4.0), fail_fast=True)
        sync.track("r1")
        async with asyncio.timeout(HANG_GUARD_S):
            with pytest.raises(SyncRefused) as refused:
                await sync.run()
        assert (refused.value.status, refused.value.code) == (401, "token_expired")
        assert refused.value.detail == "why it was refused"
        assert "token_expired: why it was refused" in store.sync_status("r1").reason
    finally:
        store.close()
        await runner.cleanup()


@pytest.mark.parametrize("status", [429, 503])
async def test_rate_limits_and_unavailability_stay_retryable_when_failing_fast(
    tmp_path: Path, status: int
) -> None:
    runner = await _refusing(status, "rate_limited", header=True)
    store: ReplicaStore = bike_store(tmp_path)
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        sync = await delays_against(url, store, fail_fast=True)
        assert len(sync.delays) >= 2
    finally:
        store.close()
        await runner.cleanup()
