"""`ridesync bench rides-list`: how long `GET /v1/rides` holds the event loop over N stored rides.

The backend (the real application on loopback, over a store of N finished rides, none in memory) answers
every page of `GET /v1/rides` to a client that follows `next`; a ticker task on the same loop records the
longest gap between its wake-ups, i.e. the longest time nothing else (a sync message, a live frame,
another request) could run. The baseline beside it does, on the same loop, what one request did before
the listing was paged: every stored ride read back for its line in one go, without yielding.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from engine.backend.config import BackendConfig
from engine.backend.routes import make_setup
from engine.backend.service import Backend
from engine.backend.state import BACKEND
from engine.bench._servers import ms
from engine.bench.backend_start import build
from engine.server.app import build_app
from engine.server.config import ServerConfig
from engine.server.keys import KEYRING

NAME = "rides-list"
HELP = "GET /v1/rides over N stored rides: longest event-loop stall, paged vs one unpaged walk"
TICK_S = 0.001


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rides", type=int, default=1000, help="stored rides (default 1000)")
    parser.add_argument("--samples", type=int, default=60, help="samples per ride (default 60)")
    parser.add_argument("--limit", type=int, default=200, help="page size the client asks for (default 200)")


class Ticker:
    """The longest gap between wake-ups of a task that asks to run every TICK_S."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - TICK_S)
            last = now


async def _paged(session: aiohttp.ClientSession, url: str, token: str, limit: int) -> dict[str, Any]:
    pages, rides, after = 0, 0, None
    t0 = time.perf_counter()
    first_page_s = 0.0
    while True:
        query = f"?limit={limit}" + ("" if after is None else f"&after={after}")
        async with session.get(f"{url}/v1/rides{query}", headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"GET /v1/rides answered {r.status}: {body}")
        pages += 1
        rides += len(body["rides"])
        first_page_s = first_page_s or time.perf_counter() - t0
        after = body["next"]
        if after is None:
            return {"pages": pages, "rides": rides, "first_page_ms": ms(first_page_s),
                    "all_pages_ms": ms(time.perf_counter() - t0)}  # fmt: skip


def _unpaged(backend: Backend) -> int:
    """What one `GET /v1/rides` did before it was paged: every stored ride read back, in one go."""
    for ride_id in backend.store.rides():
        with backend.working.peek(ride_id):
            backend.store.sync_status(ride_id)
            backend.store.phase(ride_id)
    return len(backend.store.rides())


async def _measure(data: Path, limit: int) -> dict[str, Any]:
    setup = make_setup(BackendConfig(rate_per_s=10_000.0, burst=10_000.0))
    app = build_app(ServerConfig(data_dir=data, port=0, init_keys=True), [setup])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url, token = f"http://127.0.0.1:{port}", app[KEYRING].issue("app", "bench")
        backend = app[BACKEND].backend
        assert backend is not None
        out: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tg:
            ticker = Ticker()
            tick = tg.create_task(ticker.run())
            await asyncio.sleep(0.05)
            ticker.longest = 0.0
            out["paged"] = await _paged(session, url, token, limit)
            out["paged"]["longest_loop_stall_ms"] = ms(ticker.longest)
            await asyncio.sleep(0.05)
            ticker.longest = 0.0
            t0 = time.perf_counter()
            rides = _unpaged(backend)
            walk = time.perf_counter() - t0
            await asyncio.sleep(0.05)
            out["unpaged_baseline"] = {"rides": rides, "walk_ms": ms(walk),
                                       "longest_loop_stall_ms": ms(ticker.longest)}  # fmt: skip
            tick.cancel()
        return out
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ridesync-bench-list-") as tmp:
        root = Path(tmp)
        build(root, args.rides, args.samples)
        out: dict[str, Any] = {"rides": args.rides, "samples_per_ride": args.samples, "limit": args.limit}
        out.update(asyncio.run(_measure(root, args.limit)))
    paged, base = out["paged"]["longest_loop_stall_ms"], out["unpaged_baseline"]["longest_loop_stall_ms"]
    out["stall_ratio"] = round(base / max(paged, 1e-3), 1)
    return out
