"""`GET /v1/sync`: the automerge-repo WebSocket endpoint (the adapter around engine/sync/session.py).

One connection = a reader task (frames into a small bounded queue, so a flooding peer meets TCP
backpressure) and a worker task, the only one that sends: it feeds frames to the session, and pushes
documents that other connections changed (coalesced: a burst of changes is one generate per document).

Acknowledgement only after commit: the store commits on its writer thread (write-behind, group commit),
so before sending a `sync` frame the worker awaits `store.flushed()`: its heads may include new changes
(this peer's or another's), and no peer may learn of heads a SIGKILL could still take back. (`peer`,
`doc-unavailable` and `error` frames carry no document state and go out at once.) While one
group commits, the other connections' writes gather into the next.

A connection lives no longer than its token: at `exp` + the clock leeway that `verify` allows, it is
closed with 4401 "token expired" (as the live hub does); the device reconnects with a fresh token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from aiohttp import WSMsgType, web

from engine.auth.tokens import CLOCK_LEEWAY_S, Claims
from engine.backend import auth, owners
from engine.backend.provider import RideDocuments
from engine.backend.service import Backend
from engine.backend.state import BackendState, ride_classes
from engine.ride import schema
from engine.store import StoreError
from engine.sync import session as s

log = logging.getLogger(__name__)

QUEUE_FRAMES: Final = 8
CLOSE_TOKEN_EXPIRED: Final = 4401  # as the live hub (engine/live/hub.py)


class Connection:
    def __init__(
        self,
        backend: Backend,
        ws: web.WebSocketResponse,
        claims: Claims,
        rides: frozenset[str],
        app: web.Application,
    ) -> None:
        self.backend = backend
        self.ws = ws
        self.device = claims.device
        self.role = auth.ride_role(claims)
        self.expires_at = claims.exp + CLOCK_LEEWAY_S  # unix time; verify() accepts the token until then
        self.provider = RideDocuments(
            backend,
            self,
            device=claims.device,
            role=self.role,
            rides=rides,
            may_read=lambda ride: auth.may_read(claims, ride, ride_classes(app, ride)),
            claims=claims,
        )
        self.session = s.ServerSession(
            server_peer_id=backend.config.server_peer_id,
            provider=self.provider,
            max_message_bytes=backend.config.max_message_bytes,
        )
        self._dirty: dict[str, None] = {}
        self._frames: asyncio.Queue[tuple[WSMsgType, object]] = asyncio.Queue(QUEUE_FRAMES)
        self._wake = asyncio.Event()
        self._eof = False

    def document_changed(self, doc_id: str) -> None:
        self._dirty[doc_id] = None
        self._wake.set()

    async def run(self) -> None:
        self.backend.add_peer(self)
        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read())
                await self._work_until_expiry()
                reader.cancel()
        finally:
            self.backend.remove_peer(self, self.provider.rides_open, self.provider.documents_open)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                await self._frames.put((msg.type, msg.data))
                self._wake.set()
        finally:
            # The worker must learn that the peer is gone, also when this task is cancelled.
            self._eof = True
            self._wake.set()

    async def _work_until_expiry(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + max(0.0, self.expires_at - time.time())):
                await self._work()
        except TimeoutError:
            self.backend.metrics.token_expired_closes.inc()
            await self._apply(self.session.fail("token expired", CLOSE_TOKEN_EXPIRED))

    async def _work(self) -> None:
        while True:
            if self.session.state is s.SessionState.AWAITING_JOIN:
                # Heartbeats keep a silent but alive peer open forever; a peer that never joins is closed.
                try:
                    async with asyncio.timeout(self.backend.config.join_timeout_s):
                        await self._wake.wait()
                except TimeoutError:
                    timeout = self.backend.config.join_timeout_s
                    await self._apply(
                        self.session.fail(f"no join within {timeout:g} s", s.CLOSE_POLICY_VIOLATION)
                    )
                    return
            else:
                await self._wake.wait()
            self._wake.clear()
            while not self._frames.empty():
                await self._apply(self._receive(*self._frames.get_nowait()))
                if self.session.state is s.SessionState.CLOSED:
                    return
            while self._dirty and self.session.state is s.SessionState.JOINED:
                doc_id = next(iter(self._dirty))
                del self._dirty[doc_id]
                await self._apply(self.session.document_changed(doc_id))
            if self.session.state is s.SessionState.CLOSED or (self._eof and self._frames.empty()):
                return

    def _receive(self, kind: WSMsgType, data: object) -> list[s.Effect]:
        if kind is WSMsgType.BINARY:
            assert isinstance(data, bytes)
            self.backend.metrics.sync_bytes.labels("in").inc(len(data))
            return self.session.receive(data)
        if kind is WSMsgType.TEXT:
            return self.session.fail("only binary frames carry automerge-repo messages")
        if kind is WSMsgType.ERROR:
            # aiohttp already closed the socket (1009 for a frame over max_msg_size); this is for the log.
            too_big = "too big" in str(data).lower() or "1009" in str(data)
            code = s.CLOSE_TOO_BIG if too_big else s.CLOSE_PROTOCOL_ERROR
            return self.session.fail(f"bad frame: {data}", code)
        return []

    async def _apply(self, effects: list[s.Effect]) -> None:
        for effect in effects:
            match effect:
                case s.Send(frame, carries_state):
                    if self.ws.closed:
                        continue  # the peer resyncs what it missed when it reconnects
                    if carries_state and not await self._durable():
                        return
                    try:
                        await self.ws.send_bytes(frame)
                    except (ConnectionError, RuntimeError):
                        continue
                    self.backend.metrics.sync_bytes.labels("out").inc(len(frame))
                case s.Close(code, reason):
                    self.backend.metrics.closes.labels(str(code)).inc()
                    log.info(
                        "sync connection closed by the server",
                        extra={
                            "device": self.device,
                            "role": self.role.value,
                            "code": code,
                            "reason": reason,
                        },
                    )
                    await self.ws.close(code=code, message=reason.encode())
                case s.Joined(peer_id, _):
                    log.info(
                        "sync peer joined",
                        extra={"device": self.device, "role": self.role.value, "peer_id": peer_id},
                    )
                case s.DocumentChanged(doc_id):
                    self.backend.broadcast(doc_id, exclude=self)
                case s.EphemeralReceived():
                    pass  # ephemeral messages are not relayed (the live lane carries live data)

    async def _durable(self) -> bool:
        """Wait until everything the store holds is committed (group commit); False if it never will be,
        after closing this connection (1011)."""
        store = self.backend.store
        writer = store.writer
        if writer is None or writer.pending == 0:
            return True
        started = time.perf_counter()
        try:
            await store.flushed()
        except StoreError as exc:
            log.error("store commit failed; closing the connection", extra={"device": self.device})
            self.session.fail(f"storage failure: {exc}", s.CLOSE_INTERNAL_ERROR)
            self.backend.metrics.closes.labels(str(s.CLOSE_INTERNAL_ERROR)).inc()
            await self.ws.close(code=s.CLOSE_INTERNAL_ERROR, message=b"storage failure")
            return False
        self.backend.metrics.commit_wait_seconds.observe(time.perf_counter() - started)
        return True


def _requested_rides(request: web.Request, claims: Claims, limit: int) -> frozenset[str]:
    named = request.query.getall("ride", [])
    if len(named) > limit:
        raise auth.RequestError(400, "too_many_rides", f"at most {limit} rides per connection")
    for ride in named:
        try:
            schema.check_ride_id(ride)
        except ValueError as exc:
            raise auth.RequestError(400, "bad_ride", str(exc)) from None
        if claims.rides is not None and ride not in claims.rides:
            raise auth.RequestError(403, "token_wrong_scope", f"token does not allow ride {ride!r}")
    if not named and claims.rides is not None:
        return claims.rides
    return frozenset(named)


async def sync_endpoint(request: web.Request, state: BackendState) -> web.StreamResponse:
    backend = state.require()
    try:
        claims = auth.authenticate(request, state.limiter, state.metrics, "sync", state.keyring(request))
        rides = _requested_rides(request, claims, backend.config.max_rides_per_connection)
    except auth.RequestError as exc:
        return exc.response()
    ws = web.WebSocketResponse(
        heartbeat=backend.config.heartbeat_s, compress=True, max_msg_size=backend.config.max_message_bytes
    )
    if not ws.can_prepare(request).ok:
        return auth.RequestError(400, "not_websocket", "GET /v1/sync is a WebSocket endpoint").response()
    try:
        # Ride owners: refuses strangers (403), starts the bike's new rides, registers the ride's class.
        owners.admit_sync(request, backend, claims, rides)
    except auth.RequestError as exc:
        return exc.response()
    try:
        await ws.prepare(request)
    except ConnectionError:
        # The device vanished during the handshake (a partition, a reset): nothing to serve, nothing
        # changed. aiohttp finishes the response quietly on a closed transport.
        log.info("sync client gone during the upgrade", extra={"device": claims.device})
        return ws
    connection = Connection(backend, ws, claims, rides, request.app)
    try:
        await connection.run()
    finally:
        if not ws.closed:
            await ws.close()
    return ws
