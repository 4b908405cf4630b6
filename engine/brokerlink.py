"""One connection to a Redis broker that fails loudly instead of reconnecting by itself: the live lane's
relay (engine/live/redis_relay.py) and the durable lane's cross-node ride push (engine/backend/redis_push.py)
both hold their links through it, each with its own reconnect loop, backoff and counters.

Why a bare redis-py `Connection` rather than a client with a pool: client libraries change their reconnect
policy between releases (redis-py 8.2's pool silently replaces a connection the server closed), and an
owner that never sees its link break cannot count reconnects or resubscribe.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

LINK_ERRORS = (RedisError, OSError, TimeoutError)


class BrokerLink:
    """One connection to the broker that fails loudly instead of reconnecting by itself.

    redis-py's `Connection.send_command` connects a disconnected connection on its own; `command` and
    `read` refuse first, so a link that broke stays broken until its owner opens a new one.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        kwargs: dict[str, Any] = dict(parse_url(url))
        connection_class: type[AbstractConnection] = kwargs.pop("connection_class", Connection)
        # RESP2 whatever the URL asks: on RESP3 pub/sub messages become pushes that redis-py hands to
        # callbacks instead of returning them from `read_response`.
        kwargs["protocol"] = 2
        # Any: redis-py's annotations differ between releases (8.2 left `connect` untyped), and a
        # `type: ignore` that one release needs is an error under the next; this class is the typed edge.
        self._conn: Any = connection_class(
            **kwargs,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
        )

    async def open(self) -> None:
        await self._conn.connect()

    def _check(self) -> None:
        if not self._conn.is_connected:
            raise RedisConnectionError("broker link closed")

    async def send(self, *args: Any) -> None:
        self._check()
        await self._conn.send_command(*args)

    async def command(self, *args: Any) -> Any:
        await self.send(*args)
        return await self.read(None)

    async def read(self, wait_s: float | None) -> Any:
        """The next reply or push message; None when `wait_s` passes with nothing to read."""
        self._check()
        return await self._conn.read_response(timeout=wait_s if wait_s is not None else math.inf)

    async def close(self) -> None:
        with contextlib.suppress(*LINK_ERRORS):
            await self._conn.disconnect()
