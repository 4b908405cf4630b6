"""The aiohttp application factory that `ridesync serve` runs.

Other areas add their routes to the same application through `extra_setup`: each is a function taking
the application, called after the shared keys (engine.server.keys: DATA_DIR, KEYRING, REGISTRY) are set
and before the app is frozen. It may add routes, `cleanup_ctx` lifecycles (the pattern for owned
background tasks), `on_shutdown` hooks and Prometheus collectors on `app[REGISTRY]`. For example the sync
issue's module would expose `def setup_sync(app: web.Application) -> None` and `ridesync serve` would call
`build_app(config, extra_setup=[setup_sync])`. Paths: the hub owns `/live/...`; `/healthz` and `/metrics`
are shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from engine.auth.tokens import KeyRing
from engine.live.relay import Relay
from engine.live.routes import setup_live
from engine.server.config import ServerConfig
from engine.server.guard import GUARD, ConnectionGuard, GuardCollector, refuse_over_cap
from engine.server.keys import DATA_DIR, KEYRING, REGISTRY

Setup = Callable[[web.Application], None]


def build_app(
    config: ServerConfig,
    extra_setup: Sequence[Setup] = (),
    keyring: KeyRing | None = None,
    relay: Relay | None = None,
) -> web.Application:
    # The guard's middleware answers, before any handler, a request the pending cap refused (guard.py).
    app = web.Application(middlewares=[refuse_over_cap])
    app[DATA_DIR] = config.data_dir
    if keyring is None:
        keyring = (KeyRing.load_or_create if config.init_keys else KeyRing.load)(config.data_dir)
    app[KEYRING] = keyring
    app[REGISTRY] = CollectorRegistry()
    # Enforced when the app is run by engine.server.guard.GuardedRunner (as `ridesync serve` runs it).
    app[GUARD] = ConnectionGuard(config.http, app[KEYRING].verify)
    app[REGISTRY].register(GuardCollector(app[GUARD]))
    started = time.time()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "uptime_s": round(time.time() - started, 3)})

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(request.app[REGISTRY])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    setup_live(app, config.hub, relay)
    for setup in extra_setup:
        setup(app)
    return app
