"""The device client's defaults, in one place for the runners (bike, app, push), the sync connection and
the CLI flags. Nothing is imported here, so the CLI can name them without loading aiohttp."""

from __future__ import annotations

from typing import Final

# WebSocket ping interval of the sync connection: a dead link is noticed within ~1.5x this.
DEFAULT_HEARTBEAT_S: Final = 2.0
