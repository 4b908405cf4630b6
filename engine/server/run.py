"""Running the application until told to stop: the body of `ridesync serve`, reusable by `ridesync demo`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from engine.server.app import build_app
from engine.server.config import ServerConfig
from engine.server.guard import serve_runner
from engine.server.heap import HeapCollector, HeapTrimmer, glibc_trim
from engine.server.keys import REGISTRY
from engine.server.lane import Lane

log = logging.getLogger(__name__)


async def serve(
    config: ServerConfig,
    lanes: Sequence[Lane] = (),
    on_listening: Callable[[str], None] | None = None,
    stop: Awaitable[object] | None = None,
) -> None:
    """Serve `lanes` (engine/server/lane.py) until SIGINT/SIGTERM (or `stop` completes), then shut down
    cleanly: peers get a close frame with 1001, background tasks are cancelled and awaited."""
    app = build_app(config, lanes)
    # The hub holds thousands of long-lived connection objects; a full cyclic-GC pass over them is a
    # latency spike for every class. Freeze what startup built and collect the young generation less often.
    # The price: garbage in reference cycles stays for a long time, so nothing per connection may be freed
    # only by the cycle collector (a sync connection holds staging copies of documents and frames of up to
    # --max-message-bytes). tests/backend/test_sync_memory.py checks that closed connections go with the
    # collector disabled, and tests/backend/test_serve_memory.py reads this process's RSS after a flood.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # The guard's limits (header and body timeouts, pending cap, keep-alive) apply to every path.
    runner = serve_runner(app)
    await runner.setup()
    trimmer = HeapTrimmer(config.heap_trim_s, trim=glibc_trim()) if config.heap_trim_s > 0 else None
    trimming: asyncio.Task[None] | None = None
    if trimmer is not None:
        app[REGISTRY].register(HeapCollector(trimmer))
        trimming = asyncio.get_running_loop().create_task(trimmer.run(), name="heap trim")
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=4096)
        await site.start()
        # With port 0 the kernel picks a free port: report the one actually bound.
        port = runner.addresses[0][1] if runner.addresses else config.port
        url = f"http://{config.host}:{port}"
        log.info("listening", extra={"url": url, "data_dir": str(config.data_dir)})
        if on_listening is not None:
            on_listening(url)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stopped.set)
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stopped.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("shutting down")
    finally:
        if trimming is not None:
            trimming.cancel()
            await asyncio.gather(trimming, return_exceptions=True)
        await runner.cleanup()
