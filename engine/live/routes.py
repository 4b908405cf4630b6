"""The hub's HTTP surface: the class WebSocket (publish and/or subscribe), a class snapshot, stats.

Authentication happens before the upgrade, so a refused client gets a plain HTTP 401/403 with a JSON
reason instead of a WebSocket that opens and closes. Everything after the upgrade is the hub's business:
a malformed message closes only its own connection (4400), a message outside the token's scope 4403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

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
from engine.live.hub import CLOSE_FORBIDDEN, CLOSE_GOING_AWAY, CLOSE_TOKEN_EXPIRED, Connection, Hub, LiveHub
from engine.live.metrics import HubCollector
from engine.live.naive import NaiveHub
from engine.live.relay import Relay
from engine.live.wire import BATCH_PROTOCOL, WireError, parse_inbound_batch
from engine.server.keys import KEYRING, REGISTRY

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
    config = request.app[HUB_CONFIG]
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

    ws = web.WebSocketResponse(
        compress=False, max_msg_size=config.max_msg_bytes, heartbeat=20.0, protocols=(BATCH_PROTOCOL,)
    )
    await ws.prepare(request)
    assert isinstance(transport, asyncio.Transport)
    conn = Connection(ws, transport, config)
    open_conns = request.app[OPEN].conns
    open_conns.add(conn)
    hub.opened(mode)
    peer = None
    log.debug("live connection", extra={"class_id": class_id, "device": claims.device, "mode": mode})
    try:
        if publishing:
            hub.rider_join(class_id, claims.device)
        if mode != "pub":
            peer = hub.attach(class_id, conn, claims.device, claims.role.value)
        # The connection lives no longer than its token: verify() accepts up to exp + leeway, so do we.
        try:
            async with asyncio.timeout(max(0.0, claims.exp + CLOCK_LEEWAY_S - time.time())):
                await _read_messages(conn, hub, class_id, claims, publishing)
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
    return ws


async def _read_messages(
    conn: Connection, hub: LiveHub, class_id: str, claims: Claims, publishing: bool
) -> None:
    async for msg in conn.ws:
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
        if not publishing:
            hub.stats.reject("subscribe_only")
            await conn.close(CLOSE_FORBIDDEN, "this connection may only subscribe")
            return
        try:
            events = parse_inbound_batch(msg.data, claims.device, time.time())
        except WireError as exc:
            hub.stats.malformed_closed += 1
            log.info("closing on bad message", extra={"device": claims.device, "reason": str(exc)})
            await conn.close(exc.code, str(exc))
            return
        for event in events:
            await hub.publish(class_id, event)


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
    riders: dict[str, object] = {}
    leaderboard: object = None
    if isinstance(hub, Hub) and class_id in hub.classes:
        fan = hub.classes[class_id]
        riders = {s.device: s.record() for s in fan.slots.changed_since(0)}
        if fan.leaderboard.seq:
            leaderboard = json.loads(fan.leaderboard.full_frame)
    return web.json_response(
        {"class": class_id, "ts": round(time.time(), 3), "riders": riders, "leaderboard": leaderboard}
    )


async def stats(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    cpu = os.times()
    out: dict[str, object] = {
        "impl": request.app[HUB_CONFIG].impl,
        "ts": time.time(),
        "cpu_user_s": cpu.user,
        "cpu_system_s": cpu.system,
        "connections": hub.connections(),
    }
    out.update(hub.stats.to_json())
    if isinstance(hub, Hub):
        out["classes"] = len(hub.classes)
        out["tick_interval_s"] = round(hub.tick_interval, 4)
        relay = hub.relay_stats()
        if relay is not None:
            out["relay"] = relay
    return web.json_response(out)


def setup_live(app: web.Application, config: HubConfig | None = None, relay: Relay | None = None) -> None:
    """Register the class hub on `app` (which must already hold KEYRING and REGISTRY)."""
    cfg = config or HubConfig()
    if relay is None and cfg.relay_url and cfg.impl != "naive":
        from engine.live.redis_relay import RedisRelay

        relay = RedisRelay(cfg.relay_url)
    hub: LiveHub = NaiveHub(cfg) if cfg.impl == "naive" else Hub(cfg, relay)
    app[HUB] = hub
    app[HUB_CONFIG] = cfg
    app[OPEN] = OpenConnections()
    app[REGISTRY].register(HubCollector(hub.stats, hub.connections))
    app.router.add_get(WS_PATH, class_ws)
    app.router.add_get("/live/v1/classes/{class_id}", class_snapshot)
    app.router.add_get("/live/v1/stats", stats)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run(), name="live-hub")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_peers(app: web.Application) -> None:
        conns = list(app[OPEN].conns)
        await asyncio.gather(*(c.close(CLOSE_GOING_AWAY, "server shutting down") for c in conns))

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_peers)
