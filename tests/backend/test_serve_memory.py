"""A real `ridesync serve` process flooded with changes it can only queue (their dependency is never
sent), by a viewer and by a writer: the memory goes back once they disconnect, and /metrics counts the
refusals. (The process runs with `serve`'s own GC settings: a frozen heap and a rarely run collector.)"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import aiohttp

from engine.auth.tokens import KeyRing
from engine.campaign.sync_client import SyncClient
from engine.ride.schema import Role, shared_ref
from engine.store import ReplicaStore
from engine.sync.effects import CLOSE_BACKLOG, CLOSE_POLICY_VIOLATION
from tests.backend.test_serve_process import serve
from tests.support.hostile import orphan_changes, raw_peer, sync_frame
from tests.support.samples import T0, sample

RIDE = "ride-flood"
MESSAGES = 30
MESSAGE_BYTES = 4 * 1024 * 1024  # the issue's flood: 30 messages of 4 MB
WRITERS = 3
# What may stay after the flood: allocator slack and caches, far below one flood (120 MB per peer).
MARGIN_BYTES = 64 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, status
    return int(match[1]) * 1024


async def _metrics(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + "/metrics") as resp:
        return await resp.text()


def _value(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    return float(match[1]) if match else 0.0


async def _flood(
    http: aiohttp.ClientSession, url: str, token: str, messages: list[bytes]
) -> tuple[int, int | None]:
    """Send the messages on one connection until the server closes it; (messages sent, close code)."""
    ref = shared_ref(RIDE)
    sent = 0
    async with raw_peer(http, url, token, RIDE) as ws:
        closed = asyncio.Event()

        async def read() -> None:
            async for _ in ws:  # the server's answers, until its close
                pass
            closed.set()

        reader = asyncio.get_running_loop().create_task(read())
        for message in messages:
            if closed.is_set():
                break
            try:
                await ws.send_bytes(sync_frame("hostile", ref, message))
            except (ConnectionError, aiohttp.ClientError):
                break
            sent += 1
        # A server without a limit keeps the connection: then the flooder leaves by itself.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await closed.wait()
        reader.cancel()
        return sent, ws.close_code


async def _settled(http: aiohttp.ClientSession, url: str) -> str:
    """/metrics once the server holds no sync connection (a bounded wait, not a timing check)."""
    for _ in range(300):
        metrics = await _metrics(http, url)
        if _value(metrics, "ridesync_sync_connections") == 0:
            return metrics
        await asyncio.sleep(0.1)
    raise AssertionError("sync connections never closed")


async def test_rss_returns_after_a_viewer_and_writers_flood_queued_changes(tmp_path: Path) -> None:
    data = tmp_path / "server"
    bike = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(60)])
    bike.fold(RIDE)
    flood = orphan_changes(MESSAGES, MESSAGE_BYTES, device="flooder")
    warm = orphan_changes(8, MESSAGE_BYTES // 8, device="warm")
    async with asyncio.timeout(240):
        async with serve(data) as (url, proc), aiohttp.ClientSession() as http:
            ring = KeyRing.load_or_create(data)
            bike_token = ring.issue("bike", "bike-1")
            async with SyncClient(url, bike_token, bike, RIDE) as client:
                await client.open_ride()
                await client.wait_for(lambda: client.received >= 2)
            viewer = ring.issue("viewer", "viewer-1", rides=[RIDE])
            # Warm up every path once (imports, allocator arenas), then take the baseline.
            await _flood(http, url, viewer, warm)
            await _flood(http, url, bike_token, warm)
            await _settled(http, url)
            before = rss_bytes(proc.pid)
            viewer_result = await _flood(http, url, viewer, flood)
            writer_results = [await _flood(http, url, bike_token, flood) for _ in range(WRITERS)]
            metrics = await _settled(http, url)
            after = rss_bytes(proc.pid)
    print(f"RSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
    assert after <= before + MARGIN_BYTES, (before, after)
    # The viewer is refused on its first message; each writer once its queue passes 16 MiB.
    assert viewer_result == (viewer_result[0], CLOSE_POLICY_VIOLATION) and viewer_result[0] >= 1
    assert all(code == CLOSE_BACKLOG for _, code in writer_results), writer_results
    assert all(sent < MESSAGES for sent, _ in writer_results), writer_results
    assert _value(metrics, 'ridesync_sync_gate_rejects_total{reason="not_allowed"}') == 2  # warm-up too
    assert _value(metrics, 'ridesync_sync_gate_rejects_total{reason="backlog"}') == WRITERS
    assert _value(metrics, f'ridesync_sync_closes_total{{code="{CLOSE_POLICY_VIOLATION}"}}') == 2
    assert _value(metrics, f'ridesync_sync_closes_total{{code="{CLOSE_BACKLOG}"}}') == WRITERS
    bike.close()
