"""The PostgreSQL schema: numbered migration steps and the `schema_version` table that says which ran.

`migrate(conn)` runs, in one transaction under an advisory lock (so several nodes starting at once migrate
once), every step newer than the database's version, and refuses a database whose version is newer than
this code knows (`SchemaTooNew`: an older node must not write into a newer layout). A new step is appended
to `MIGRATIONS`; a released step is never edited.

Layout (the port's tables, plus what several nodes over one database need):
- `changes`: Automerge changes as append-only rows keyed by (document, change hash): concurrent writers
  insert with ON CONFLICT DO NOTHING and never conflict. `seq` is the insertion order.
- `snapshots`: one compacted state per document, keyed by the hash of its bytes.
- `actors`, `ride_owners`: one row per actor / ride, a primary key each: the first binding wins on every
  node. `finalizations`: one row per finalized ride (the conditional write that makes it exactly once).
- `idempotency`: the HTTP idempotency ledger, shared by every node.
Every blob row carries a CRC32 over its identity and content (engine/store/db.py `crc`).
"""

from __future__ import annotations

from typing import Any

from engine.store.db import StoreError

SCHEMA_VERSION_TABLE = "schema_version"
# pg_advisory_xact_lock key for migrations (any constant unique to ridesync's schema).
_MIGRATION_LOCK = 0x72696465_73796E63 & 0x7FFFFFFFFFFFFFFF

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "the storage port, actors, ride owners, finalizations, idempotency ledger",
        """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE rides(
            ride_id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, sync_state TEXT NOT NULL,
            sync_reason TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL);
        CREATE TABLE docs(
            doc_id TEXT PRIMARY KEY, ride_id TEXT NOT NULL, kind TEXT NOT NULL, device TEXT NOT NULL);
        CREATE INDEX docs_ride ON docs(ride_id);
        CREATE TABLE snapshots(
            doc_id TEXT PRIMARY KEY, hash BYTEA NOT NULL, data BYTEA NOT NULL, heads BYTEA NOT NULL,
            crc BIGINT NOT NULL);
        CREATE TABLE changes(
            doc_id TEXT NOT NULL, hash BYTEA NOT NULL, seq BIGSERIAL NOT NULL, data BYTEA NOT NULL,
            heads BYTEA NOT NULL, crc BIGINT NOT NULL, PRIMARY KEY(doc_id, hash));
        CREATE INDEX changes_doc_seq ON changes(doc_id, seq);
        CREATE TABLE raw_samples(
            ride_id TEXT NOT NULL, device TEXT NOT NULL, seq BIGINT NOT NULL, data BYTEA NOT NULL,
            crc BIGINT NOT NULL, folded BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY(ride_id, device, seq));
        CREATE TABLE actors(
            actor BYTEA PRIMARY KEY, device TEXT NOT NULL, role TEXT NOT NULL,
            bound DOUBLE PRECISION NOT NULL);
        CREATE TABLE ride_owners(
            ride_id TEXT PRIMARY KEY, device TEXT NOT NULL, rider TEXT, class_id TEXT,
            bound DOUBLE PRECISION NOT NULL);
        CREATE TABLE peer_heads(
            doc_id TEXT NOT NULL, peer TEXT NOT NULL, heads BYTEA NOT NULL,
            updated DOUBLE PRECISION NOT NULL, PRIMARY KEY(doc_id, peer));
        CREATE TABLE finalizations(
            ride_id TEXT PRIMARY KEY, by_actor TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
        CREATE TABLE idempotency(
            scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint BYTEA,
            state TEXT NOT NULL CHECK (state IN ('pending', 'done')), owner TEXT,
            claimed_at DOUBLE PRECISION NOT NULL, status INTEGER, content_type TEXT, body BYTEA,
            completed_at DOUBLE PRECISION, PRIMARY KEY(scope, key));
        """,
    ),
    (
        2,
        "ride owners by class (the dashboard's results page of a class)",
        "CREATE INDEX ride_owners_class ON ride_owners(class_id);",
    ),
]
LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(StoreError):
    """The database was migrated by a newer ridesync than this one."""


def migrate(conn: Any) -> int:
    """Bring the database to `LATEST` (a psycopg connection, not in a transaction); returns the version it
    was at before (0 for an empty database)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE}("
            "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
            "applied TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {SCHEMA_VERSION_TABLE}").fetchone()
        current = int(row[0])
        if current > LATEST:
            raise SchemaTooNew(
                f"the database's schema is version {current}, newer than this ridesync knows ({LATEST}): "
                "upgrade ridesync on this node"
            )
        for version, description, sql in MIGRATIONS:
            if version > current:
                conn.execute(sql)
                conn.execute(
                    f"INSERT INTO {SCHEMA_VERSION_TABLE}(version, description) VALUES(%s, %s)",
                    (version, description),
                )
    return current
