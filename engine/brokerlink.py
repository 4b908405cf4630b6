"""Links to a Redis broker for pub/sub: `BrokerLink`, one connection that fails loudly instead of
reconnecting by itself, and `PubSubLink`, the one home of the two reconnect loops over it (a publisher and
a subscriber on one channel). The live lane's relay (engine/live/redis_relay.py) and the durable lane's
cross-node ride push (engine/backend/redis_push.py) both run on them and keep only what differs: their
codec, their outbox's shape, their counters and what a received message means.

The loops: each side opens a fresh `BrokerLink`, proves it (PING, or the SUBSCRIBE reply), sets its
`sending`/`subscribed` event and logs one INFO line; on any link error it clears the event, closes, logs
one INFO line (a broker going away is an expected network event, not a warning) and retries after capped
full-jitter backoff (engine/backoff.py), the attempt count reset by every successful connect. A silent link
is pinged after `ping_after_s` and given up after `dead_after_s`; the publisher pings an idle link too, so a
broker restart is seen within seconds even when nothing is published. While the publisher is down its
owner drops what it is handed, and whatever was pending when the link broke is dropped and counted: both
lanes repair losses their own way rather than replaying a backlog.

Why a bare redis-py `Connection` rather than a client with a pool: client libraries change their reconnect
policy between releases (redis-py 8.2's pool silently replaces a connection the server closed), and an
owner that never sees its link break cannot count reconnects or resubscribe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from engine.backoff import Backoff

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


T = TypeVar("T")


class Outbox(Protocol[T]):
    """What the publisher loop sends: the owner's pending items, their wire format and their counters."""

    def take(self) -> T | None:
        """Everything pending, leaving the outbox empty; None when nothing is."""

    def encode(self, batch: T) -> Sequence[bytes]:
        """The PUBLISH payloads carrying `batch`."""

    def sent(self, batch: T, messages: int) -> None:
        """`batch` went out as `messages` PUBLISH commands."""

    def lost(self, batch: T) -> None:
        """`batch` never reached the broker (a failed send, or pending when the link broke)."""


@dataclass(frozen=True, slots=True)
class _Side:
    """What tells the publisher loop from the subscriber loop; the reconnecting around them is shared."""

    role: str  # "publisher" / "subscriber", in the log lines
    action: str  # "send" / "receive", prefixing the error handed to `on_error`
    greeting: tuple[str, ...]  # the command whose reply proves the link usable
    connected: str  # the INFO line once it is
    up: asyncio.Event
    on_up: Callable[[], None]
    serve: Callable[[BrokerLink], Awaitable[None]]
    on_down: Callable[[], None]


@dataclass(frozen=True)
class LinkTiming:
    """How a broker link reconnects and notices a dead broker; the same knobs for every link (the live
    relay, the ride push). Reconnects back off with full jitter from `backoff_base_s` to `backoff_cap_s`; a
    connection quiet for `ping_after_s` is pinged, and one silent for `dead_after_s` is dropped."""

    backoff_base_s: float = 0.1
    backoff_cap_s: float = 5.0
    ping_after_s: float = 2.0
    dead_after_s: float = 6.0

    @property
    def backoff(self) -> Backoff:
        return Backoff.capped(self.backoff_base_s, self.backoff_cap_s)


DEFAULT_TIMING = LinkTiming()


