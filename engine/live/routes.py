"""The hub's HTTP surface: the class WebSocket (publish and/or subscribe), a class snapshot, stats.

Authentication happens before the upgrade, so a refused client gets a plain HTTP 401/403 with a JSON
reason instead of a WebSocket that opens and closes. Everything after the upgrade is the hub's business:
a malformed message closes only its own connection (4400), a message outside the token's scope 4403.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator

from aiohttp import web

from engine.auth.tokens import (
    CLOCK_LEEWAY_S,
    Claims,
    Role,
    TokenError,
    TokenScopeError,
    token_from_request,
    valid_id,
)
from engine.live.config import HubConfig
from engine.live.connection import Connection
from engine.live.fanout import Peer
from engine.live.hub import Hub
from engine.live.metrics import HubCollector, HubStats
from engine.live.port import Entry, LiveHub
from engine.live.relay import Relay
from engine.live.rfc6455 import OP_PING, server_frame
from engine.live.riders import RiderBook
from engine.live.wire import CLOSE_GOING_AWAY, CLOSE_STALLED, CLOSE_TOKEN_EXPIRED, HelloIn
from engine.server.keys import DATA_DIR, KEYRING, REGISTRY

log = logging.getLogger(__name__)

HUB = web.AppKey("ridesync.live.hub", LiveHub)
HUB_CONFIG = web.AppKey("ridesync.live.config", HubConfig)


class OpenConnections:
    def __init__(self) -> None:
        self.conns: set[Connection] = set()


OPEN = web.AppKey("ridesync.live.open", OpenConnections)

WS_PATH = "/live/v1/classes/{class_id}/ws"
MODES = ("pub", "sub", "pubsub")


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


def _authenticate(request: web.Request, hub: LiveHub) -> Claims | web.Response:
    try:
        return request.app[KEYRING].verify(token_from_request(request.headers, request.query))
    except TokenError as exc:
        hub.stats.reject(exc.code)
        return _error(401, exc.code, str(exc))


async def class_ws(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    class_id = request.match_info["class_id"]
    if not valid_id(class_id):
        return _error(400, "bad_class", "class id must be a short id")
    claims = _authenticate(request, hub)
    if isinstance(claims, web.Response):
        return claims
    can_publish = claims.role in (Role.BIKE, Role.APP)
    mode = request.query.get("mode") or ("pubsub" if can_publish else "sub")
    if mode not in MODES:
        return _error(400, "bad_mode", f"mode must be one of {MODES}")
    publishing = mode != "sub"
    try:
        if publishing:
            claims.require_publish(class_id)
        else:
            claims.require_subscribe(class_id)
    except TokenScopeError as exc:
        hub.stats.reject(exc.code)
        return _error(403, exc.code, str(exc))
    transport = request.transport
    if transport is None:
        return _error(400, "no_transport", "connection already closed")

    register = functools.partial(_registered, request, hub, class_id=class_id, claims=claims, mode=mode)
    return await hub.serve_socket(request, Entry(class_id, claims, mode, transport, register))


@contextlib.asynccontextmanager
async def _registered(
    request: web.Request, hub: LiveHub, conn: Connection, *, class_id: str, claims: Claims, mode: str
) -> AsyncIterator[Peer | None]:
    """The connection as the hub's for as long as the body runs: a rider while it publishes, a peer while
    it subscribes, counted and closable at shutdown; and no longer than its token is valid."""
    publishing = mode != "sub"
    open_conns = request.app[OPEN].conns
    conn.device = claims.device
    open_conns.add(conn)
    hub.opened(mode)
    peer = None
    log.debug("live connection", extra={"class_id": class_id, "device": claims.device, "mode": mode})
    try:
        if publishing:
            hub.rider_join(class_id, claims.device)
            if claims.name is not None or claims.max_hr is not None:
                # The token's name and max HR; the publisher's own hello, if any, comes after and wins.
                await hub.publish(class_id, HelloIn(claims.device, claims.name, claims.max_hr))
        if mode != "pub":
            peer = hub.attach(class_id, conn, claims.device, claims.role.value)
        # The connection lives no longer than its token: verify() accepts up to exp + leeway, so do we.
        try:
            async with asyncio.timeout(max(0.0, claims.exp + CLOCK_LEEWAY_S - time.time())):
                yield peer
        except TimeoutError:
            hub.stats.reject("token_expired_open")
            await conn.close(CLOSE_TOKEN_EXPIRED, "token expired")
    finally:
        if peer is not None:
            hub.detach(class_id, peer)
        if publishing:
            hub.rider_leave(class_id, claims.device)
        hub.closed(mode)
        open_conns.discard(conn)


async def watch_connections(open_conns: OpenConnections, config: HubConfig, stats: HubStats) -> None:
    """One timer for every self-spoken connection (instead of one per connection reset on every message):
    the heartbeat, and the write-buffer rule.

    - Heartbeat: a connection from which no message and no pong came for `heartbeat_s` is pinged, and
      dropped if it stays silent for `heartbeat_s / 2` more. The peer's own pings are not liveness (they
      prove it sends, not that it reads). Publishers that send samples are never pinged.
    - Write buffer, whatever the mode (publisher or subscriber) and the frames (live data, pongs, pings):
      a connection that is not keeping up (more than `peer_buffer_limit` bytes unsent, a pong owed that
      does not fit under it, or bytes queued for it in the kernel with none of them read between two
      looks) for longer than `stall_limit_s`, or found with more than `peer_buffer_max`
      unsent, is closed with 4408. The fan-out applies the same rule to its peers on every flush; this
      covers publishers and quiet classes, where no flush looks.
    """
    loop = asyncio.get_running_loop()
    ping = server_frame(OP_PING)
    while True:
        await asyncio.sleep(min(config.heartbeat_s, config.stall_limit_s) / 4)
        # One look in a function of its own: its loop variable goes with it. Kept in this frame, it held
        # the last connection looked at (and its transport) while the watchdog slept, for good once the
        # hub fell idle.
        _look(open_conns, loop.time(), ping, config, stats)


def _look(open_conns: OpenConnections, now: float, ping: bytes, config: HubConfig, stats: HubStats) -> None:
    """One look of the watchdog at every connection: the write-buffer rule, then the heartbeat."""
    interval, stall = config.heartbeat_s, config.stall_limit_s
    for conn in list(open_conns.conns):
        if not conn.watched or conn.closing or conn.close_request is not None:
            continue
        if _over_buffer(conn, now, stall, stats):
            continue
        if conn.received:
            conn.received = False
            conn.last_heard, conn.ping_sent = now, None
        elif conn.ping_sent is None:
            if now - conn.last_heard >= interval and conn.send_control(ping):
                conn.ping_sent = now
        elif now - conn.ping_sent >= interval / 2:
            log.info("no pong: dropping a live connection", extra={"silent_s": round(now - conn.last_heard)})
            conn.reset()
            conn.peer_gone()


def _over_buffer(conn: Connection, now: float, stall: float, stats: HubStats) -> bool:
    """Apply the write-buffer rule to one connection; True when it is being closed for it."""
    size = conn.transport.get_write_buffer_size()
    if size <= conn.buffer_limit:
        if conn.pending_pong is not None:
            conn.pong(conn.pending_pong)
        if conn.pending_pong is None and not _not_reading(conn, size):
            conn.backed_up_since = None
            return False
        # else: a pong it is owed does not fit either, or bytes wait for it in the kernel and it has read
        # none since the last look: not keeping up, like a peer with frames unsent.
    if size > conn.buffer_max:
        reason = f"stalled: {size} bytes unsent, more than {conn.buffer_max}"
    elif conn.backed_up_since is None:
        conn.backed_up_since = now
        return False
    elif now - conn.backed_up_since > stall:
        reason = f"stalled: not reading for more than {stall:g} s"
    else:
        return False
    stats.stalls_disconnected += 1
    log.info(
        "live connection not reading, closing",
        extra={"device": conn.device, "reason": reason, "unsent": size},
    )
    conn.request_close(CLOSE_STALLED, reason)
    return True


def _not_reading(conn: Connection, unsent: int) -> bool:
    """Bytes wait for the peer (in the transport or the kernel) and it acknowledged none of them since the
    previous look. Traffic too light to fill the buffers never takes a peer over `buffer_limit`, so this
    is what notices a peer that never reads in a quiet class; one that reads, however slowly, moves on."""
    progress = conn.send_progress()
    if progress is None:
        return False
    seen, conn.acked_seen = conn.acked_seen, progress.acked
    return seen == progress.acked and (progress.queued or unsent > 0)


async def class_snapshot(request: web.Request) -> web.Response:
    """The class as a fresh subscriber would first see it (riders and leaderboard), as plain JSON."""
    hub = request.app[HUB]
    class_id = request.match_info["class_id"]
    claims = _authenticate(request, hub)
    if isinstance(claims, web.Response):
        return claims
    try:
        claims.require_subscribe(class_id)
    except TokenScopeError as exc:
        return _error(403, exc.code, str(exc))
    riders, leaderboard = hub.snapshot(class_id)
    started = hub.riders.class_started(class_id)
    return web.json_response(
        {
            "class": class_id,
            "ts": round(time.time(), 3),
            "started": started,
            "riders": riders,
            "leaderboard": leaderboard,
        }
    )


async def stats(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    cpu = os.times()
    out: dict[str, object] = {
        "impl": hub.impl,
        "ts": time.time(),
        "cpu_user_s": cpu.user,
        "cpu_system_s": cpu.system,
        "connections": hub.connections(),
    }
    out.update(hub.stats.to_json())
    out.update(hub.stats_details())
    return web.json_response(out)


def setup_live(
    app: web.Application,
    config: HubConfig | None = None,
    relay: Relay | None = None,
    *,
    hub: LiveHub | None = None,
) -> None:
    """Register a class hub on `app` (which must already hold KEYRING and REGISTRY): `hub` when given (any
    `LiveHub`, with its own config; `config` and `relay` must then be left out), else the coalescing hub
    with `config` and `relay` (default: a Redis relay when `config.relay_url` is set)."""
    if hub is not None:
        if config is not None or relay is not None:
            raise ValueError("pass either a hub or its config and relay, not both")
        cfg = hub.config
    else:
        cfg = config or HubConfig()
        if relay is None and cfg.relay_url:
            from engine.live.redis_relay import RedisRelay

            relay = RedisRelay(cfg.relay_url)
        hub = Hub(cfg, relay)
    if DATA_DIR in app:
        hub.riders = RiderBook.in_dir(app[DATA_DIR])
    app[HUB] = hub
    app[HUB_CONFIG] = cfg
    app[OPEN] = OpenConnections()
    app[REGISTRY].register(HubCollector(hub.stats, hub.connections))
    app.router.add_get(WS_PATH, class_ws)
    app.router.add_get("/live/v1/classes/{class_id}", class_snapshot)
    app.router.add_get("/live/v1/stats", stats)

    async def live(app: web.Application) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run(), name="live-hub")
            # Every hub: a connection that is not `watched` (its WebSocket library keeps its own heartbeat)
            # is skipped by it.
            tg.create_task(watch_connections(app[OPEN], cfg, hub.stats), name="live-watch")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(live(app), name="live")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_peers(app: web.Application) -> None:
        conns = list(app[OPEN].conns)
        await asyncio.gather(*(c.close(CLOSE_GOING_AWAY, "server shutting down") for c in conns))

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_peers)
