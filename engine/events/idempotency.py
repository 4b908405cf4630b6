"""An idempotency ledger for HTTP events, in SQLite (stdlib, WAL, synchronous=FULL).

Each entry maps `(scope, key)` to the fingerprint of the request that first used the key and, once that
request finished, its stored response:
- the same key with the same fingerprint replays the stored response, without running the handler again;
- the same key with a different fingerprint is an `IdempotencyConflict` (HTTP 422, as in the IETF
  Idempotency-Key draft);
- concurrent first requests are serialised through a `pending` claim row: exactly one caller executes,
  the others wait for its result and replay it. This works across threads and processes sharing the file.

Two layers make "the ride ended from the bike and from the app counts once"
(docs/architecture.md#idempotent-events):
1. the client's `Idempotency-Key` header, scoped to the authenticated device (`device_scope`), with an
   exact body match: a device retrying gets its stored response; a device reusing a key for another body
   gets a conflict;
2. a logical event key shared by every device (`ride_end_event`), with `match_body=False`: whichever
   device's end arrives first executes, and every other end of that ride replays its response.
Devices derive their header from the ride too (`ride_end_idempotency_key`), so a device that crashed and
restarted retries under the same key.

A claim whose owner died (crash, kill -9) blocks its key only until its lease expires; then the next
caller takes it over and executes. Handlers must therefore be safe to re-run after a crash mid-way (the
ride phase only moves forward, so a second "end" is a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint BLOB,                -- NULL: a logical event, any body replays
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    owner TEXT,                      -- the claim executing a pending entry
    claimed_at REAL NOT NULL,
    status INTEGER,
    content_type TEXT,
    body BLOB,
    completed_at REAL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
"""
MAX_KEY_CHARS: Final = 255
DEFAULT_LEASE_S: Final = 60.0
_NAMESPACE: Final = uuid.UUID("6f1d3c2e-6b0e-4f55-9a43-2f7c1d9e8a10")


class IdempotencyError(Exception):
    """Base of the ledger's typed errors; `http_status` is the status to answer with."""

    http_status = 500


class IdempotencyConflict(IdempotencyError):
    """The key was first used with a different request."""

    http_status = 422


class StillInProgress(IdempotencyError):
    """Another request with this key is still executing and did not finish within the wait."""

    http_status = 409


class InvalidKey(IdempotencyError):
    http_status = 400


class LedgerUnavailable(IdempotencyError):
    """The ledger's database cannot be reached: nothing was stored, the client retries later."""

    http_status = 503


class LedgerUnreadable(IdempotencyError):
    """The ledger's file cannot be opened as a ledger (not a database, damaged, unreadable); the message
    names the file."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Claim:
    scope: str
    key: str
    owner: str
    taken_over: bool = False


@dataclass(frozen=True, slots=True)
class Execute:
    """You hold the claim: run the handler, then `complete` (or `abandon` if it failed)."""

    claim: Claim


@dataclass(frozen=True, slots=True)
class Replay:
    response: StoredResponse


@dataclass(frozen=True, slots=True)
class InProgress:
    claimed_at: float


@dataclass(frozen=True, slots=True)
class Conflict:
    reason: str


Begin = Execute | Replay | InProgress | Conflict


@dataclass(frozen=True, slots=True)
class Result:
    response: StoredResponse
    # False for the caller whose handler ran; True for everyone who got the stored response.
    replayed: bool


def fingerprint(*parts: bytes | str) -> bytes:
    """A hash of the request parts that must match on a retry (method, path, body). Length-prefixed, so
    moving bytes between parts changes it."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.digest()


IDEMPOTENCY_HEADER: Final = "Idempotency-Key"


def parse_idempotency_header(value: str | None) -> str:
    """The key from an `Idempotency-Key` header. The IETF draft makes it a structured-field string
    (`"abc"`); most clients send it bare, so both are accepted. Missing or malformed → `InvalidKey`."""
    if value is None:
        raise InvalidKey(f"{IDEMPOTENCY_HEADER} header is required")
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if '"' in key or "\\" in key:
        raise InvalidKey(f"{IDEMPOTENCY_HEADER} must be a plain token or one quoted string")
    _check_key("x", key)
    return key


def device_scope(device_id: str) -> str:
    return f"device:{device_id}"


