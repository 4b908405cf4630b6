"""The storage port on PostgreSQL (psycopg 3), for any number of backend nodes over one database.

Automerge changes commute, so `append_change` splits a record into its change chunks and inserts one row
per (document, change hash) with ON CONFLICT DO NOTHING: two nodes persisting the same change, or
different changes of one document at once, never conflict. A record that is not plain change chunks is
one row keyed by the hash of its bytes.

`put_snapshot` replaces a document's snapshot with the writer's own `save()`, and deletes only the rows
that snapshot is known to hold: rows this storage wrote or read (its document was loaded from them or
produced them). Rows another node wrote meanwhile stay, and an existing snapshot this storage never read
(another node's) is kept as a row rather than overwritten, so no node's compaction can drop another's
changes. `compactor.py` merges every row and snapshot of a document in the background.

Writes: `write` commits before it returns, or with write-behind goes through engine/store/writer.py on
its own connection (a dropped connection is retried for `outage_s`, then the writer stops: nothing is
acknowledged that was not committed). `transaction`, `claim_actor` and `claim_ride_owner` commit on the
owner's connection before they return.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from engine.crdt import split_changes
from engine.store import db
from engine.store.db import StoreError
from engine.store.port import ChangeRecord, Job, OwnerRow, RawSample, RideRow, Snapshot
from engine.store.postgres.compactor import DEFAULT_INTERVAL_S, Compactor
from engine.store.postgres.conn import StorageUnavailable, connect, record_key, translate
from engine.store.postgres.schema import migrate
from engine.store.writer import GroupObserver, StoreWriter

log = logging.getLogger(__name__)

DEFAULT_OUTAGE_S = 30.0


class _Known:
    """Per document, the row keys this storage wrote or read: what its own snapshots are known to hold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, set[bytes]] = {}

    def add(self, doc_id: str, keys: Iterable[bytes]) -> None:
        with self._lock:
            self._keys.setdefault(doc_id, set()).update(keys)

    def take(self, doc_id: str) -> set[bytes]:
        with self._lock:
            return set(self._keys.get(doc_id, ()))

    def reset(self, doc_id: str, keys: Iterable[bytes]) -> None:
        with self._lock:
            self._keys[doc_id] = set(keys)

    def forget(self, doc_id: str) -> None:
        with self._lock:
            self._keys.pop(doc_id, None)


