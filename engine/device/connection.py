"""The device sync client: one WebSocket to the backend, reconnected for ever, never in recording's way.

`DeviceSync.run()` owns the connection (cancel it to stop; the socket is closed on the way out):
- connect with aiohttp (`compress=15`: permessage-deflate, since Python sends changes uncompressed;
  `heartbeat`: a ping every couple of seconds, so a dead link, such as a partition that swallows packets,
  is noticed within a few seconds rather than at the next TCP timeout);
- speak automerge-repo's protocol through the sans-I/O `ClientSession`, one fresh sync state per document
  and connection;
- after any failure wait `Backoff` (full jitter, capped), at least the server's `Retry-After`.

Refused after finalization. Once the backend has finalized a ride it refuses every other device's writes for
good (docs/architecture.md#after-finalization: then the backend is the authority), but for edits of title,
notes and rating. A
device that made changes offline which reached the backend only after that (an app's target edit, say) would
otherwise be refused, reconnect, offer the same changes and be refused again for ever. So when the backend
refuses a connection, the client asks `GET /v1/rides/{id}` for each of its rides; a finalized ride is *closed
out*: its state settles on `failed`, with a reason saying the backend finalized it without this device's late
changes (kept on this device, never counted), and from then on the client leaves out only the documents
holding changes the backend has not acknowledged (the refused ones). It still syncs every other document:
the backend's and other devices', so it receives the official result, and the shared document when none of
its changes there are refused, so title, notes and rating edits (still taken after finalization) reach it.

Recording never waits on any of this: the runner writes to the store and calls `notify(ride)`, which only
sets a flag. Sync state per ride is kept by `SyncTracker`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp

from engine.backoff import Attempts, Backoff
from engine.device import live_segments
from engine.device.defaults import DEFAULT_HEARTBEAT_S
from engine.device.retry import classify_exception, connection_error_text
from engine.device.status import SyncEvent, SyncTracker
from engine.device.store_docs import StoreDocuments
from engine.ride import schema
from engine.ride.schema import DocKind, DocRef, Phase
from engine.store import ReplicaStore
from engine.sync import client_session as cs
from engine.sync import effects as fx
from engine.sync import wire
from engine.sync.docid import document_id_from_hex, document_id_to_hex
from engine.urls import check_backend_url, http_base, ws_url

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
SYNC_PATH = "/v1/sync"
USER_AGENT = "ridesync-device"


# Refusals a retry cannot fix: the token itself is bad (its key unknown here, a forged or damaged
# signature, expired, malformed, missing) or it may not touch the ride. 429 and 503 are retried, as is a
# token not valid *yet* (a clock that is behind catches up) and any refusal without one of these codes.
FATAL_REFUSALS = frozenset(
    {
        "token_missing",
        "token_malformed",
        "token_invalid",
        "token_bad_signature",
        "token_unknown_key",
        "token_expired",
        "token_wrong_scope",
        "not_ride_owner",
    }
)
# The backend names its refusal's code in this header too, since a refused WebSocket upgrade
# (aiohttp's WSServerHandshakeError) does not carry the response body.
ERROR_HEADER = "X-Ridesync-Error"
ERROR_DETAIL_HEADER = "X-Ridesync-Error-Detail"


class SyncRefused(Exception):
    """The backend refused this device for a reason no retry can fix (FATAL_REFUSALS); raised out of
    `DeviceSync.run()` when `fail_fast` is set."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status, self.code, self.detail = status, code, detail
        super().__init__(
            f"backend refused the connection: HTTP {status} {code}" + (f": {detail}" if detail else "")
        )


def sync_url(backend: str) -> str:
    """`http://host:port` → `ws://host:port/v1/sync`; a ws:// or wss:// URL with a path is used as given.
    Raises BackendUrlError (a ValueError) for anything else (engine/urls.py)."""
    check_backend_url(backend)
    parts = urlsplit(backend)
    if parts.scheme in ("ws", "wss") and parts.path not in ("", "/"):
        return backend
    return ws_url(backend, SYNC_PATH)


