"""What `ridesync serve` allows a client before it has shown a valid token: HTTP-level limits for every path.

aiohttp's HTTP server waits for a request's head as long as the keep-alive timeout allows (an hour by
default, and the timer does not care that bytes trickle in), has no timeout on a request's body, and counts
no connections. `GuardedRunner` runs the application with a request handler (aiohttp's own, subclassed) that
adds, at the protocol level where the bytes arrive:

- **Header timeout**: a request's line and headers must be complete within `header_timeout_s` of its first
  byte (of the connection's opening, for the first request), or the connection gets a 408 and is closed.
- **Body timeout**: while a request's body is incomplete, no more than `body_timeout_s` between two reads.
- **Pending cap**: a connection is *pending* from its opening until a request on it carries a valid token
  (`Authorization: Bearer` or `?token=`, checked with the server's keys, the same way every handler does)
  or a handler accepts a WebSocket upgrade on it. A connection that opens while its IP address already
  has `max_pending_per_ip` pending ones is let in only if its first request carries a valid token;
  otherwise it is answered 429 with `Retry-After` and closed. Tokened clients are never counted for long,
  so a class of bikes behind one address reconnecting at once is not refused.
- **Quiet refusals**: a malformed or over-long request line or header (aiohttp's `LineTooLong`,
  `BadHttpMessage`), and a peer that resets its connection mid-request, are one INFO line naming the client
  and the reason, not an ERROR with a traceback: anyone can send them.

Every closing is counted in `ridesync_http_guard_closed_total{reason}`; `ridesync_http_pending_connections`
is the number of pending connections now. Idle keep-alive connections (no request in progress) are closed
after `keepalive_timeout_s` by aiohttp itself. Upgraded connections (the class hub, the sync endpoint) are
the business of their own heartbeats once the upgrade is answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.auth.tokens import TokenError, token_from_request
from engine.server.config import HttpLimits

log = logging.getLogger(__name__)

REASONS = ("header_timeout", "body_timeout", "pending_cap", "bad_request", "peer_reset")
# An over-cap connection that sends nothing at all is refused after this long (or the header timeout).
OVER_CAP_GRACE_S = 1.0

_PENDING_BODY = json.dumps(
    {"error": "too_many_pending", "detail": "too many connections without a valid token from this address"}
).encode()
_RAW_429 = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(_PENDING_BODY)
) + _PENDING_BODY
_RAW_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class RequestBodyTimeout(ConnectionResetError):
    """Raised to a handler reading a body that stalled past the body timeout (the connection is closed)."""


class ConnectionGuard:
    """The limits, the per-address count of pending connections and the counters, shared by the
    connections of one server."""

    def __init__(self, limits: HttpLimits, verify: Callable[[str], object]) -> None:
        self.limits = limits
        self._verify = verify
        self.pending: dict[str, int] = {}
        self.closed: dict[str, int] = dict.fromkeys(REASONS, 0)

    def authentic(self, message: Any) -> bool:
        """Does this parsed request head carry a token the server's keys verify?"""
        headers, url = getattr(message, "headers", None), getattr(message, "url", None)
        if headers is None or url is None:
            return False  # aiohttp's record of a head it could not parse
        token = token_from_request(headers, url.query)
        if not token:
            return False
        try:
            self._verify(token)
        except (TokenError, ValueError):
            return False
        return True

    def add(self, ip: str) -> int:
        n = self.pending[ip] = self.pending.get(ip, 0) + 1
        return n

    def remove(self, ip: str) -> None:
        n = self.pending.get(ip, 0) - 1
        if n > 0:
            self.pending[ip] = n
        else:
            self.pending.pop(ip, None)

    def count(self, reason: str) -> None:
        self.closed[reason] += 1


class GuardCollector(Collector):
    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def collect(self) -> Iterator[Metric]:
        closed = CounterMetricFamily(
            "ridesync_http_guard_closed",
            "HTTP connections closed or requests refused before a valid token, by reason",
            labels=["reason"],
        )
        for reason, n in self._guard.closed.items():
            closed.add_metric([reason], n)
        yield closed
        yield GaugeMetricFamily(
            "ridesync_http_pending_connections",
            "Open connections that have not yet presented a valid token",
            value=sum(self._guard.pending.values()),
        )


GUARD = web.AppKey("ridesync.server.guard", ConnectionGuard)


