"""Single HTTP and WebSocket-upgrade probes the security campaign's attacks are made of."""

from __future__ import annotations

from typing import Any

import aiohttp
from yarl import URL


async def http(
    base: str, method: str, path: str, token: str | None, body: Any = None, *, key: str | None = None
) -> tuple[int, Any]:
    """One request; `path` is sent as given (already percent-encoded), so a `%0A` stays a newline."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, URL(base + path, encoded=True), headers=headers, json=body) as r,
    ):
        try:
            return r.status, await r.json(content_type=None)
        except ValueError:
            return r.status, await r.text()


async def upgrade_status(base: str, params: dict[str, str], token: str | None) -> int:
    """The HTTP status of a /v1/sync upgrade (101 when it was accepted; then it is closed at once)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        try:
            async with s.ws_connect(base + "/v1/sync", params=params, headers=headers, heartbeat=None) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