class DeviceSync:
    def __init__(
        self,
        store: ReplicaStore,
        backend: str,
        token: str,
        *,
        peer: str = "backend",
        backoff: Backoff | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        on_event: Callable[[SyncEvent], None] | None = None,
        on_remote_change: Callable[[str], None] | None = None,
        on_ack: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        fail_fast: bool = False,
    ) -> None:
        self.store = store
        # A refusal in FATAL_REFUSALS ends run() with SyncRefused (a command line that can only tell its
        # user); otherwise it is retried at the backoff cap, so a fixed backend finds the device again.
        self.fail_fast = fail_fast
        self._sleep = sleep  # injectable, so tests see the backoff decisions without waiting them out
        self.url = sync_url(backend)
        self.token = token
        self.backoff = backoff if backoff is not None else Backoff()
        self.heartbeat_s = heartbeat_s
        self.connect_timeout_s = connect_timeout_s
        self.on_remote_change = on_remote_change
        self.on_ack = on_ack  # called with the store's doc id on every acknowledgement (benchmarks)
        self.max_message_bytes = max_message_bytes
        self.tracker = SyncTracker(store, peer, on_event)
        self.attempts = Attempts(self.backoff, rng)
        self.peer_id = f"{store.device_id}-{secrets.token_hex(4)}"
        self.connected = asyncio.Event()
        self.connects = 0
        self.last_error = ""
        self.delays: deque[float] = deque(maxlen=100)  # recent reconnect delays, for tests and diagnostics
        self._changed = asyncio.Event()  # a tracker state or a document changed: waiters re-check
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._session: cs.ClientSession | None = None
        self._conn_rides: frozenset[str] = frozenset()
        self._settled: set[str] = set()  # documents the backend acknowledged on this connection
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    # ---- the recording side: never blocks -------------------------------------------------------------

    def track(self, ride_id: str) -> None:
        live_segments.at_start(self.store, ride_id, self.tracker.peer)
        self.tracker.track(ride_id)
        self.notify(ride_id)

    def notify(self, ride_id: str) -> None:
        """This replica changed the ride's documents (a fold, a claim, an edit): offer the changes."""
        self._dirty.add(ride_id)
        self._wake.set()
        self.tracker.refresh(ride_id)
        self._pulse()

    def reconciled(self, ride_id: str) -> bool:
        return self.tracker.is_reconciled(ride_id)

    def settled_on_this_connection(self, ride_id: str) -> bool:
        """The backend acknowledged every document of the ride on the current connection.

        `reconciled` alone may rest on heads acknowledged in an earlier run; a replica that reads others'
        changes (the app) needs one fresh exchange to know it holds what the backend holds now.
        """
        refs = self._syncable(ride_id, self.store.ride_refs(ride_id))
        return bool(refs) and all(document_id_from_hex(r.doc_id) in self._settled for r in refs)

    def closed_out(self, ride_id: str) -> str | None:
        """Why the ride is finalized without some of this device's changes, or None (module docstring)."""
        return self.tracker.closed_out(ride_id)

    def finished(self, ride_id: str) -> bool:
        """Nothing more will change for this ride on this connection: reconciled and freshly acknowledged,
        or closed out and every document it still syncs (all but those with refused changes, the shared
        one included when it holds none) acknowledged on this connection, i.e. exchanged with the backend
        once since connecting."""
        if self.closed_out(ride_id) is not None:
            return self.settled_on_this_connection(ride_id)
        return self.reconciled(ride_id) and self.settled_on_this_connection(ride_id)

    def _syncable(self, ride_id: str, refs: list[DocRef]) -> list[DocRef]:
        """The ride's documents this connection syncs. A closed-out ride leaves out only the documents
        holding changes of this device the backend has not acknowledged (the refused ones): offering them
        again would only be refused again. Every other document is still synced, so edits the finalized
        ride still takes (title, notes, rating in the shared document) keep reaching this device."""
        if self.closed_out(ride_id) is None:
            return refs
        me = self.store.device_id
        return [r for r in refs if not self._writes(r, me) or self.tracker.is_acknowledged(r.doc_id)]

    @staticmethod
    def _writes(ref: DocRef, device: str) -> bool:
        """Whether `device` may hold changes of its own in the document: the shared one, or its own."""
        return ref.kind is DocKind.SHARED or ref.device == device

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; re-checked after every sync event and document change."""
        while not predicate():
            changed = self._changed
            await changed.wait()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- the network side -------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.tracker.flush()

    async def _run(self) -> None:
        # Every reconnect sends the upgrade request again: no `Accept`/`Accept-Encoding` (a 101 has no body,
        # the few JSON answers are small) and a short `User-Agent` save ~60 bytes on each.
        async with aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT}, skip_auto_headers=("Accept", "Accept-Encoding")
        ) as http:
            while True:
                retry_after: float | None = None
                retryable = True
                fatal: SyncRefused | None = None
                try:
                    refused = await self._connect_once(http)
                    reason = self.last_error or "connection closed"
                    if refused:
                        await self._close_out_finalized(http)
                except aiohttp.WSServerHandshakeError as exc:
                    decision = classify_exception(
                        aiohttp.ClientResponseError(
                            exc.request_info, exc.history, status=exc.status, headers=exc.headers
                        ),
                        datetime.now(UTC),
                    )
                    retry_after, retryable = decision.retry_after, decision.retry
                    code, detail = await self._refusal(http, exc)
                    said = f": {code}" + (f": {detail}" if detail else "") if code else ""
                    reason = f"backend refused the connection (HTTP {exc.status}{said})"
                    if self.fail_fast and exc.status in (401, 403) and code in FATAL_REFUSALS:
                        fatal = SyncRefused(exc.status, code, detail)
                except (aiohttp.ClientError, OSError, TimeoutError, EOFError) as exc:
                    reason = f"backend unreachable ({connection_error_text(exc)})"
                except Exception as exc:
                    # A bug or a store problem in one session must not end syncing, let alone recording.
                    log.exception("sync session failed", extra={"url": self.url})
                    reason = f"sync error ({type(exc).__name__}: {exc})"
                finally:
                    self._disconnected()
                if fatal is not None:
                    self.last_error = reason
                    self.tracker.set_online(False, reason)
                    self._pulse()
                    raise fatal
                # A refusal that retrying cannot fix (a bad token) still gets retried, at the cap, so a
                # fixed backend finds the device again; the reason says what is wrong.
                delay = self.backoff.cap if not retryable else self.attempts.next_delay(retry_after)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                self.last_error = reason
                self.tracker.set_online(False, f"{reason}; retrying in {delay:.1f} s")
                self._pulse()
                log.info(
                    "sync reconnecting", extra={"url": self.url, "delay_s": round(delay, 3), "reason": reason}
                )
                self.delays.append(delay)
                await self._sleep(delay)

    async def _refusal(
        self, http: aiohttp.ClientSession, exc: aiohttp.WSServerHandshakeError
    ) -> tuple[str, str]:
        """The backend's reason for refusing the upgrade: (code, detail), empty when unknown. From the
        response's ERROR_HEADER and ERROR_DETAIL_HEADER; from a backend that sends no such headers, from the
        JSON body `{"error", "detail"}` of a plain GET of the same URL (which answers a bad token the same
        way, though not every refusal: one that needs the upgrade itself is a 400 there)."""
        headers = exc.headers if exc.headers is not None else {}
        code, detail = headers.get(ERROR_HEADER, ""), headers.get(ERROR_DETAIL_HEADER, "")
        if (code and detail) or exc.status not in (401, 403):
            return code, detail
        url = http_base(self.url) + urlsplit(self.url).path
        try:
            async with (
                asyncio.timeout(self.connect_timeout_s),
                http.get(
                    url,
                    params=[("ride", r) for r in sorted(self._conn_rides)],
                    headers={"Authorization": f"Bearer {self.token}"},
                ) as resp,
            ):
                body = await resp.json(content_type=None) if resp.status == exc.status else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            body = None
        found = body.get("error") if isinstance(body, dict) else None
        if isinstance(found, str) and isinstance(body, dict) and (not code or found == code):
            return found, str(body.get("detail") or "")
        return code, ""

    async def _close_out_finalized(self, http: aiohttp.ClientSession) -> None:
        """After a refusal: close out every ride the backend has finalized (module docstring)."""
        for ride_id in self.tracker.rides:
            if self.closed_out(ride_id) is not None:
                continue
            url = f"{http_base(self.url)}/v1/rides/{ride_id}"
            try:
                async with (
                    asyncio.timeout(self.connect_timeout_s),
                    http.get(url, headers={"Authorization": f"Bearer {self.token}"}) as resp,
                ):
                    if resp.status != 200:
                        continue
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                continue  # unknown: retried as any refusal is, and asked again after the next one
            if not isinstance(body, dict) or body.get("phase") != "finalized":
                continue
            reason = (
                "the backend finalized this ride before it received changes made on this device; "
                "they are kept here and do not count"
            )
            self.tracker.close_out(ride_id, reason)
            log.warning("ride closed out", extra={"ride_id": ride_id, "reason": reason})
        self._pulse()

    async def _connect_once(self, http: aiohttp.ClientSession) -> bool:
        """One connection, until it ends; True if the backend refused something on it."""
        self.last_error = ""
        # The backend admits a connection to the rides it names (engine/backend/README.md).
        self._conn_rides = frozenset(self.tracker.rides)
        async with asyncio.timeout(self.connect_timeout_s):
            ws = await http.ws_connect(
                self.url,
                params=[("ride", r) for r in sorted(self._conn_rides)],
                headers={"Authorization": f"Bearer {self.token}"},
                heartbeat=self.heartbeat_s,
                compress=15,
                max_msg_size=self.max_message_bytes,
            )
        self._ws = ws
        try:
            return await self._run_session(ws)
        finally:
            self._ws = None
            await ws.close()

    def _settle(self, doc_id: str) -> None:
        """The backend holds `doc_id` as we do, on this connection; a shared document's ride may go on."""
        if doc_id not in self._settled:
            self._settled.add(doc_id)
            self._dirty.add(self.store.ref(document_id_to_hex(doc_id)).ride_id)
            self._wake.set()

    def _disconnected(self) -> None:
        self.connected.clear()
        self._session = None
        # What the backend acknowledged on a connection that is gone says nothing about the next one:
        # `finished` must not hold between a refusal and the reconnect that follows it.
        self._settled = set()

    async def _run_session(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        self._settled = set()
        session = cs.ClientSession(
            peer_id=self.peer_id,
            documents=StoreDocuments(self.store),
            max_message_bytes=self.max_message_bytes,
        )
        self._session = session
        send_lock = asyncio.Lock()
        refused = False

        async def apply(effects: list[cs.Effect]) -> None:
            nonlocal refused
            for effect in effects:
                match effect:
                    case fx.Send(frame):
                        try:
                            async with send_lock:
                                await ws.send_bytes(frame)
                        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                            # Whichever task hits the dead link first ends the session for both.
                            self.last_error = self.last_error or f"connection lost ({type(exc).__name__})"
                            await ws.close()
                            return
                    case fx.Close(code, reason):
                        self.last_error = self.last_error or reason
                        await ws.close(code=code, message=reason.encode())
                    case fx.Joined():
                        self.connects += 1
                        self.connected.set()
                        self.tracker.set_online(True)
                        self._dirty.update(self.tracker.rides)
                        self._wake.set()
                    case cs.Acknowledged(doc_id, heads):
                        doc_hex = document_id_to_hex(doc_id)
                        self._settle(doc_id)
                        self.tracker.acknowledged(doc_hex, heads)
                        live_segments.after_acknowledged(self.store, session, doc_hex, heads)
                        if self.on_ack is not None:
                            self.on_ack(doc_hex)
                        self._pulse()
                    case cs.Changed(doc_id):
                        doc_hex = document_id_to_hex(doc_id)
                        ride_id = self.store.ref(doc_hex).ride_id
                        live_segments.after_change(self.store, session, ride_id)
                        # The shared document indexes the others: a new entry is a new document to sync.
                        self._dirty.add(ride_id)
                        self._wake.set()
                        if self.on_remote_change is not None:
                            self.on_remote_change(ride_id)
                        self.tracker.refresh(ride_id)
                        self._pulse()
                    case cs.Unavailable(doc_id):
                        doc_hex = document_id_to_hex(doc_id)
                        if live_segments.consolidated(self.store, doc_hex):
                            continue  # a live segment the backend retired: its samples are consolidated
                        ride_id = self.store.ref(doc_hex).ride_id
                        if not self.store.heads(doc_hex):
                            # Neither side has anything of it (say, the backend has not written yet).
                            self._settle(doc_id)
                            self.tracker.acknowledged(doc_hex, ())
                        else:
                            self.tracker.refused(ride_id, f"it does not accept document {doc_hex}")
                        self._pulse()
                    case cs.ServerError(message):
                        refused = True
                        self.last_error = f"backend error: {message}"
                        for ride_id in self.tracker.rides:
                            if self.closed_out(ride_id) is None:
                                self.tracker.refused(ride_id, message)
                        self._pulse()

        await apply(session.connect())
        async with asyncio.TaskGroup() as tg:
            pusher = tg.create_task(self._push(session, apply))
            try:
                async with asyncio.timeout(self.connect_timeout_s) as joined_deadline:
                    async for msg in ws:
                        if msg.type is aiohttp.WSMsgType.BINARY:
                            await apply(session.receive(msg.data))
                        else:
                            await apply(session.fail(f"unexpected {msg.type.name} frame"))
                        if session.state is cs.ClientState.JOINED:
                            joined_deadline.reschedule(None)
                        if session.state is cs.ClientState.CLOSED:
                            break
            except (ConnectionError, aiohttp.ClientError) as exc:
                self.last_error = f"connection lost ({type(exc).__name__})"
            finally:
                pusher.cancel()
        if isinstance(ws.exception(), aiohttp.ServerTimeoutError):
            self.last_error = f"no answer to the heartbeat within {self.heartbeat_s / 2:g} s"
        if session.state is cs.ClientState.JOINED and not refused:
            # The link was fine until it dropped: the next reconnect starts from the shortest delay.
            self.attempts.succeeded()
        if not self.last_error:
            err = ws.exception()
            code = ws.close_code
            if err is not None:
                self.last_error = (
                    f"connection lost ({type(err).__name__}{': ' + str(err) if str(err) else ''})"
                )
            else:
                self.last_error = (
                    f"connection closed (code {code})" if code is not None else "connection lost"
                )
        return refused

    async def _push(
        self, session: cs.ClientSession, apply: Callable[[list[cs.Effect]], Awaitable[None]]
    ) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if session.state is not cs.ClientState.JOINED:
                continue
            if not set(self.tracker.rides) <= self._conn_rides and self._ws is not None:
                # The connection names its rides on the upgrade: reconnect to add the new one.
                self.last_error = "reconnecting to add a ride"
                await self._ws.close()
                return
            rides, self._dirty = self._dirty, set()
            for ride_id in rides:
                refs = self._syncable(ride_id, self.store.ride_refs(ride_id))
                for ref in refs:
                    self.store.ensure_doc(ref)
                shared = document_id_from_hex(schema.shared_ref(ride_id).doc_id)
                if (
                    shared not in self._settled
                    and self.closed_out(ride_id) is None
                    and self.store.phase(ride_id) >= Phase.ENDED
                ):
                    # An ended ride syncs the shared document first, the rest once the backend holds it: a
                    # device's own document can carry the end claim that lets the backend finalize, and after
                    # that the gate refuses this device's shared changes for good, even ones made long
                    # before. Before the end nothing can finalize, so all documents go at once (one round
                    # trip less per connection, which a class of bikes joining together notices).
                    refs = [r for r in refs if r.kind is DocKind.SHARED]
                wire_ids = [document_id_from_hex(r.doc_id) for r in refs]
                known = [d for d in wire_ids if d in session.opened]
                effects = session.open_documents(wire_ids)
                for doc_id in known:
                    effects += session.local_change(doc_id)
                await apply(effects)