class PostgresTx:
    """`StorageTx` over a psycopg cursor inside one transaction."""

    __slots__ = ("cur", "known")

    def __init__(self, cur: psycopg.Cursor[Any], known: _Known) -> None:
        self.cur = cur
        self.known = known

    def put_meta(self, key: str, value: str) -> None:
        self.cur.execute(
            "INSERT INTO meta VALUES(%s, %s) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def add_ride(self, ride_id: str, created: float, state: str, reason: str) -> None:
        self.cur.execute(
            "INSERT INTO rides VALUES(%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (ride_id, created, state, reason, created),
        )

    def set_sync_state(self, ride_id: str, state: str, reason: str, updated: float) -> None:
        self.cur.execute(
            "UPDATE rides SET sync_state=%s, sync_reason=%s, updated=%s WHERE ride_id=%s",
            (state, reason, updated, ride_id),
        )

    def add_doc(self, doc_id: str, ride_id: str, kind: str, device: str) -> None:
        self.cur.execute(
            "INSERT INTO docs VALUES(%s, %s, %s, %s) ON CONFLICT DO NOTHING", (doc_id, ride_id, kind, device)
        )

    def append_change(self, doc_id: str, data: bytes, heads: list[bytes]) -> None:
        packed = db.pack_heads(heads)
        chunks = split_changes(data) or [(record_key(data), data)]
        self.cur.executemany(
            "INSERT INTO changes(doc_id, hash, data, heads, crc) VALUES(%s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [(doc_id, key, chunk, packed, db.crc(doc_id, key, packed, chunk)) for key, chunk in chunks],
        )
        self.known.add(doc_id, (key for key, _ in chunks))

    def put_snapshot(self, doc_id: str, data: bytes, heads: list[bytes]) -> None:
        cur = self.cur
        # One snapshot writer per document at a time, on every node (the background compactor too).
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (doc_id,))
        known = self.known.take(doc_id)
        old = cur.execute("SELECT hash, data, heads FROM snapshots WHERE doc_id=%s", (doc_id,)).fetchone()
        if old is not None and bytes(old[0]) not in known:
            # Another node's snapshot, which this writer's document may lack: kept, as a row.
            old_data, old_heads = bytes(old[1]), bytes(old[2])
            key = record_key(old_data)
            cur.execute(
                "INSERT INTO changes(doc_id, hash, data, heads, crc) VALUES(%s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (doc_id, key, old_data, old_heads, db.crc(doc_id, key, old_heads, old_data)),
            )
        packed = db.pack_heads(heads)
        key = record_key(data)
        cur.execute(
            "INSERT INTO snapshots VALUES(%s, %s, %s, %s, %s) ON CONFLICT(doc_id) DO UPDATE SET "
            "hash=excluded.hash, data=excluded.data, heads=excluded.heads, crc=excluded.crc",
            (doc_id, key, data, packed, db.crc(doc_id, key, packed, data)),
        )
        cur.execute("DELETE FROM changes WHERE doc_id=%s AND hash = ANY(%s)", (doc_id, list(known)))
        self.known.reset(doc_id, [key])

    def log_samples(self, rows: Iterable[tuple[str, str, int, bytes]]) -> None:
        self.cur.executemany(
            "INSERT INTO raw_samples VALUES(%s, %s, %s, %s, %s, FALSE) ON CONFLICT DO NOTHING",
            [(r, d, s, data, db.crc(r, d, s, data)) for r, d, s, data in rows],
        )

    def mark_folded(self, ride_id: str, device: str, seqs: Iterable[int]) -> None:
        self.cur.execute(
            "UPDATE raw_samples SET folded=TRUE WHERE ride_id=%s AND device=%s AND seq = ANY(%s)",
            (ride_id, device, list(seqs)),
        )

    def prune_folded(self, ride_id: str) -> None:
        self.cur.execute("DELETE FROM raw_samples WHERE ride_id=%s AND folded", (ride_id,))

    def delete_ride(self, ride_id: str, doc_ids: Iterable[str]) -> None:
        ids = list(doc_ids)
        for table in ("snapshots", "changes", "peer_heads", "docs"):
            self.cur.execute(f"DELETE FROM {table} WHERE doc_id = ANY(%s)", (ids,))
        self.cur.execute("DELETE FROM raw_samples WHERE ride_id=%s", (ride_id,))
        self.cur.execute("DELETE FROM rides WHERE ride_id=%s", (ride_id,))
        for doc_id in ids:
            self.known.forget(doc_id)

    def delete_doc(self, doc_id: str) -> None:
        # Under the document's snapshot lock, so the background compactor never writes a snapshot of a
        # document deleted under it (it then finds no rows and leaves it alone).
        self.cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (doc_id,))
        for table in ("snapshots", "changes", "peer_heads", "docs"):
            self.cur.execute(f"DELETE FROM {table} WHERE doc_id=%s", (doc_id,))
        self.known.forget(doc_id)

    def set_peer_heads(self, doc_id: str, peer: str, heads: list[bytes], updated: float) -> None:
        self.cur.execute(
            "INSERT INTO peer_heads VALUES(%s, %s, %s, %s) ON CONFLICT(doc_id, peer) DO UPDATE SET "
            "heads=excluded.heads, updated=excluded.updated",
            (doc_id, peer, db.pack_heads(heads), updated),
        )

    def bind_actor(self, actor: bytes, device: str, role: str, bound: float) -> None:
        self.cur.execute(
            "INSERT INTO actors VALUES(%s, %s, %s, %s) ON CONFLICT DO NOTHING", (actor, device, role, bound)
        )

    def add_ride_owner(self, owner: OwnerRow) -> None:
        self.cur.execute(
            "INSERT INTO ride_owners VALUES(%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (owner.ride_id, owner.device, owner.rider, owner.class_id, owner.bound),
        )

    def update_ride_owner(self, ride_id: str, rider: str | None, class_id: str | None) -> None:
        self.cur.execute(
            "UPDATE ride_owners SET rider=%s, class_id=%s WHERE ride_id=%s", (rider, class_id, ride_id)
        )

    def claim_finalization(self, ride_id: str, by: str, at: float) -> bool:
        row = self.cur.execute(
            "INSERT INTO finalizations VALUES(%s, %s, %s) ON CONFLICT DO NOTHING RETURNING ride_id",
            (ride_id, by, at),
        ).fetchone()
        return row is not None


