"""The idempotency ledger in PostgreSQL: one ledger for every backend node over one database, so a retried
`POST /v1/rides/{id}/end` answered by another node replays the first node's response.

Same steps and rules as the SQLite `Ledger` (idempotency.py); only the database differs. The table is
created by the store's migrations (engine/store/postgres/schema.py). Each claim step runs in a transaction
holding a transaction-scoped advisory lock on (scope, key): two nodes claiming one key at once are
serialised, the second sees the first's row.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from engine.events.idempotency import DEFAULT_LEASE_S, Ledger, LedgerUnavailable, LedgerUnreadable
from engine.store.db import StoreError
from engine.store.postgres import StorageUnavailable, connect, migrate


class PostgresLedger(Ledger):
    def __init__(
        self, url: str, *, lease_s: float = DEFAULT_LEASE_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = url  # type: ignore[assignment]  # named in errors; a URL here
        self.lease_s = lease_s
        self._clock = clock
        self._lock = threading.Lock()
        try:
            conn = connect(url)
        except StorageUnavailable as exc:
            raise LedgerUnreadable(f"the idempotency ledger's database: {exc}") from None
        try:
            migrate(conn)
        except (psycopg.Error, StoreError) as exc:
            conn.close()
            raise LedgerUnreadable(f"the idempotency ledger's database: {exc}") from None
        conn.autocommit = True  # single statements commit alone; the claim steps open a transaction
        self._conn = conn
        self._url = url

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, a new one after the server dropped the old (a restart, a failover)."""
        if self._conn.closed:
            try:
                conn = connect(self._url)
            except StorageUnavailable as exc:
                raise LedgerUnavailable(f"the idempotency ledger's database: {exc}") from None
            conn.autocommit = True
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, scope: str, key: str) -> Iterator[None]:
        with _unavailable(), self._live().transaction():
            lock = f"{scope}\n{key}"  # (PostgreSQL text cannot hold NUL; keys are printable)
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))", (lock,))
            yield

    def _exec(self, sql: str, args: tuple[object, ...]) -> Any:
        with _unavailable():
            return self._live().execute(sql.replace("?", "%s"), args)


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """psycopg's errors as the ledger's: a lost connection is 503 (retry later), nothing stored."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise LedgerUnavailable(f"the idempotency ledger's database is unreachable: {exc}") from None
