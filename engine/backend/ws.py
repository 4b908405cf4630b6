"""`GET /v1/sync`: the automerge-repo WebSocket endpoint (the adapter around engine/sync/server_session.py).

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

Closing so that the peer reads the code (`Connection._close`): the reader task stops first, so that
aiohttp's `close()` itself reads on, discarding, until the peer's close frame; and the socket is closed
only once the peer has closed its side or `close_timeout_s` passed (`SyncSocket`, `_linger`). The
metrics count the code that went out (1006 when none could). At server shutdown the shutdown hook sends
the close frame (1001) itself. When the connection ends, what it held is freed at once, without the
cycle collector (`_release`; the provider holds the connection weakly; `_forget_heartbeat_callback`
breaks the cycle aiohttp leaves between the WebSocket and its protocol).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from typing import Final

from aiohttp import WebSocketError, WSMsgType, web

from engine.auth.tokens import CLOCK_LEEWAY_S, Claims
from engine.backend import auth, owners
from engine.backend.provider import RideDocuments
from engine.backend.service import Backend
from engine.backend.state import BackendState, ride_classes
from engine.ride import schema
from engine.store import StoreError
from engine.sync import effects as fx
from engine.sync import server_session as s

log = logging.getLogger(__name__)

QUEUE_FRAMES: Final = 8
LINGER_POLL_S: Final = 0.02
CLOSE_TOKEN_EXPIRED: Final = fx.CLOSE_TOKEN_EXPIRED
CLOSE_ABNORMAL: Final = 1006  # never sent: what a peer sees when the connection ends without a close frame


class SyncSocket(web.WebSocketResponse):
    """aiohttp's WebSocketResponse, but it never closes the socket itself: the handler does, once the
    peer has closed its side or `close_timeout_s` passed (`_linger`).

    aiohttp closes the socket right after its close frame whenever it does not wait for the peer's (a
    frame it refused itself, such as one over max_msg_size: 1009). A peer still sending then meets a
    closed socket, its kernel gets a reset, and the reset can overtake the close frame: it sees 1006.
    Reading on (aiohttp drops what arrives after a close) until the peer closes avoids the reset."""

    def _close_transport(self) -> None:
        pass  # sync_endpoint closes the socket (_linger)


# SyncSocket overrides a private aiohttp method; fail loudly at import if it is gone.
assert callable(getattr(web.WebSocketResponse, "_close_transport", None)), "aiohttp changed"
# `_forget_heartbeat_callback` clears a private attribute of aiohttp's protocol; likewise.
assert "_data_received_cb" in web.RequestHandler.__slots__, "aiohttp changed"


def _forget_heartbeat_callback(request: web.Request) -> None:
    """Break a reference cycle aiohttp leaves behind: with a heartbeat, the connection's protocol keeps a
    bound method of the WebSocket (its data-received callback) after the connection ends, and the
    WebSocket refers to the request, which refers to the protocol. The WebSocket (its zlib state alone
    is ~300 KB) then lives until the cycle collector runs, which `serve` runs rarely: a server that
    served class after class grew by that much per connection (tests/backend/test_sync_memory.py)."""
    protocol = request.protocol
    if isinstance(protocol, web.RequestHandler):
        protocol._data_received_cb = None


def _clear_frames(exc: BaseException | None) -> None:
    """Clear the finished frames of `exc`'s traceback and of every exception it was raised while handling
    (`__context__`) or from (`__cause__`). aiohttp chains what a connection's end met: a read that found
    end-of-stream (raised in `receive()`, whose frame holds the WebSocket), then the close frame that could
    not be written. Kept by the WebSocket (`exception()`), any one of those tracebacks is a cycle back to
    it."""
    pending, seen = [exc], set()
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        pending += (e.__cause__, e.__context__)


async def _linger(request: web.Request, timeout_s: float) -> None:
    """Wait until the peer closed its side of the connection (after reading our close frame) or
    `timeout_s`, then close the socket."""
    transport = request.transport
    if transport is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # Polled: once the WebSocket is closed, nothing tells the handler that the peer's FIN arrived.
    while not transport.is_closing() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(LINGER_POLL_S)
    transport.close()


class Connection:
    def __init__(
        self,
        backend: Backend,
        ws: SyncSocket,
        claims: Claims,
        rides: frozenset[str],
        request: web.Request,
    ) -> None:
        self.backend = backend
        self.ws = ws
        self.request = request
        app = request.app
        self.device = claims.device
        self.role = claims.role
        self.rides = rides  # named (`?ride=`): kept in memory while this connection lives
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
        self._reader: asyncio.Task[None] | None = None
        self._closed_by_aiohttp: int | None = None

    async def shutdown(self, code: int, reason: str) -> None:
        """The server is going away: close with `code` (1001). Unlike `_close`, the reader keeps running:
        once aiohttp began its shutdown it drops what peers send, so waiting for the peer's close frame
        would only wait out `close_timeout_s`. The socket still stays open (SyncSocket, `_linger`) until
        the peer, having read the close frame, closes its side."""
        if self.ws.closed:
            return
        self._log_close(code, reason)
        await self.ws.close(code=code, message=reason.encode())

    def document_changed(self, doc_id: str) -> None:
        self._dirty[doc_id] = None
        self._wake.set()

    async def run(self) -> None:
        self.backend.add_peer(self, self.rides)
        # A plain task rather than a TaskGroup: on Python 3.11 a TaskGroup left by an exception (aiohttp
        # may cancel the handler when the peer vanishes) keeps a reference cycle through the exception's
        # traceback, and with it this connection's frames, until the cycle collector runs.
        self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self._work_until_expiry()
        finally:
            await self._stop_reader()
            self.backend.remove_peer(self, self.provider.rides_open, self.provider.documents_open, self.rides)
            self._release()

    async def _stop_reader(self) -> None:
        reader = self._reader
        if reader is None:
            return
        if not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        # Forget the task: a cancelled task keeps its CancelledError, whose traceback keeps the reader's
        # frame (this connection, the last frame read): a cycle through this attribute.
        self._reader = None
        if not reader.cancelled() and reader.exception() is not None:
            log.info("sync reader failed", extra={"device": self.device, "error": repr(reader.exception())})

    def _release(self) -> None:
        """Free what the connection held at once (staging copies, queued frames), whoever still refers to
        this object."""
        self.provider.close()
        while not self._frames.empty():
            self._frames.get_nowait()
        self._dirty.clear()

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
                        self.session.fail(f"no join within {timeout:g} s", fx.CLOSE_POLICY_VIOLATION)
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
            try:
                return self.session.receive(data)
            except StoreError as exc:
                # The store cannot decide or commit (PostgreSQL away): nothing of this message was
                # acknowledged; the device keeps it and resends after reconnecting.
                log.error("store unavailable; closing the connection", extra={"device": self.device})
                return self.session.fail(f"storage failure: {exc}", fx.CLOSE_INTERNAL_ERROR)
        if kind is WSMsgType.TEXT:
            return self.session.fail("only binary frames carry automerge-repo messages")
        if kind is WSMsgType.ERROR:
            # aiohttp has closed the connection itself: after a frame it refused (a WebSocketError, e.g.
            # 1009 for one over max_msg_size) it sent that error's code; after a lost connection or a
            # missed heartbeat it could send nothing, so the peer sees 1006.
            code = data.code if isinstance(data, WebSocketError) else CLOSE_ABNORMAL
            self._closed_by_aiohttp = code
            return self.session.fail(f"bad frame: {data}", code)
        return []

    async def _apply(self, effects: list[s.Effect]) -> None:
        for effect in effects:
            match effect:
                case fx.Send(frame, carries_state):
                    if self.ws.closed:
                        continue  # the peer resyncs what it missed when it reconnects
                    if carries_state and not await self._durable():
                        return
                    try:
                        await self.ws.send_bytes(frame)
                    except (ConnectionError, RuntimeError):
                        continue
                    self.backend.metrics.sync_bytes.labels("out").inc(len(frame))
                case fx.Close(code, reason):
                    await self._close(code, reason)
                case fx.Joined(peer_id, _):
                    log.info(
                        "sync peer joined",
                        extra={"device": self.device, "role": self.role.value, "peer_id": peer_id},
                    )
                case s.DocumentChanged(doc_id):
                    self.backend.broadcast(doc_id, exclude=self)
                case s.EphemeralReceived():
                    pass  # ephemeral messages are not relayed (the live lane carries live data)

    async def _close(self, code: int, reason: str) -> None:
        """Close with `code` so that the peer reliably reads it, and count what the peer got.

        The reader task stops first: aiohttp's `close()` then sends the close frame and reads on,
        discarding, until the peer's close frame (or `close_timeout_s`) before it closes the socket.
        With a reader still waiting in `receive()`, `close()` hands the closing over to that reader and
        closes the socket at once, and a peer still sending then gets a reset that can overtake the
        close frame: the peer sees 1006."""
        await self._stop_reader()
        ws = self.ws
        transport = self.request.transport
        sent: int | None
        if ws.closed:
            # aiohttp closed it itself (see _receive), or the peer closed first: nothing of ours was sent.
            sent = self._closed_by_aiohttp
        elif transport is None or transport.is_closing():
            sent = CLOSE_ABNORMAL  # the peer is gone: no close frame can reach it
            await ws.close(code=code, message=reason.encode())
        else:
            sent = code
            await ws.close(code=code, message=reason.encode())
        if sent is not None:
            # The frame's reason is cut to 123 bytes (RFC 6455); the log gets the whole of it.
            self._log_close(sent, self.session.close_reason or reason)

    def _log_close(self, code: int, reason: str) -> None:
        self.backend.metrics.closes.labels(str(code)).inc()
        log.info(
            "sync connection closed by the server",
            extra={"device": self.device, "role": self.role.value, "code": code, "reason": reason},
        )

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
            self.session.fail(f"storage failure: {exc}", fx.CLOSE_INTERNAL_ERROR)
            await self._close(fx.CLOSE_INTERNAL_ERROR, "storage failure")
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
    ws = SyncSocket(
        heartbeat=backend.config.heartbeat_s,
        compress=True,
        max_msg_size=backend.config.max_message_bytes,
        timeout=backend.config.close_timeout_s,  # how long close() waits for the peer's close frame
    )
    if not ws.can_prepare(request).ok:
        return auth.RequestError(400, "not_websocket", "GET /v1/sync is a WebSocket endpoint").response()
    try:
        # Ride owners: refuses strangers (403), starts the bike's new rides, registers the ride's class.
        owners.admit_sync(request, backend, claims, rides)
    except auth.RequestError as exc:
        return exc.response()
    # A device that vanishes during the handshake (a partition, a reset) raises ConnectionError out of
    # prepare(): nothing was served and nothing changed. It propagates: the server's request handler
    # (engine/server/guard.py) logs it as one INFO line; returning the unprepared response instead made
    # aiohttp fail on it ("Call .prepare() first") with an ERROR traceback.
    await ws.prepare(request)
    connection = Connection(backend, ws, claims, rides, request)
    try:
        try:
            await connection.run()
        finally:
            try:
                if not ws.closed:
                    await ws.close()
                await _linger(request, backend.config.close_timeout_s)
            finally:
                _forget_heartbeat_callback(request)
                # aiohttp keeps the error its close() met (`exception()`), chained to the one its last
                # read met; their tracebacks hold receive()'s and close()'s frames and so the WebSocket
                # itself: a cycle. Those frames are finished; clear them.
                _clear_frames(ws.exception())
    except BaseException as exc:
        # A peer that vanished (a reset) ends the handler with an exception: aiohttp cancels it, and our
        # close then fails on the closing transport. That exception's traceback sits in a reference
        # cycle with aiohttp's own frames, and the traceback holds every frame it passed with its
        # locals — this connection and its WebSocket (~300 KB of zlib state) — until the cycle
        # collector runs. Drop them from this frame and clear the finished frames below it.
        del connection, ws
        _clear_frames(exc)
        raise
    return ws
