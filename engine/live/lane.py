"""The live lane as the host plugs it in (engine.server.lane.Lane; docs/architecture.md#the-live-lane)."""

from __future__ import annotations

from aiohttp import web

from engine.live.config import HubConfig
from engine.live.hub import LiveHub
from engine.live.relay import Relay
from engine.live.routes import setup_live
from engine.server.lane import Lane


def live_lane(
    config: HubConfig | None = None, relay: Relay | None = None, hub: LiveHub | None = None
) -> Lane:
    """The class hub (`/live/v1/...`) with `config` (default `HubConfig()`) and, for several hub processes,
    `relay` (default: a Redis relay when `config.relay_url` is set). `hub`: any LiveHub to serve instead of
    the one `config` names (the conformance suite serves each implementation this way)."""

    def setup(app: web.Application) -> None:
        setup_live(app, config, relay, hub)

    return setup