class PostgresSession:
    """The write-behind writer's own connection (engine/store/writer.py `GroupSession`)."""

    def __init__(self, url: str, known: _Known, outage_s: float) -> None:
        self.url = url
        self.known = known
        self.outage_s = outage_s
        self._conn: psycopg.Connection[Any] | None = connect(url)

    def commit_group(self, jobs: list[Job]) -> float:
        deadline = time.monotonic() + self.outage_s
        pause = 0.1
        while True:
            try:
                return self._commit(jobs)
            except StorageUnavailable as exc:
                # Every job is idempotent (inserts that keep the first row, updates that set values), so a
                # group whose COMMIT outcome is unknown is safe to run again. Acknowledgements wait.
                if time.monotonic() >= deadline:
                    raise
                log.warning("PostgreSQL unreachable; store writes wait", extra={"error": str(exc)})
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _commit(self, jobs: list[Job]) -> float:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url)
        conn = self._conn
        try:
            # Pipeline mode: a group's statements go out without waiting for each answer (one round trip
            # per group rather than per statement; a statement that reads waits for its own answer).
            with conn.pipeline(), conn.cursor() as cur:
                tx = PostgresTx(cur, self.known)
                for job in jobs:
                    job(tx)
            committing = time.perf_counter()
            conn.commit()
            return time.perf_counter() - committing
        except psycopg.Error as exc:
            self._drop()
            raise translate(exc) from None
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            conn.close()

    def close(self) -> None:
        self._drop()


