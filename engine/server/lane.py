"""What the host asks of a lane (docs/architecture.md#the-host-and-its-lanes).

A lane is a callable taking the application, called by `build_app` after the shared keys
(engine/server/keys.py: DATA_DIR, KEYRING, REGISTRY) are set and before the application is frozen. It
may add routes under its own prefix, `cleanup_ctx` lifecycles (the pattern for owned background tasks),
`on_shutdown` hooks and Prometheus collectors on `app[REGISTRY]`. The lanes of `ridesync serve`:
- the live lane, `engine.live.lane.live_lane(config, relay)`: `/live/v1/...`;
- the durable lane, `engine.backend.routes.make_setup(config)`: `/v1/sync`, `/v1/rides...`;
- the dashboard, `engine.dashboard.routes.setup_dashboard`: `/`, `/classes/...`, `/rides/...`,
  `/dashboard/...`.
The host imports none of them; the caller (engine/cli/commands/serve.py, engine/demo/session.py, tests)
chooses which lanes run. A lane imports nothing of the host but this module and engine/server/keys.py.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web


class Lane(Protocol):
    """Adds one lane's routes and lifecycles to the application."""

    def __call__(self, app: web.Application, /) -> None: ...
