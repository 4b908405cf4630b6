"""The aiohttp application factory that `ridesync serve` runs: the host, which knows no lane.

`build_app(config, lanes)` sets the shared keys (engine.server.keys: DATA_DIR, KEYRING, REGISTRY), adds
`/healthz` and `/metrics`, installs the connection guard's state, then calls every lane in order
(engine.server.lane.Lane: a callable taking the application). Which lanes run is the caller's choice:
`ridesync serve` runs the live lane, the durable lane and the dashboard (engine/cli/commands/serve.py);
docs/architecture.md#the-host-and-its-lanes. Paths: each lane owns its prefix; `/healthz` and
`/metrics` are the host's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from engine.auth.tokens import KeyRing
from engine.server.config import ServerConfig
from engine.server.guard import GUARD, ConnectionGuard, GuardCollector, refuse_over_cap
from engine.server.keys import DATA_DIR, KEYRING, REGISTRY
from engine.server.lane import Lane


def build_app(
    config: ServerConfig,
    lanes: Sequence[Lane] = (),
    keyring: KeyRing | None = None,
) -> web.Application:
    """The application with `lanes` on it, in order."""
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

    app.on_response_prepare.append(_lean_upgrade)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    for lane in lanes:
        lane(app)
    return app


async def _lean_upgrade(request: web.Request, response: web.StreamResponse) -> None:
    """A WebSocket upgrade (101) goes without `Date` and `Server` (optional on a 1xx, RFC 9110 6.6.1 and
    10.2.4): ~70 bytes off every (re)connect, which a device on a lossy, metered link pays each time it
    comes back; and the server's software and version are nobody's business."""
    if response.status == 101:
        response.headers.popall("Date", None)
        response.headers.popall("Server", None)
