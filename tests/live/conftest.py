"""Fixtures for the live lane: a real `ridesync serve` application on 127.0.0.1 with port 0, and clients
(helpers: tests/support/live.py, tests/support/redis.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.auth.tokens import KeyRing
from engine.live.config import HubConfig
from engine.live.port import LiveHub
from engine.live.relay import Relay
from tests.support.live import LiveServer, ServerFactory, start_server
from tests.support.redis import redis_server

__all__ = ["make_server", "redis_server", "session"]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    runners: list[web.AppRunner] = []
    keyring = KeyRing.generate()

    async def factory(
        port: int = 0,
        relay: Relay | None = None,
        make_hub: Callable[[HubConfig], LiveHub] | None = None,
        **hub: Any,
    ) -> LiveServer:
        server = await start_server(tmp_path, HubConfig(**hub), keyring, port, relay, make_hub=make_hub)
        runners.append(server.runner)
        return server

    yield factory
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