class PostgresStorage:
    """`StoragePort` on one PostgreSQL database (`url`: postgresql://...). Migrates the schema on open
    (engine/store/postgres/schema.py); StorageUnavailable if the server cannot be reached."""

    def __init__(
        self,
        url: str,
        *,
        outage_s: float = DEFAULT_OUTAGE_S,
        compact_interval_s: float | None = DEFAULT_INTERVAL_S,
    ) -> None:
        self.url = url
        self.outage_s = outage_s
        self.compact_interval_s = compact_interval_s
        self._compactor: Compactor | None = None
        self.known = _Known()
        self._lock = threading.RLock()  # the owner's connection: reads and synchronous writes
        self._in_tx = False
        self.conn = connect(url)
        try:
            migrate(self.conn)
        except psycopg.Error as exc:
            self.conn.close()
            raise translate(exc) from None
        except BaseException:
            self.conn.close()
            raise
        self._writer: StoreWriter | None = None

    @property
    def writer(self) -> StoreWriter | None:
        return self._writer

    # -- writes -----------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[PostgresTx]:
        with self._lock:
            conn = self.conn
            self._in_tx = True
            try:
                with conn.cursor() as cur:
                    yield PostgresTx(cur, self.known)
                conn.commit()
            except psycopg.Error as exc:
                self._rollback()
                raise translate(exc) from None
            except BaseException:
                self._rollback()
                raise
            finally:
                self._in_tx = False

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except psycopg.Error:
            self._reconnect()

    def _reconnect(self) -> None:
        """After a dropped connection: a new one for the next call (this call's error stands)."""
        try:
            self.conn.close()
        finally:
            # On failure the next call tries again (a closed connection raises OperationalError there).
            with contextlib.suppress(StorageUnavailable):
                self.conn = connect(self.url)

    def write(self, job: Job) -> None:
        if self._writer is not None:
            self._writer.submit(job)
            return
        with self.transaction() as tx:
            job(tx)

    def start_write_behind(self, max_group: int, on_group: GroupObserver | None) -> None:
        if self._writer is None:
            session = PostgresSession(self.url, self.known, self.outage_s)
            self._writer = StoreWriter(max_group=max_group, on_group=on_group, session=session)
            # A serving node (write-behind) also merges every node's rows in the background.
            if self.compact_interval_s is not None:
                self._compactor = Compactor(self.url, interval_s=self.compact_interval_s)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    async def flushed(self) -> None:
        if self._writer is not None:
            await self._writer.flushed()

    def close(self) -> None:
        try:
            if self._compactor is not None:
                self._compactor.close()
            if self._writer is not None:
                self._writer.close()
        finally:
            with self._lock:
                self.conn.close()

    # -- claims (committed before they return; the first writer on any node wins) ----------------------

    def claim_actor(self, actor: bytes, device: str, role: str, bound: float) -> tuple[str, str]:
        row = self._claim(
            "INSERT INTO actors VALUES(%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING device, role",
            (actor, device, role, bound),
            "SELECT device, role FROM actors WHERE actor=%s",
            (actor,),
        )
        return str(row[0]), str(row[1])

    def claim_ride_owner(self, owner: OwnerRow) -> OwnerRow:
        row = self._claim(
            "INSERT INTO ride_owners VALUES(%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
            "RETURNING ride_id, device, rider, class_id, bound",
            (owner.ride_id, owner.device, owner.rider, owner.class_id, owner.bound),
            "SELECT ride_id, device, rider, class_id, bound FROM ride_owners WHERE ride_id=%s",
            (owner.ride_id,),
        )
        return OwnerRow(row[0], row[1], row[2], row[3], float(row[4]))

    def complete_ride_owner(self, owner: OwnerRow) -> None:
        # Committed before it returns, like the claims: this storage keeps nothing aside for queued writes.
        with self.transaction() as tx:
            tx.update_ride_owner(owner.ride_id, owner.rider, owner.class_id)

    def _claim(self, insert: str, args: tuple[Any, ...], select: str, key: tuple[Any, ...]) -> Any:
        with self.transaction() as tx:
            row = tx.cur.execute(insert, args).fetchone()
            if row is None:
                row = tx.cur.execute(select, key).fetchone()
        if row is None:  # the row was inserted and deleted in between: nothing deletes these tables
            raise StoreError("claim found no row")
        return row

    # -- reads ------------------------------------------------------------------------------------------

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                rows = self.conn.execute(sql, args).fetchall()
                if not self._in_tx:  # (a read inside `transaction()` is part of it)
                    self.conn.commit()  # end the read's transaction: the next read sees newer commits
            except psycopg.Error as exc:
                self._rollback()
                raise translate(exc) from None
        return rows

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self._rows("SELECT key, value FROM meta")}

    def docs(self, ride_id: str | None = None) -> list[tuple[str, str, str, str]]:
        if ride_id is not None:
            rows = self._rows(
                "SELECT doc_id, ride_id, kind, device FROM docs WHERE ride_id=%s ORDER BY doc_id", (ride_id,)
            )
        else:
            rows = self._rows("SELECT doc_id, ride_id, kind, device FROM docs ORDER BY doc_id")
        return [(a, b, c, d) for a, b, c, d in rows]

    def snapshot(self, doc_id: str) -> Snapshot | None:
        rows = self._rows("SELECT hash, data, heads, crc FROM snapshots WHERE doc_id=%s", (doc_id,))
        if not rows:
            return None
        key, data, heads, check = (bytes(rows[0][0]), bytes(rows[0][1]), bytes(rows[0][2]), rows[0][3])
        if check != db.crc(doc_id, key, heads, data):
            return Snapshot(data, [], intact=False)
        self.known.add(doc_id, [key])
        return Snapshot(data, db.unpack_heads(heads), intact=True)

    def change_records(self, doc_id: str) -> Iterator[ChangeRecord]:
        rows = self._rows(
            "SELECT seq, hash, data, heads, crc FROM changes WHERE doc_id=%s ORDER BY seq", (doc_id,)
        )
        good = []
        for seq, raw_key, raw_data, raw_heads, check in rows:
            key, data, heads = bytes(raw_key), bytes(raw_data), bytes(raw_heads)
            if check != db.crc(doc_id, key, heads, data) or not data:
                yield ChangeRecord(seq, data, [], intact=False)
            else:
                good.append(key)
                yield ChangeRecord(seq, data, db.unpack_heads(heads), intact=True)
        self.known.add(doc_id, good)

    def rides(self) -> list[RideRow]:
        rows = self._rows("SELECT ride_id, sync_state, sync_reason, updated FROM rides")
        return [RideRow(*row) for row in rows]

    def ride_ids(self, after: str | None, limit: int) -> list[str]:
        # COLLATE "C": code-point order, as Python sorts ride ids (a locale collation orders them otherwise).
        rows = self._rows(
            'SELECT ride_id FROM rides WHERE ride_id COLLATE "C" > %s ORDER BY ride_id COLLATE "C" LIMIT %s',
            (after or "", limit),
        )
        return [ride_id for (ride_id,) in rows]

    def ride(self, ride_id: str) -> RideRow | None:
        rows = self._rows(
            "SELECT ride_id, sync_state, sync_reason, updated FROM rides WHERE ride_id=%s", (ride_id,)
        )
        return RideRow(*rows[0]) if rows else None

    def sample_rides(self) -> set[str]:
        return {r for (r,) in self._rows("SELECT DISTINCT ride_id FROM raw_samples")}

    def raw_samples(self, ride_id: str) -> Iterator[RawSample]:
        rows = self._rows(
            "SELECT device, seq, data, crc, folded FROM raw_samples WHERE ride_id=%s ORDER BY seq, device",
            (ride_id,),
        )
        for device, seq, raw, check, folded in rows:
            data = bytes(raw)
            yield RawSample(device, seq, data, check == db.crc(ride_id, device, seq, data), bool(folded))

    def max_seq(self, ride_id: str, device: str) -> int | None:
        rows = self._rows(
            "SELECT MAX(seq) FROM raw_samples WHERE ride_id=%s AND device=%s", (ride_id, device)
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def peer_heads(self, doc_id: str, peer: str) -> list[bytes] | None:
        rows = self._rows("SELECT heads FROM peer_heads WHERE doc_id=%s AND peer=%s", (doc_id, peer))
        return db.unpack_heads(bytes(rows[0][0])) if rows else None

    def actor(self, actor: bytes) -> tuple[str, str] | None:
        rows = self._rows("SELECT device, role FROM actors WHERE actor=%s", (actor,))
        return (rows[0][0], rows[0][1]) if rows else None

    def ride_owner(self, ride_id: str) -> OwnerRow | None:
        rows = self._rows(
            "SELECT ride_id, device, rider, class_id, bound FROM ride_owners WHERE ride_id=%s", (ride_id,)
        )
        return OwnerRow(rows[0][0], rows[0][1], rows[0][2], rows[0][3], float(rows[0][4])) if rows else None

    def class_owners(self, class_id: str) -> list[OwnerRow]:
        rows = self._rows(
            "SELECT ride_id, device, rider, class_id, bound FROM ride_owners WHERE class_id=%s "
            'ORDER BY ride_id COLLATE "C"',
            (class_id,),
        )
        return [OwnerRow(r, d, rider, c, float(b)) for r, d, rider, c, b in rows]

    def usage(self) -> tuple[int, int]:
        # A client cannot see the server's free disk: PostgreSQL reports a full disk as an error on write
        # (StorageFull), and retention's free-space watch has nothing to act on here.
        rows = self._rows("SELECT pg_database_size(current_database())")
        return int(rows[0][0]), _UNKNOWN_FREE


_UNKNOWN_FREE = 1 << 62


__all__ = ["PostgresStorage", "PostgresTx"]
