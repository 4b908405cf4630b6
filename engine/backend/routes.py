"""`setup_backend`: the durable lane on the application `ridesync serve` runs (a `Lane` for
engine.server.app.build_app): `GET /v1/sync` (WebSocket) and the `/v1/rides` API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from engine.backend.config import BackendConfig
from engine.backend.export_routes import add_export_routes
from engine.backend.http import add_routes
from engine.backend.metrics import BackendMetrics
from engine.backend.push import NoPush, RidePush
from engine.backend.ratelimit import RateLimiter
from engine.backend.service import Backend
from engine.backend.state import BACKEND, BackendState
from engine.backend.ws import Connection, sync_endpoint
from engine.server.keys import DATA_DIR, REGISTRY
from engine.server.lane import Lane
from engine.sync.effects import CLOSE_NORMAL

GOING_AWAY = 1001


def make_push(config: BackendConfig) -> RidePush:
    """The ride push `config.push_url` names: Redis pub/sub, or none for a single node."""
    if config.push_url is None:
        return NoPush()
    from engine.backend.redis_push import RedisPush

    return RedisPush(config.push_url)


def make_setup(config: BackendConfig | None = None, push: RidePush | None = None) -> Lane:
    """The backend lane; `push` (default: `make_push(config)`) links it to other nodes over one database."""

    def setup(app: web.Application) -> None:
        cfg = config if config is not None else BackendConfig.from_env()
        metrics = BackendMetrics(app[REGISTRY])
        state = BackendState(cfg, metrics, RateLimiter(cfg.rate_per_s, cfg.burst))
        app[BACKEND] = state

        async def lifecycle(app: web.Application) -> AsyncIterator[None]:
            backend = Backend(app[DATA_DIR], cfg, metrics, push if push is not None else make_push(cfg))
            state.backend = backend
            task = asyncio.create_task(backend.run(), name="backend-run")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                state.backend = None
                backend.close()

        async def on_shutdown(app: web.Application) -> None:
            # Peers get a close frame (1001) before the store closes under them, all at once.
            backend = state.backend
            if backend is None:
                return

            async def close(peer: Connection) -> None:
                with contextlib.suppress(Exception):
                    await peer.shutdown(GOING_AWAY, "server shutting down")

            await asyncio.gather(*(close(p) for p in list(backend.peers) if isinstance(p, Connection)))

        async def sync(request: web.Request) -> web.StreamResponse:
            return await sync_endpoint(request, state)

        app.cleanup_ctx.append(lifecycle)
        app.on_shutdown.append(on_shutdown)
        app.router.add_get("/v1/sync", sync)
        add_routes(app)
        add_export_routes(app)

    return setup


def setup_backend(app: web.Application) -> None:
    """The default setup, limits from the environment (README.md)."""
    make_setup()(app)


__all__ = ["CLOSE_NORMAL", "make_setup", "setup_backend"]
