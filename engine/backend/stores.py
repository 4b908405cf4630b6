"""The backend's durable store and idempotency ledger, on the store `--store` names
(engine/store/location.py): both in SQLite files in one directory (the embedded default), or both in one
PostgreSQL database shared by every backend node."""

from __future__ import annotations

from pathlib import Path

from engine.events.idempotency import Ledger
from engine.ride.schema import Role
from engine.store import ReplicaStore, StoreError
from engine.store.location import StoreLocation

LEDGER_FILE = "idempotency.sqlite3"


def open_stores(location: StoreLocation, *, device_id: str, sqlite_dir: Path) -> tuple[ReplicaStore, Ledger]:
    """(replica store, ledger) on `location`; `sqlite_dir` is where an embedded store without a path
    lives. Raises StoreError (or LedgerUnreadable) naming the file or the redacted URL."""
    if location.backend == "postgresql":
        assert location.url is not None
        try:
            from engine.events.idempotency_pg import PostgresLedger
            from engine.store.postgres import PostgresStorage
        except ImportError:
            raise StoreError(
                "--store postgresql:// needs psycopg 3: install ridesync with the `postgres` extra"
            ) from None
        storage = PostgresStorage(location.url)
        store = ReplicaStore(sqlite_dir, device_id=device_id, role=Role.BACKEND, storage=storage)
        try:
            return store, PostgresLedger(location.url)
        except BaseException:
            store.close()
            raise
    directory = location.path if location.path is not None else sqlite_dir
    directory.mkdir(parents=True, exist_ok=True)
    store = ReplicaStore(directory, device_id=device_id, role=Role.BACKEND)
    try:
        return store, Ledger(directory / LEDGER_FILE)
    except BaseException:
        store.close()
        raise
