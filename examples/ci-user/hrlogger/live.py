"""Publish heart rates to a ridesync class hub (the live lane's WebSocket protocol)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp


class LiveLink:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, source: str) -> None:
        self._ws, self._source, self._seq = ws, source, 0

    async def heart_rate(self, bpm: int) -> None:
        self._seq += 1
        sample = {"type": "sample", "kind": "heart_rate", "v": bpm, "t": time.time(), "seq": self._seq}
        await self._ws.send_str(json.dumps({**sample, "src": self._source}))


@asynccontextmanager
async def publish_heart_rate(ws_url: str, source: str = "hrlogger") -> AsyncIterator[LiveLink]:
    """`async with publish_heart_rate(url) as link: await link.heart_rate(120)`; the rider stays in the
    class while the block runs."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        yield LiveLink(ws, source)