@web.middleware
async def refuse_over_cap(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a request the guard refused (pending cap) before any handler sees it."""
    if getattr(request.protocol, "refused", False):
        resp = web.Response(
            body=_PENDING_BODY, status=429, content_type="application/json", headers={"Retry-After": "1"}
        )
        resp.force_close()
        return resp
    return await handler(request)


def _forget_read_callback(transport: asyncio.BaseTransport | None) -> None:
    """Break the reference cycle every asyncio socket transport is in: the selector transport keeps its
    read callback as a bound method of itself (`_read_ready_cb`, Python 3.11). So every closed connection's
    transport (its socket object, buffers, extra info; ~4 a rider a class: sync, live, HTTP) waited for the
    cycle collector, which `serve` runs rarely (engine/server/run.py): the soak saw 400 more closed
    transports in memory after each 100-rider class. Nothing reads from a lost connection: clear it."""
    if transport is not None and getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None  # type: ignore[attr-defined]


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol with the guard's timers, pending count and quiet refusals."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._ip = "?"
        self._pending = False
        self._over_cap = False  # it opened while its address was at the cap
        self.refused = False  # read by `refuse_over_cap`
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._quiet = False  # handle_error already logged the one line

    # --- the connection's life ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        self._pending = True
        if self._guard.add(self._ip) > self._guard.limits.max_pending_per_ip:
            self._over_cap = True
        self._arm_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        transport = self.transport
        self._disarm_head()
        self._disarm_body()
        self._body = None
        self._authenticated()
        super().connection_lost(exc)
        _forget_read_callback(transport)

    def set_parser(self, parser: Any, data_received_cb: Callable[[], None] | None = None) -> None:
        # A handler accepted an upgrade (every one authenticates first): from here on the connection is
        # the hub's or the sync endpoint's, with their own heartbeats.
        self._disarm_head()
        self._disarm_body()
        self._authenticated()
        super().set_parser(parser, data_received_cb)

    def data_received(self, data: bytes) -> None:
        if self._payload_parser is not None or self._upgraded or self._force_close or self._close:
            super().data_received(data)
            return
        before = self._request_count
        super().data_received(data)
        new = self._request_count - before
        if new:
            self._disarm_head()
            messages = list(self._messages)[-new:]
            if self._pending and any(self._guard.authentic(m) for m, _ in messages):
                self._authenticated()
            last = messages[-1][1]
            self._body = last if isinstance(last, StreamReader) and not last.is_eof() else None
            if self._pending and self._over_cap and not self.refused:
                self.refused = True  # the middleware answers it, and the connection then closes
                self._count_refusal()
        elif data:
            if self._body is None or self._body.is_eof():
                self._body = None
                self._arm_head()  # the first bytes of a request head
            if self._pending and self._over_cap and not self.refused:
                self._refuse()
                return
        if self._body is not None and not self._body.is_eof():
            self._arm_body()
        else:
            self._disarm_body()

    # --- the rules ----------------------------------------------------------------------------------------

    def _authenticated(self) -> None:
        if self._pending:
            self._pending = False
            self._guard.remove(self._ip)

    def _arm_head(self) -> None:
        if self._head_timer is None:
            delay = self._guard.limits.header_timeout_s
            if self._over_cap:
                delay = min(delay, OVER_CAP_GRACE_S)
            self._head_timer = self._loop.call_later(delay, self._head_timeout)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _arm_body(self) -> None:
        self._disarm_body()
        self._body_timer = self._loop.call_later(self._guard.limits.body_timeout_s, self._body_timeout)

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close or self._upgraded:
            return
        if self._pending and self._over_cap:
            self._refuse()
            return
        self._guard.count("header_timeout")
        log.info(
            "closing a connection: request head not received in time",
            extra={"client": self._ip, "timeout_s": self._guard.limits.header_timeout_s},
        )
        if not self._request_in_progress:
            self.transport.write(_RAW_408)
        self.force_close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof() or self.transport is None:
            return
        if self._reading_paused or self._buffer_paused:
            # The pause is ours (the handler has not taken what arrived yet), not the client's.
            self._arm_body()
            return
        self._guard.count("body_timeout")
        log.info(
            "closing a connection: request body stalled",
            extra={"client": self._ip, "timeout_s": self._guard.limits.body_timeout_s},
        )
        body.set_exception(RequestBodyTimeout("request body stalled"))
        self.force_close()

    def _count_refusal(self) -> None:
        self._guard.count("pending_cap")
        log.info(
            "refusing a connection: too many without a valid token from this address",
            extra={"client": self._ip, "limit": self._guard.limits.max_pending_per_ip},
        )

    def _refuse(self) -> None:
        self._count_refusal()
        if self.transport is not None:
            self.transport.write(_RAW_429)
        self.force_close()

    # --- quiet refusals -----------------------------------------------------------------------------------

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, RequestBodyTimeout):
            pass  # logged and counted when the timer fired
        elif isinstance(exc, HttpProcessingError):
            self._guard.count("bad_request")
            log.info(
                "bad request refused",
                extra={"client": self._ip, "status": status, "reason": exc.message or type(exc).__name__},
            )
        elif isinstance(exc, ConnectionError):
            self._guard.count("peer_reset")
            log.info(
                "connection reset by the client",
                extra={"client": self._ip, "path": getattr(request, "path", None), "reason": str(exc)},
            )
        else:
            return super().handle_error(request, status, exc, message)
        self._quiet = True
        try:
            return super().handle_error(request, status, exc, message)
        finally:
            self._quiet = False

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if self._quiet:
            return
        exc = kw.get("exc_info")
        if isinstance(exc, ConnectionError):
            self._guard.count("peer_reset")
            log.info("connection reset by the client", extra={"client": self._ip, "reason": str(exc)})
            return
        super().log_exception(*args, **kw)


class _GuardedServer(web.Server):
    """aiohttp's low-level server, making `GuardedRequestHandler`s."""

    def __init__(self, guard: ConnectionGuard, inner: web.Server) -> None:
        super().__init__(
            inner.request_handler,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            loop=inner._loop,
            **inner._kwargs,
        )
        self._guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, self._guard, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` for an application built by engine.server.app.build_app (which holds the guard),
    serving it with the guard's limits."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", app[GUARD].limits.keepalive_timeout_s)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        inner = await super()._make_server()
        return _GuardedServer(self.app[GUARD], inner)


def serve_runner(app: web.Application) -> GuardedRunner:
    """The runner `ridesync serve` serves with, also what the tests serve with (tests/support/
    backend_server.py). Handlers are not cancelled when their peer goes (aiohttp's default; its test
    server turns cancellation on): a handler then meets the lost connection itself, on its read or on its
    close, which is the path every production connection ends on and must free what it held."""
    return GuardedRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