class PubSubLink(Generic[T]):
    """A publisher and a subscriber on one channel of one broker, each reconnecting on its own.

    `name` words the log lines (`"<name> publisher connected"`, `"<name> subscribed"`, `"<name> publisher
    lost the broker"`, ...), written to the owner's `log` so they keep its logger name. Messages starting
    with `own_prefix` are the owner's own, heard back through its subscription: skipped undecoded.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        outbox: Outbox[T],
        *,
        name: str,
        origin: str,
        own_prefix: bytes,
        log: logging.Logger,
        timing: LinkTiming,
        on_error: Callable[[str], None],
    ) -> None:
        self.url = url
        self.channel = channel
        self.name = name
        self.origin = origin
        self.backoff = timing.backoff
        self.ping_after_s = timing.ping_after_s
        self.dead_after_s = timing.dead_after_s
        # Set while the subscriber holds its subscription / the publisher holds a checked connection.
        self.sending = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._outbox = outbox
        self._own_prefix = own_prefix
        self._log = log
        self._on_error = on_error
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was added to the outbox: the publisher sends it now."""
        self._wake.set()

    async def publish_forever(self, on_connected: Callable[[], None]) -> None:
        await self._reconnecting(
            _Side(
                "publisher",
                "send",
                ("PING",),
                f"{self.name} publisher connected",
                self.sending,
                on_connected,
                self._publish,
                self._drop_pending,
            )
        )

    async def subscribe_forever(
        self, handle: Callable[[object], None], on_subscribed: Callable[[], None]
    ) -> None:
        """Hand the data of every message on the channel but our own to `handle`; `on_subscribed` runs
        after every (re)subscription (what was published meanwhile never reached us)."""

        async def serve(link: BrokerLink) -> None:
            await self._listen(link, handle)

        await self._reconnecting(
            _Side(
                "subscriber",
                "receive",
                ("SUBSCRIBE", self.channel),
                f"{self.name} subscribed",
                self.subscribed,
                on_subscribed,
                serve,
                lambda: None,
            )
        )

    async def _reconnecting(self, side: _Side) -> None:
        attempt = 0
        lost = f"{self.name} {side.role} lost the broker"
        while True:
            link = BrokerLink(self.url)
            error = ""
            try:
                await link.open()
                await link.command(*side.greeting)
                attempt = 0
                side.up.set()
                self._log.info(side.connected, extra={"url": self.url, "origin": self.origin})
                side.on_up()
                await side.serve(link)
            except LINK_ERRORS as exc:
                error = f"{side.action}: {type(exc).__name__}: {exc}"
                self._on_error(error)
            finally:
                side.up.clear()
                side.on_down()
                await link.close()
            delay = self.backoff.delay(attempt)
            attempt += 1
            self._log.info(lost, extra={"url": self.url, "delay_s": round(delay, 3), "error": error})
            await asyncio.sleep(delay)

    def _drop_pending(self) -> None:
        pending = self._outbox.take()
        if pending is not None:
            self._outbox.lost(pending)

    async def _publish(self, link: BrokerLink) -> None:
        while True:
            try:
                async with asyncio.timeout(self.ping_after_s):
                    await self._wake.wait()
            except TimeoutError:
                # Nothing to publish for a while: make sure the broker is still there (and the same one),
                # so a restart is noticed now rather than at the next publish.
                async with asyncio.timeout(self.dead_after_s):
                    await link.command("PING")
                continue
            self._wake.clear()
            batch = self._outbox.take()
            if batch is None:
                continue
            messages = self._outbox.encode(batch)
            try:
                for message in messages:
                    await link.command("PUBLISH", self.channel, message)
            except BaseException:
                self._outbox.lost(batch)
                raise
            self._outbox.sent(batch, len(messages))

    async def _listen(self, link: BrokerLink, handle: Callable[[object], None]) -> None:
        heard = time.monotonic()
        while True:
            msg = await link.read(self.ping_after_s)
            now = time.monotonic()
            if msg is None:
                # A quiet channel is normal; a quiet link is not: ask the broker for a pong.
                if now - heard > self.dead_after_s:
                    raise TimeoutError(f"broker silent for {self.dead_after_s:g} s")
                await link.send("PING")
                continue
            heard = now
            # A subscribed connection carries pushes: [b"message", channel, data]; pongs and
            # (un)subscribe confirmations are only signs of life.
            if isinstance(msg, list) and len(msg) == 3 and msg[0] == b"message":
                data = msg[2]
                if not (isinstance(data, bytes) and data.startswith(self._own_prefix)):
                    handle(data)
