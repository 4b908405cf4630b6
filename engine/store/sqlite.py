"""The storage port on one SQLite file (`db.py`: schema, connection, checksums; `writer.py`: write-behind).

Every blob row carries a CRC32 over its identity and content; a row that fails it is returned with
`intact=False`, never raised, so recovery skips and reports it.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from engine.store import db
from engine.store.db import StorageFull
from engine.store.port import ChangeRecord, Job, OwnerRow, RawSample, RideRow, Snapshot
from engine.store.writer import GroupObserver, StoreWriter

K = TypeVar("K")
V = TypeVar("V")


class SqliteTx:
    """`StorageTx` over a cursor inside BEGIN IMMEDIATE ... COMMIT."""

    __slots__ = ("cur",)

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur

    def put_meta(self, key: str, value: str) -> None:
        self.cur.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))

    def add_ride(self, ride_id: str, created: float, state: str, reason: str) -> None:
        row = (ride_id, created, state, reason, created)
        self.cur.execute("INSERT OR IGNORE INTO rides VALUES(?, ?, ?, ?, ?)", row)

    def set_sync_state(self, ride_id: str, state: str, reason: str, updated: float) -> None:
        row = (state, reason, updated, ride_id)
        self.cur.execute("UPDATE rides SET sync_state=?, sync_reason=?, updated=? WHERE ride_id=?", row)

    def add_doc(self, doc_id: str, ride_id: str, kind: str, device: str) -> None:
        self.cur.execute("INSERT OR IGNORE INTO docs VALUES(?, ?, ?, ?)", (doc_id, ride_id, kind, device))

    def append_change(self, doc_id: str, data: bytes, heads: list[bytes]) -> None:
        packed = db.pack_heads(heads)
        cur = self.cur
        cur.execute(
            "INSERT INTO changes(doc_id, data, heads, crc) VALUES(?, ?, ?, 0)", (doc_id, data, packed)
        )
        rec_id = cur.lastrowid
        assert rec_id is not None
        cur.execute("UPDATE changes SET crc=? WHERE id=?", (db.crc(doc_id, rec_id, packed, data), rec_id))

    def put_snapshot(self, doc_id: str, data: bytes, heads: list[bytes]) -> None:
        packed = db.pack_heads(heads)
        cur = self.cur
        # Inside the transaction: every change record queued before this snapshot is in the table.
        upto = cur.execute("SELECT COALESCE(MAX(id), 0) FROM changes WHERE doc_id=?", (doc_id,)).fetchone()[0]
        cur.execute(
            "INSERT OR REPLACE INTO snapshots VALUES(?, ?, ?, ?, ?)",
            (doc_id, data, packed, upto, db.crc(doc_id, packed, upto, data)),
        )
        cur.execute("DELETE FROM changes WHERE doc_id=? AND id<=?", (doc_id, upto))

    def log_samples(self, rows: Iterable[tuple[str, str, int, bytes]]) -> None:
        self.cur.executemany(
            "INSERT OR IGNORE INTO raw_samples VALUES(?, ?, ?, ?, ?, 0)",
            [(r, d, s, data, db.crc(r, d, s, data)) for r, d, s, data in rows],
        )

    def mark_folded(self, ride_id: str, device: str, seqs: Iterable[int]) -> None:
        self.cur.executemany(
            "UPDATE raw_samples SET folded=1 WHERE ride_id=? AND device=? AND seq=?",
            [(ride_id, device, s) for s in seqs],
        )

    def prune_folded(self, ride_id: str) -> None:
        self.cur.execute("DELETE FROM raw_samples WHERE ride_id=? AND folded=1", (ride_id,))

    def delete_ride(self, ride_id: str, doc_ids: Iterable[str]) -> None:
        cur = self.cur
        for doc_id in doc_ids:
            for table in ("snapshots", "changes", "peer_heads", "docs"):
                cur.execute(f"DELETE FROM {table} WHERE doc_id=?", (doc_id,))
        cur.execute("DELETE FROM raw_samples WHERE ride_id=?", (ride_id,))
        cur.execute("DELETE FROM rides WHERE ride_id=?", (ride_id,))

    def delete_doc(self, doc_id: str) -> None:
        for table in ("snapshots", "changes", "peer_heads", "docs"):
            self.cur.execute(f"DELETE FROM {table} WHERE doc_id=?", (doc_id,))

    def set_peer_heads(self, doc_id: str, peer: str, heads: list[bytes], updated: float) -> None:
        row = (doc_id, peer, db.pack_heads(heads), updated)
        self.cur.execute("INSERT OR REPLACE INTO peer_heads VALUES(?, ?, ?, ?)", row)

    def bind_actor(self, actor: bytes, device: str, role: str, bound: float) -> None:
        self.cur.execute("INSERT OR IGNORE INTO actors VALUES(?, ?, ?, ?)", (actor, device, role, bound))

    def add_ride_owner(self, owner: OwnerRow) -> None:
        row = (owner.ride_id, owner.device, owner.rider, owner.class_id, owner.bound)
        self.cur.execute("INSERT OR IGNORE INTO ride_owners VALUES(?, ?, ?, ?, ?)", row)

    def update_ride_owner(self, ride_id: str, rider: str | None, class_id: str | None) -> None:
        self.cur.execute(
            "UPDATE ride_owners SET rider=?, class_id=? WHERE ride_id=?", (rider, class_id, ride_id)
        )

    def claim_finalization(self, ride_id: str, by: str, at: float) -> bool:
        self.cur.execute("INSERT OR IGNORE INTO finalizations VALUES(?, ?, ?)", (ride_id, by, at))
        return self.cur.rowcount == 1


class _Queued(Generic[K, V]):
    """Claims queued for the write-behind thread and not committed yet, each with its write's place in
    the queue: the file does not have them yet, so reads answer from here. Kept in queue order, and each
    dropped once the thread committed its write, so this holds only what is in flight."""

    def __init__(self) -> None:
        self._items: dict[K, tuple[int, V]] = {}

    def add(self, key: K, position: int, value: V) -> None:
        if position:  # 0: written synchronously, the file has it
            self._items.pop(key, None)  # re-added at the end, so the dict stays in queue order
            self._items[key] = (position, value)

    def get(self, key: K, committed: int | None) -> V | None:
        self._forget(committed)
        item = self._items.get(key)
        return None if item is None else item[1]

    def values(self, committed: int | None) -> list[V]:
        self._forget(committed)
        return [value for _, value in self._items.values()]

    def __len__(self) -> int:
        return len(self._items)

    def _forget(self, committed: int | None) -> None:
        while self._items:
            key, (position, _) = next(iter(self._items.items()))
            if committed is not None and position > committed:
                return
            del self._items[key]


class SqliteStorage:
    """`StoragePort` on `data_dir/ridesync.sqlite3` (WAL, synchronous=FULL). Raises StoreCorrupt for a file
    that is not a readable store."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.conn = db.connect(self.data_dir)
        self._writer: StoreWriter | None = None
        # Claims queued for the write-behind thread and not committed yet, with the queue position of their
        # write: the file does not have them yet, so reads answer from here. Dropped once committed.
        self._actors: _Queued[bytes, tuple[str, str]] = _Queued()
        self._owners: _Queued[str, OwnerRow] = _Queued()

    @property
    def writer(self) -> StoreWriter | None:
        return self._writer

    # -- writes -----------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[SqliteTx]:
        cur = self.conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTx(cur)
            except BaseException:
                if self.conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self.conn.in_transaction:
                cur.execute("ROLLBACK")
            if "full" in str(exc).lower():
                raise StorageFull(f"{self.data_dir}: {exc}") from None
            raise

    def write(self, job: Job) -> None:
        self._write(job)

    def _write(self, job: Job) -> int:
        """The job's place in the write-behind queue (0: committed before this returned)."""
        if self._writer is not None:
            return self._writer.submit(lambda cur: job(SqliteTx(cur)))
        with self.transaction() as tx:
            job(tx)
        return 0

    def start_write_behind(self, max_group: int, on_group: GroupObserver | None) -> None:
        if self._writer is None:
            self._writer = StoreWriter(self.data_dir, max_group=max_group, on_group=on_group)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    async def flushed(self) -> None:
        if self._writer is not None:
            await self._writer.flushed()

    def close(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self.conn.close()

    # -- claims ---------------------------------------------------------------------------------------------
    # One process owns a SQLite file (`ridesync serve` locks its data dir), so a claim is decided here: the
    # binding this storage claimed or the file holds, else the write (queued with write-behind, committed
    # before anything is acknowledged). Claims are remembered because the file lags behind queued writes.

    def claim_actor(self, actor: bytes, device: str, role: str, bound: float) -> tuple[str, str]:
        held = self.actor(actor)
        if held is None:
            held = (device, role)
            self._actors.add(actor, self._write(lambda tx: tx.bind_actor(actor, device, role, bound)), held)
        return held

    def claim_ride_owner(self, owner: OwnerRow) -> OwnerRow:
        held = self.ride_owner(owner.ride_id)
        if held is None:
            held = owner
            self._owners.add(owner.ride_id, self._write(lambda tx: tx.add_ride_owner(owner)), held)
        return held

    def complete_ride_owner(self, owner: OwnerRow) -> None:
        position = self._write(lambda tx: tx.update_ride_owner(owner.ride_id, owner.rider, owner.class_id))
        self._owners.add(owner.ride_id, position, owner)

    def claims_in_flight(self) -> int:
        """Claims whose write the write-behind thread has not committed yet (kept in memory until then)."""
        done = self._done()
        return len(self._actors.values(done)) + len(self._owners.values(done))

    def _done(self) -> int | None:
        return self._writer.committed if self._writer is not None else None

    # -- reads ------------------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def docs(self, ride_id: str | None = None) -> list[tuple[str, str, str, str]]:
        if ride_id is not None:
            return self.conn.execute(
                "SELECT doc_id, ride_id, kind, device FROM docs WHERE ride_id=? ORDER BY doc_id", (ride_id,)
            ).fetchall()
        return self.conn.execute("SELECT doc_id, ride_id, kind, device FROM docs ORDER BY doc_id").fetchall()

    def snapshot(self, doc_id: str) -> Snapshot | None:
        row = self.conn.execute(
            "SELECT data, heads, upto, crc FROM snapshots WHERE doc_id=?", (doc_id,)
        ).fetchone()
        if row is None:
            return None
        data, heads, upto, check = row
        if check != db.crc(doc_id, heads, upto, data):
            return Snapshot(data, [], intact=False)
        return Snapshot(data, db.unpack_heads(heads), intact=True)

    def change_records(self, doc_id: str) -> Iterator[ChangeRecord]:
        for rec_id, data, heads, check in self.conn.execute(
            "SELECT id, data, heads, crc FROM changes WHERE doc_id=? ORDER BY id", (doc_id,)
        ):
            if check != db.crc(doc_id, rec_id, heads, data) or not data:
                yield ChangeRecord(rec_id, data, [], intact=False)
            else:
                yield ChangeRecord(rec_id, data, db.unpack_heads(heads), intact=True)

    def rides(self) -> list[RideRow]:
        rows = self.conn.execute("SELECT ride_id, sync_state, sync_reason, updated FROM rides").fetchall()
        return [RideRow(*row) for row in rows]

    def ride_ids(self, after: str | None, limit: int) -> list[str]:
        # The primary key's index serves both the range and the order (SQLite's BINARY is code-point order).
        rows = self.conn.execute(
            "SELECT ride_id FROM rides WHERE ride_id > ? ORDER BY ride_id LIMIT ?", (after or "", limit)
        ).fetchall()
        return [ride_id for (ride_id,) in rows]

    def ride(self, ride_id: str) -> RideRow | None:
        row = self.conn.execute(
            "SELECT ride_id, sync_state, sync_reason, updated FROM rides WHERE ride_id=?", (ride_id,)
        ).fetchone()
        return None if row is None else RideRow(*row)

    def sample_rides(self) -> set[str]:
        return {r for (r,) in self.conn.execute("SELECT DISTINCT ride_id FROM raw_samples")}

    def raw_samples(self, ride_id: str) -> Iterator[RawSample]:
        for device, seq, data, check, folded in self.conn.execute(
            "SELECT device, seq, data, crc, folded FROM raw_samples WHERE ride_id=? ORDER BY seq", (ride_id,)
        ):
            yield RawSample(device, seq, data, check == db.crc(ride_id, device, seq, data), bool(folded))

    def max_seq(self, ride_id: str, device: str) -> int | None:
        row = self.conn.execute(
            "SELECT MAX(seq) FROM raw_samples WHERE ride_id=? AND device=?", (ride_id, device)
        ).fetchone()
        return row[0] if row and isinstance(row[0], int) else None

    def peer_heads(self, doc_id: str, peer: str) -> list[bytes] | None:
        row = self.conn.execute(
            "SELECT heads FROM peer_heads WHERE doc_id=? AND peer=?", (doc_id, peer)
        ).fetchone()
        return db.unpack_heads(row[0]) if row else None

    def actor(self, actor: bytes) -> tuple[str, str] | None:
        pending = self._actors.get(actor, self._done())
        if pending is not None:
            return pending
        row = self.conn.execute("SELECT device, role FROM actors WHERE actor=?", (actor,)).fetchone()
        return None if row is None else (row[0], row[1])

    def ride_owner(self, ride_id: str) -> OwnerRow | None:
        pending = self._owners.get(ride_id, self._done())
        if pending is not None:
            return pending
        for r, d, rider, c, b in self.conn.execute(
            "SELECT ride_id, device, rider, class_id, bound FROM ride_owners WHERE ride_id=?", (ride_id,)
        ):
            return OwnerRow(r, d, rider, c, float(b))
        return None

    def class_owners(self, class_id: str) -> list[OwnerRow]:
        rows = self.conn.execute(
            "SELECT ride_id, device, rider, class_id, bound FROM ride_owners WHERE class_id=?", (class_id,)
        )
        owners = {r: OwnerRow(r, d, rider, c, float(b)) for r, d, rider, c, b in rows}
        for pending in self._owners.values(self._done()):
            if pending.class_id == class_id:
                owners[pending.ride_id] = pending
            elif owners.get(pending.ride_id) is not None:
                del owners[pending.ride_id]
        return [owners[r] for r in sorted(owners)]

    def usage(self) -> tuple[int, int]:
        size = sum(p.stat().st_size for p in self.data_dir.glob(db.DB_NAME + "*") if p.is_file())
        return size, shutil.disk_usage(self.data_dir).free


__all__ = ["SqliteStorage", "SqliteTx"]