def ride_end_event(ride_id: str) -> tuple[str, str]:
    """The logical (scope, key) of "ride `ride_id` ended": the same whichever device reports it."""
    return ("event:ride.end", ride_id)


def ride_end_idempotency_key(ride_id: str) -> str:
    """The `Idempotency-Key` header a device sends to end `ride_id`: deterministic, so a retry after a
    device restart reuses it."""
    return str(uuid.uuid5(_NAMESPACE, f"ride.end/{ride_id}"))


def _check_key(scope: str, key: str) -> None:
    for name, value in (("scope", scope), ("key", key)):
        if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS:
            raise InvalidKey(f"idempotency {name} must be 1..{MAX_KEY_CHARS} characters")
        if not value.isprintable():
            raise InvalidKey(f"idempotency {name} must be printable")


class Ledger:
    """One SQLite file; safe to share between threads (one connection behind a lock) and processes
    (SQLite's locking; `BEGIN IMMEDIATE` serialises the claim step). `PostgresLedger`
    (idempotency_pg.py) is the same ledger in PostgreSQL, shared by every backend node."""

    def __init__(
        self,
        path: str | Path,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        busy_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.lease_s = lease_s
        self._clock = clock
        self._lock = threading.Lock()
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            # A stored response must survive a power cut once the client has seen it, or a retry re-executes.
            db.execute("PRAGMA synchronous=FULL")
            db.execute(SCHEMA)
            # Reading a row checks that the table is the ledger's and its pages are readable.
            db.execute("SELECT scope, key, fingerprint, state, owner, claimed_at FROM idempotency LIMIT 1")
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            if db is not None:
                db.close()
            raise LedgerUnreadable(f"{self.path} is not a readable idempotency ledger: {exc}") from None
        self._db = db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the database (a subclass on another database overrides these two) ------------------------------

    @contextlib.contextmanager
    def _transaction(self, scope: str, key: str) -> Iterator[None]:
        """One transaction that serialises every step on (scope, key); SQLite's BEGIN IMMEDIATE takes the
        database's write lock, which serialises them all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _exec(self, sql: str, args: tuple[object, ...]) -> Any:
        """Run one statement (`?` placeholders; outside `_transaction` it commits on its own); returns a
        cursor (fetchone, rowcount)."""
        return self._db.execute(sql, args)

    # ---- the steps --------------------------------------------------------------------------------------

    def begin(self, scope: str, key: str, request_fingerprint: bytes, *, match_body: bool = True) -> Begin:
        """Claim `(scope, key)` or learn what happened to it. With `match_body=False` the entry is a
        logical event: any request replays the first one's response."""
        _check_key(scope, key)
        stored_fp = request_fingerprint if match_body else None
        with self._lock, self._transaction(scope, key):
            return self._begin_locked(scope, key, stored_fp)

    def _begin_locked(self, scope: str, key: str, fp: bytes | None) -> Begin:
        now = self._clock()
        row = self._exec(
            "SELECT fingerprint, state, claimed_at, status, content_type, body FROM idempotency "
            "WHERE scope = ? AND key = ?",
            (scope, key),
        ).fetchone()
        if row is None:
            owner = uuid.uuid4().hex
            self._exec(
                "INSERT INTO idempotency (scope, key, fingerprint, state, owner, claimed_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (scope, key, fp, owner, now),
            )
            return Execute(Claim(scope, key, owner))
        stored_fp, state, claimed_at, status, content_type, body = row
        if stored_fp is not None and fp is not None and bytes(stored_fp) != fp:
            return Conflict(f"idempotency key {key!r} was already used with a different request")
        if state == "done":
            return Replay(StoredResponse(status, bytes(body), content_type))
        if now - claimed_at < self.lease_s:
            return InProgress(claimed_at)
        owner = uuid.uuid4().hex
        self._exec(
            "UPDATE idempotency SET owner = ?, claimed_at = ? WHERE scope = ? AND key = ?",
            (owner, now, scope, key),
        )
        return Execute(Claim(scope, key, owner, taken_over=True))

    def complete(self, claim: Claim, response: StoredResponse) -> Result:
        """Store the response. If the claim was lost meanwhile (its lease expired and someone else
        finished first), the winner's stored response is returned instead of ours."""
        with self._lock, self._transaction(claim.scope, claim.key):
            cur = self._exec(
                "UPDATE idempotency SET state = 'done', owner = NULL, status = ?, content_type = ?, "
                "body = ?, completed_at = ? WHERE scope = ? AND key = ? AND owner = ? "
                "AND state = 'pending'",
                (
                    response.status,
                    response.content_type,
                    response.body,
                    self._clock(),
                    claim.scope,
                    claim.key,
                    claim.owner,
                ),
            )
            mine = cur.rowcount == 1
            stored = None if mine else self._stored_locked(claim.scope, claim.key)
        if mine:
            return Result(response, replayed=False)
        if stored is None:
            # Our claim was taken over and that owner has not finished (or gave up): keep ours out of it.
            raise StillInProgress(f"claim on {claim.key!r} was taken over before it completed")
        return Result(stored, replayed=True)

    def abandon(self, claim: Claim) -> None:
        """The handler failed: drop the claim so a retry can execute."""
        with self._lock:
            self._exec(
                "DELETE FROM idempotency WHERE scope = ? AND key = ? AND owner = ? AND state = 'pending'",
                (claim.scope, claim.key, claim.owner),
            )

    def lookup(self, scope: str, key: str) -> StoredResponse | None:
        with self._lock:
            return self._stored_locked(scope, key)

    def _stored_locked(self, scope: str, key: str) -> StoredResponse | None:
        row = self._exec(
            "SELECT status, content_type, body FROM idempotency "
            "WHERE scope = ? AND key = ? AND state = 'done'",
            (scope, key),
        ).fetchone()
        return None if row is None else StoredResponse(row[0], bytes(row[2]), row[1])

    def purge(self, older_than_s: float) -> int:
        """Forget completed entries older than `older_than_s` seconds; returns how many."""
        with self._lock:
            cur = self._exec(
                "DELETE FROM idempotency WHERE state = 'done' AND completed_at < ?",
                (self._clock() - older_than_s,),
            )
            return int(cur.rowcount)

    # ---- whole request ----------------------------------------------------------------------------------

    def run(
        self,
        scope: str,
        key: str,
        request_fingerprint: bytes,
        handler: Callable[[], StoredResponse],
        *,
        match_body: bool = True,
        wait_s: float = 30.0,
        on_wait: Callable[[], None] | None = None,
    ) -> Result:
        """begin → execute or replay, blocking while another caller holds the claim."""
        deadline = time.monotonic() + wait_s
        pause = 0.01
        while True:
            outcome = self.begin(scope, key, request_fingerprint, match_body=match_body)
            match outcome:
                case Execute(claim):
                    try:
                        response = handler()
                    except BaseException:
                        self.abandon(claim)
                        raise
                    return self.complete(claim, response)
                case Replay(response):
                    return Result(response, replayed=True)
                case Conflict(reason):
                    raise IdempotencyConflict(reason)
                case InProgress():
                    if on_wait is not None:
                        on_wait()
                    if time.monotonic() >= deadline:
                        raise StillInProgress(f"a request with key {key!r} is still being processed")
                    time.sleep(pause)
                    pause = min(pause * 2, 0.25)

    async def run_async(
        self,
        scope: str,
        key: str,
        request_fingerprint: bytes,
        handler: Callable[[], Awaitable[StoredResponse]],
        *,
        match_body: bool = True,
        wait_s: float = 30.0,
        on_wait: Callable[[], None] | None = None,
    ) -> Result:
        """`run` for aiohttp handlers; the SQLite steps run in a worker thread so a busy lock held by
        another process never stalls the event loop."""
        deadline = time.monotonic() + wait_s
        pause = 0.01
        while True:
            outcome = await asyncio.to_thread(
                self.begin, scope, key, request_fingerprint, match_body=match_body
            )
            match outcome:
                case Execute(claim):
                    try:
                        response = await handler()
                    except BaseException:
                        # Synchronously: awaiting here could be interrupted by a second cancellation.
                        self.abandon(claim)
                        raise
                    return await asyncio.to_thread(self.complete, claim, response)
                case Replay(response):
                    return Result(response, replayed=True)
                case Conflict(reason):
                    raise IdempotencyConflict(reason)
                case InProgress():
                    if on_wait is not None:
                        on_wait()
                    if time.monotonic() >= deadline:
                        raise StillInProgress(f"a request with key {key!r} is still being processed")
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.25)
