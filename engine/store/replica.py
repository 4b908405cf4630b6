"""A replica's durable store: its ride documents, the raw sample log, and per-ride sync bookkeeping.

Write path of a sample (DESIGN §1.1, §3):
1. `append_sample` writes the packed record to `raw_samples` and commits (fsync, synchronous=FULL) before
   returning: from then on it survives kill -9 and power cuts. Only the sample in flight can be lost.
2. `fold` (every `fold_interval_s`, or `max_batch` samples) writes the pending samples into the device's
   own document as one Automerge change, and in the same SQLite transaction stores that change as a
   checksummed record and marks the raw rows folded.
3. Recovery on open replays every raw row whose (device, seq) the document does not hold, so it is
   idempotent whatever point the crash hit. Raw rows stay until the ride is reconciled and compacted, so
   a corrupt change record costs nothing that the raw log still has.

Any Automerge panic tears the in-memory replica down (the poisoned document goes to engine.crdt's
graveyard), reloads everything from disk under a fresh actor id, and re-raises; nothing from the
poisoned document was persisted.
"""

from __future__ import annotations

import enum
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.crdt import ChangeInfo, CrdtDecodeError, CrdtDoc, CrdtPanic, SyncSession, new_actor_id
from engine.ride import documents, policy, schema
from engine.ride.model import BackendDoc, DeviceDoc, RideDocs, SharedDoc
from engine.ride.samples import Sample, SampleDecodeError, decode_record, encode_record
from engine.ride.schema import DocKind, DocRef, Phase, Role
from engine.store import db
from engine.store.db import StoreCorrupt, StoreError
from engine.store.gate import Backlog, GatedSync
from engine.store.writer import GroupObserver, StoreWriter

log = logging.getLogger(__name__)

DEFAULT_FOLD_INTERVAL_S = 10.0
DEFAULT_MAX_BATCH = 100
DEFAULT_COMPACT_EVERY = 256
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024


class SyncState(enum.StrEnum):
    SYNCING = "syncing"
    FAILED = "failed"
    RECONCILED = "reconciled"


class RideNotEvictable(StoreError):
    """Eviction refused: the ride is not finalized and reconciled, or has unfolded samples."""


class UnknownRide(StoreError):
    pass


class StorageFull(StoreError):
    """SQLite could not write: the disk (or the database's page limit) is full."""


@dataclass(frozen=True, slots=True)
class SyncStatus:
    ride_id: str
    state: SyncState
    reason: str
    updated: float

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "updated": self.updated}


@dataclass(frozen=True, slots=True)
class StorageStatus:
    db_bytes: int
    free_bytes: int
    min_free_bytes: int
    unlogged_samples: int = 0

    @property
    def low(self) -> bool:
        return self.free_bytes < self.min_free_bytes or self.unlogged_samples > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "db_bytes": self.db_bytes,
            "free_bytes": self.free_bytes,
            "low": self.low,
            "unlogged_samples": self.unlogged_samples,
        }


@dataclass(slots=True)
class RecoveryReport:
    """What opening the store found. `problems` lists every skipped record, in words."""

    docs_loaded: int = 0
    records_skipped: int = 0
    raw_replayed: int = 0
    raw_skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        log.error("store recovery problem", extra={"problem": text})


@dataclass(frozen=True, slots=True)
class RideOwner:
    """Who owns a ride (kept by the backend; engine/backend/README.md, "Ride owners"): the bike whose first
    sync started it, the rider its token named (an app with a token for the same rider may write the ride
    too) and the class the ride is in. The binding is trust on first use, like an actor's; `rider` and
    `class_id` are filled in once, by the owner, and never change afterwards."""

    ride_id: str
    device: str
    rider: str | None = None
    class_id: str | None = None
    bound: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "rider": self.rider, "class": self.class_id, "bound": self.bound}


@dataclass(slots=True)
class _OpenDoc:
    ref: DocRef
    doc: CrdtDoc
    persisted: list[bytes]
    records: int = 0
    degraded: bool = False
    # The last full decode and the heads it was made at: views re-decode only documents that changed.
    decoded: tuple[tuple[bytes, ...], DeviceDoc | BackendDoc | SharedDoc] | None = None

    def decode(self) -> DeviceDoc | BackendDoc | SharedDoc:
        heads = tuple(self.doc.heads())
        if self.decoded is None or self.decoded[0] != heads:
            self.decoded = (heads, documents.decode(self.doc, self.ref))
        return self.decoded[1]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Finalized, reconciled rides are compacted at once and evicted `keep_finalized_s` after their
    last update. Unsynced rides are never evicted, whatever the disk says."""

    keep_finalized_s: float = 7 * 24 * 3600.0


class ReplicaStore:
    """One replica (bike, app or backend) on one SQLite file in `data_dir`. Not thread-safe: call it from
    one thread. By default every write commits before the call returns. `start_write_behind()` (the
    backend) hands commits to a writer thread instead (engine/store/writer.py): then await `flushed()`
    before acknowledging anything."""

    def __init__(
        self,
        data_dir: Path,
        *,
        device_id: str,
        role: Role,
        fold_interval_s: float = DEFAULT_FOLD_INTERVAL_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        compact_every: int = DEFAULT_COMPACT_EVERY,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.device_id = schema.check_device_id(device_id)
        self.role = Role(role)
        self.fold_interval_s = fold_interval_s
        self.max_batch = max_batch
        self.compact_every = compact_every
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._conn = db.connect(self.data_dir)
        self._docs: dict[str, _OpenDoc] = {}
        # The same entries by ride: per-message lookups (phase, views) must not scan every ride held.
        self._by_ride: dict[str, dict[str, _OpenDoc]] = {}
        self._phases: dict[str, tuple[tuple[tuple[str, tuple[bytes, ...]], ...], Phase]] = {}
        self._seqs: dict[str, set[int]] = {}
        self._pending: dict[str, dict[int, Sample]] = {}
        self._unlogged: dict[str, list[tuple[str, str, int, bytes, int]]] = {}
        self._last_fold: dict[str, float] = {}
        self._top: dict[str, int] = {}  # highest seq this device recorded per ride, once known
        self._low_logged = 0.0
        self._writer: StoreWriter | None = None
        # What this process wrote, so reads never depend on whether the writer thread has committed yet.
        self._known_rides: set[str] = set()
        self._status: dict[str, SyncStatus] = {}
        self._actors: dict[bytes, tuple[str, Role]] = {}
        # Every ride owner, loaded at open: the backend asks on every sync message and HTTP write.
        self._owners: dict[str, RideOwner] = {}
        self._acked: dict[tuple[str, str], list[bytes]] = {}
        self.actor = new_actor_id(self.device_id)
        self.recovery = RecoveryReport()
        try:
            self._check_identity()
            self.bind_actor(self.actor, self.device_id, self.role)
            self._load_owners()
            self._load_all()
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            # Anything unreadable that per-row checks did not catch: the file is left as found.
            self._conn.close()
            raise StoreCorrupt(f"{self.data_dir / db.DB_NAME} is damaged: {exc}") from None
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._conn.close()

    def start_write_behind(self, max_group: int = 2000, on_group: GroupObserver | None = None) -> None:
        """From now on, commits happen on a writer thread in groups (engine/store/writer.py). Every method
        keeps working from the owner's thread and reads what it wrote; only durability is deferred: await
        `flushed()` (or call `flush()`) before acknowledging anything to anyone."""
        if self._writer is None:
            self._writer = StoreWriter(self.data_dir, max_group=max_group, on_group=on_group)

    @property
    def writer(self) -> StoreWriter | None:
        return self._writer

    async def flushed(self) -> None:
        """Return once every write made so far is committed (at once without write-behind)."""
        if self._writer is not None:
            await self._writer.flushed()

    def flush(self) -> None:
        """Blocking `flushed()`."""
        if self._writer is not None:
            self._writer.flush()

    def _write(self, job: Callable[[sqlite3.Cursor], object]) -> None:
        """Run SQL writes in a transaction: now (committed on return), or queued for the writer thread."""
        if self._writer is not None:
            self._writer.submit(job)
            return
        with self._tx() as cur:
            job(cur)

    def __enter__(self) -> ReplicaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reload(self) -> None:
        """Tear down every in-memory document and load the replica again from disk, under a fresh actor.

        Used after an Automerge panic: the poisoned document stays in engine.crdt's graveyard."""
        self.flush()  # loading reads the file: it must hold everything written so far
        self._docs.clear()
        self._by_ride.clear()
        self._phases.clear()
        self._seqs.clear()
        self._pending.clear()
        self._top.clear()
        self.actor = new_actor_id(self.device_id)
        self.bind_actor(self.actor, self.device_id, self.role)
        self.recovery = RecoveryReport()
        self._load_all()

    def _check_identity(self) -> None:
        rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if "device_id" not in rows:
            with self._tx() as cur:
                cur.execute("INSERT INTO meta VALUES('device_id', ?)", (self.device_id,))
                cur.execute("INSERT INTO meta VALUES('role', ?)", (self.role.value,))
        elif rows["device_id"] != self.device_id or rows.get("role") != self.role.value:
            raise StoreError(
                f"{self.data_dir} belongs to {rows.get('role')} {rows['device_id']}, "
                f"not {self.role.value} {self.device_id}"
            )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self._conn.in_transaction:
                cur.execute("ROLLBACK")
            if "full" in str(exc).lower():
                raise StorageFull(f"{self.data_dir}: {exc}") from None
            raise

    @contextmanager
    def _crdt_guard(self) -> Iterator[None]:
        try:
            yield
        except CrdtPanic:
            log.critical("automerge panicked; reloading the replica from disk")
            self.reload()
            raise

    # -- loading --------------------------------------------------------------------------------------

    def _load_all(self) -> None:
        rows = self._conn.execute("SELECT doc_id, ride_id, kind, device FROM docs ORDER BY doc_id").fetchall()
        for doc_id, ride_id, kind, device in rows:
            try:
                ref = DocRef(schema.check_ride_id(ride_id), DocKind(kind), device)
            except (ValueError, TypeError):
                self.recovery.problem(f"doc {doc_id!r}: unreadable ride/kind/device; skipped")
                continue
            if ref.doc_id != doc_id:
                self.recovery.problem(f"doc {doc_id}: id does not match its ride/kind/device; skipped")
                continue
            self._add_entry(self._load_doc(ref))
            self.recovery.docs_loaded += 1
        # Rides are found wherever they left a trace, so a damaged `rides` row cannot hide unfolded samples.
        listed = {r for (r,) in self._conn.execute("SELECT ride_id FROM rides")}
        self._known_rides = set(listed)
        traced = {r for (r,) in self._conn.execute("SELECT DISTINCT ride_id FROM raw_samples")}
        traced |= {e.ref.ride_id for e in self._docs.values()}
        for ride_id in sorted(listed | traced):
            try:
                schema.check_ride_id(ride_id)
            except ValueError:
                self.recovery.problem(f"ride {ride_id!r}: unreadable id; its raw samples are not replayed")
                continue
            if ride_id not in listed:
                self.recovery.problem(f"ride {ride_id}: missing from the rides table; restored as syncing")
                self._ensure_ride_row(ride_id)
            self._recover_raw(ride_id)

    def _load_doc(self, ref: DocRef) -> _OpenDoc:
        doc_id = ref.doc_id
        report = self.recovery
        base = b""
        expected: list[bytes] = []
        lost_snapshot = False
        row = self._conn.execute(
            "SELECT data, heads, upto, crc FROM snapshots WHERE doc_id=?", (doc_id,)
        ).fetchone()
        if row is not None:
            data, heads, upto, check = row
            if check != db.crc(doc_id, heads, upto, data):
                report.problem(f"doc {doc_id}: snapshot checksum mismatch ({len(data)} bytes); skipped")
                lost_snapshot = True
            elif not data:
                report.problem(f"doc {doc_id}: empty snapshot; skipped")
                lost_snapshot = True
            else:
                base = data
                expected = db.unpack_heads(heads)
        good: list[bytes] = []
        skipped = 0
        for rec_id, data, heads, check in self._conn.execute(
            "SELECT id, data, heads, crc FROM changes WHERE doc_id=? ORDER BY id", (doc_id,)
        ):
            if check != db.crc(doc_id, rec_id, heads, data) or not data:
                report.problem(
                    f"doc {doc_id}: change record {rec_id} is corrupt ({len(data)} bytes); skipped"
                )
                skipped += 1
                continue
            good.append(data)
            expected = db.unpack_heads(heads)
        report.records_skipped += skipped
        doc = self._load_crdt(doc_id, base, good)
        open_doc = _OpenDoc(ref, doc, doc.heads(), records=len(good) + skipped)
        if lost_snapshot or (expected and sorted(expected) != open_doc.persisted):
            # Compacting now would overwrite the damaged rows with a document that lacks their content;
            # keep them (and the raw log) until a peer resyncs what is missing.
            open_doc.degraded = True
            report.problem(
                f"doc {doc_id}: history incomplete after skipped records; not compacted until resynced"
            )
        return open_doc

    def _load_crdt(self, doc_id: str, base: bytes, chunks: list[bytes]) -> CrdtDoc:
        try:
            return CrdtDoc.load(base + b"".join(chunks), self.actor)
        except CrdtDecodeError as exc:
            self.recovery.problem(f"doc {doc_id}: bulk load failed ({exc}); loading record by record")
        try:
            doc = CrdtDoc.load(base, self.actor)
        except CrdtDecodeError as exc:
            self.recovery.problem(
                f"doc {doc_id}: snapshot unreadable ({exc}); starting from its change records"
            )
            doc = CrdtDoc.new(self.actor)
        for chunk in chunks:
            try:
                doc.apply_changes([chunk])
            except CrdtDecodeError as exc:
                self.recovery.problem(f"doc {doc_id}: change record unreadable ({exc}); skipped")
                self.recovery.records_skipped += 1
        return doc

    def _recover_raw(self, ride_id: str) -> None:
        own = self._own_ref(ride_id)
        if own is None or own.kind not in (DocKind.BIKE, DocKind.APP):
            return
        seqs = self._seqs.setdefault(ride_id, self._doc_seqs(own))
        pending = self._pending.setdefault(ride_id, {})
        stale_folded: list[int] = []
        for device, seq, data, check, folded in self._conn.execute(
            "SELECT device, seq, data, crc, folded FROM raw_samples WHERE ride_id=? ORDER BY seq", (ride_id,)
        ):
            if check != db.crc(ride_id, device, seq, data):
                self.recovery.problem(f"ride {ride_id}: raw sample {device}/{seq} checksum mismatch; skipped")
                self.recovery.raw_skipped += 1
                continue
            if device != self.device_id:
                continue
            if seq in seqs:
                if not folded:
                    stale_folded.append(seq)
                continue
            try:
                sample = decode_record(data)
            except SampleDecodeError as exc:
                self.recovery.problem(
                    f"ride {ride_id}: raw sample {device}/{seq} undecodable ({exc}); skipped"
                )
                self.recovery.raw_skipped += 1
                continue
            if sample.seq != seq:
                self.recovery.problem(f"ride {ride_id}: raw sample {seq} holds seq {sample.seq}; skipped")
                self.recovery.raw_skipped += 1
                continue
            pending[seq] = sample
        if stale_folded:
            rows = [(ride_id, self.device_id, s) for s in stale_folded]
            self._write(
                lambda cur: cur.executemany(
                    "UPDATE raw_samples SET folded=1 WHERE ride_id=? AND device=? AND seq=?", rows
                )
            )
        if pending:
            self.recovery.raw_replayed += len(pending)
            self.fold(ride_id)

    def _doc_seqs(self, ref: DocRef) -> set[int]:
        entry = self._docs.get(ref.doc_id)
        if entry is None:
            return set()
        decoded = entry.decode()
        return {s.seq for s in decoded.samples} if isinstance(decoded, DeviceDoc) else set()

    # -- rides and documents --------------------------------------------------------------------------

    def _own_ref(self, ride_id: str) -> DocRef | None:
        return schema.own_ref(ride_id, self.device_id, self.role)

    def start_ride(self, ride_id: str, t: float | None = None) -> None:
        """Create (or reopen) the ride here: its shared document and this device's own document, indexed.
        A bike or app also claims `active`. Idempotent."""
        schema.check_ride_id(ride_id)
        now = self._clock() if t is None else t
        self._ensure_ride_row(ride_id)
        shared = self.ensure_doc(schema.shared_ref(ride_id))
        own = self._own_ref(ride_id)
        with self._crdt_guard():
            documents.init_doc(shared, schema.shared_ref(ride_id))
            if own is not None:
                documents.index_doc(shared, own)
            self.persist(schema.shared_ref(ride_id).doc_id)
            if own is not None:
                doc = self.ensure_doc(own)
                documents.init_doc(doc, own)
                if own.kind in (DocKind.BIKE, DocKind.APP):
                    documents.claim_active(doc, now, f"ride-start:{ride_id}:{self.device_id}")
                self.persist(own.doc_id)
        self._seqs.setdefault(ride_id, set())
        self._pending.setdefault(ride_id, {})
        self._last_fold.setdefault(ride_id, self._clock())

    def _ensure_ride_row(self, ride_id: str) -> None:
        if ride_id in self._known_rides:
            return
        now = self._clock()
        row = (ride_id, now, SyncState.SYNCING.value, "not yet synced", now)
        self._write(lambda cur: cur.execute("INSERT OR IGNORE INTO rides VALUES(?, ?, ?, ?, ?)", row))
        self._known_rides.add(ride_id)
        self._status[ride_id] = SyncStatus(ride_id, SyncState.SYNCING, "not yet synced", now)

    def ensure_doc(self, ref: DocRef) -> CrdtDoc:
        """The document `ref`, created empty (registered, nothing written) if this replica lacks it.

        A sync endpoint calls this for a document a peer offers; the empty document then receives it."""
        entry = self._docs.get(ref.doc_id)
        if entry is None:
            self._ensure_ride_row(ref.ride_id)
            row = (ref.doc_id, ref.ride_id, ref.kind.value, ref.device)
            self._write(lambda cur: cur.execute("INSERT OR IGNORE INTO docs VALUES(?, ?, ?, ?)", row))
            doc = CrdtDoc.new(self.actor)
            entry = self._add_entry(_OpenDoc(ref, doc, doc.heads()))
        return entry.doc

    def _add_entry(self, entry: _OpenDoc) -> _OpenDoc:
        self._docs[entry.ref.doc_id] = entry
        self._by_ride.setdefault(entry.ref.ride_id, {})[entry.ref.doc_id] = entry
        return entry

    def _ride_entries(self, ride_id: str) -> list[_OpenDoc]:
        return list(self._by_ride.get(ride_id, {}).values())

    def rides(self) -> list[str]:
        return sorted(self._known_rides)

    def has_ride(self, ride_id: str) -> bool:
        return ride_id in self._known_rides

    def ride_refs(self, ride_id: str) -> list[DocRef]:
        """The documents of `ride_id` this replica holds, plus any the shared index names that it lacks."""
        refs = {e.ref.doc_id: e.ref for e in self._ride_entries(ride_id)}
        shared = self._docs.get(schema.shared_ref(ride_id).doc_id)
        if shared is not None:
            decoded = shared.decode()
            if isinstance(decoded, SharedDoc):
                for ref in decoded.index:
                    refs.setdefault(ref.doc_id, ref)
        return sorted(refs.values(), key=lambda r: r.doc_id)

    def ref(self, doc_id: str) -> DocRef:
        entry = self._docs.get(doc_id)
        if entry is None:
            raise UnknownRide(f"no document {doc_id} in this replica")
        return entry.ref

    def has_doc(self, doc_id: str) -> bool:
        return doc_id in self._docs

    def doc(self, doc_id: str) -> CrdtDoc:
        """The live document, e.g. for `engine.crdt.SyncSession`. Call `persist(doc_id)` after changing it
        and before acknowledging anything to anyone."""
        entry = self._docs.get(doc_id)
        if entry is None:
            raise UnknownRide(f"no document {doc_id} in this replica")
        return entry.doc

    def heads(self, doc_id: str) -> list[bytes]:
        return self.doc(doc_id).heads()

    def changes_since(self, doc_id: str, heads: Iterable[bytes]) -> list[ChangeInfo]:
        return self.doc(doc_id).changes_since(heads)

    # -- persistence ----------------------------------------------------------------------------------

    def persist(self, doc_id: str, extra: Callable[[sqlite3.Cursor], None] | None = None) -> int:
        """Store every change of `doc_id` not yet on disk as one checksummed record, in one transaction
        (with `extra` statements, if any). Returns the bytes written (0 if nothing was new)."""
        entry = self._docs[doc_id]
        with self._crdt_guard():
            changes = entry.doc.changes_since(entry.persisted)
            heads = entry.doc.heads()
        if not changes:
            if extra is not None:
                self._write(extra)
            return 0
        data = b"".join(c.data for c in changes)
        packed = db.pack_heads(heads)

        def write(cur: sqlite3.Cursor) -> None:
            cur.execute(
                "INSERT INTO changes(doc_id, data, heads, crc) VALUES(?, ?, ?, 0)", (doc_id, data, packed)
            )
            rec_id = cur.lastrowid
            assert rec_id is not None
            cur.execute("UPDATE changes SET crc=? WHERE id=?", (db.crc(doc_id, rec_id, packed, data), rec_id))
            if extra is not None:
                extra(cur)

        self._write(write)
        entry.persisted = heads
        entry.records += 1
        if entry.records >= self.compact_every:
            self.compact(doc_id)
        return len(data)

    def merge_remote(self, doc_id: str, other: CrdtDoc) -> list[bytes]:
        """Merge a (gated) fork into the document and persist; returns the new heads."""
        entry = self._docs[doc_id]
        with self._crdt_guard():
            new = entry.doc.merge(other)
        self.persist(doc_id)
        return new

    def apply_changes(self, doc_id: str, chunks: Iterable[bytes]) -> list[bytes]:
        entry = self._docs[doc_id]
        with self._crdt_guard():
            new = entry.doc.apply_changes(chunks)
        self.persist(doc_id)
        return new

    def compact(self, doc_id: str) -> int:
        """Fold the document's change records into one snapshot. Returns the snapshot size (0 if skipped:
        a document with an incomplete history keeps its records until it is resynced)."""
        entry = self._docs[doc_id]
        if entry.degraded:
            log.warning("not compacting a document with an incomplete history", extra={"doc_id": doc_id})
            return 0
        self.persist_if_dirty(doc_id)
        with self._crdt_guard():
            data = entry.doc.save()
            heads = entry.doc.heads()
        packed = db.pack_heads(heads)

        def write(cur: sqlite3.Cursor) -> None:
            # Inside the transaction: every change record queued before this snapshot is in the table.
            upto = cur.execute(
                "SELECT COALESCE(MAX(id), 0) FROM changes WHERE doc_id=?", (doc_id,)
            ).fetchone()[0]
            cur.execute(
                "INSERT OR REPLACE INTO snapshots VALUES(?, ?, ?, ?, ?)",
                (doc_id, data, packed, upto, db.crc(doc_id, packed, upto, data)),
            )
            cur.execute("DELETE FROM changes WHERE doc_id=? AND id<=?", (doc_id, upto))

        self._write(write)
        entry.records = 0
        return len(data)

    def persist_if_dirty(self, doc_id: str) -> None:
        entry = self._docs[doc_id]
        if entry.doc.heads() != entry.persisted:
            self.persist(doc_id)

    # -- samples --------------------------------------------------------------------------------------

    def append_sample(self, ride_id: str, sample: Sample) -> bool:
        """Log one sample durably (committed and fsync'd on return). False if (device, seq) is known."""
        return self.append_samples(ride_id, [sample]) == 1

    def append_samples(self, ride_id: str, samples: Iterable[Sample]) -> int:
        """Log samples in one durable transaction; returns how many were new."""
        if ride_id not in self._pending:
            raise UnknownRide(f"ride {ride_id} is not started on this replica")
        seqs = self._seqs[ride_id]
        pending = self._pending[ride_id]
        rows = []
        fresh = []
        for sample in samples:
            if sample.seq in seqs or sample.seq in pending:
                continue
            data = bytes(encode_record(sample, 0))
            rows.append(
                (ride_id, self.device_id, sample.seq, data, db.crc(ride_id, self.device_id, sample.seq, data))
            )
            fresh.append(sample.normalized())
        backlog = self._unlogged.get(ride_id, [])
        if rows or backlog:
            try:
                with self._tx() as cur:
                    cur.executemany(
                        "INSERT OR IGNORE INTO raw_samples VALUES(?, ?, ?, ?, ?, 0)", backlog + rows
                    )
                self._unlogged.pop(ride_id, None)
            except StorageFull as exc:
                # Keep recording: the samples stay in memory (and in the document) and are logged as soon
                # as space returns. Only a crash before then can lose them, and that is said loudly.
                self._unlogged[ride_id] = backlog + rows
                log.critical(
                    "storage full; samples held in memory only",
                    extra={"ride_id": ride_id, "unlogged": len(backlog) + len(rows), "error": str(exc)},
                )
            for sample in fresh:
                pending[sample.seq] = sample
            if fresh and ride_id in self._top:
                self._top[ride_id] = max(self._top[ride_id], *(s.seq for s in fresh))
        self._watch_storage()
        return len(rows)

    def pending_samples(self, ride_id: str) -> int:
        return len(self._pending.get(ride_id, {}))

    def next_seq(self, ride_id: str) -> int:
        """The first seq after every sample this device recorded for the ride (survives restarts)."""
        if ride_id not in self._top:
            # Once per ride and open; raw rows may be pruned after compaction, so the document counts too.
            seqs = self._seqs.get(ride_id, set())
            self._top[ride_id] = max(max(seqs, default=-1), max(self._pending.get(ride_id, {}), default=-1))
        row = self._conn.execute(
            "SELECT MAX(seq) FROM raw_samples WHERE ride_id=? AND device=?", (ride_id, self.device_id)
        ).fetchone()
        logged = row[0] if row and isinstance(row[0], int) else -1
        return max(self._top[ride_id], logged) + 1

    def maybe_fold(self, ride_id: str, now: float | None = None) -> int:
        """Fold when the batch is full or `fold_interval_s` has passed since the last fold."""
        pending = self._pending.get(ride_id)
        if not pending:
            return 0
        now = self._clock() if now is None else now
        if len(pending) >= self.max_batch or now - self._last_fold.get(ride_id, 0.0) >= self.fold_interval_s:
            return self.fold(ride_id)
        return 0

    def fold(self, ride_id: str) -> int:
        """Write the pending samples into this device's document: one change, one transaction."""
        pending = self._pending.get(ride_id)
        self._last_fold[ride_id] = self._clock()
        if not pending:
            return 0
        own = self._own_ref(ride_id)
        if own is None or own.kind not in (DocKind.BIKE, DocKind.APP):
            raise StoreError(f"a {self.role.value} replica records no samples")
        doc = self.ensure_doc(own)
        batch = [pending[s] for s in sorted(pending)]
        with self._crdt_guard():
            documents.init_doc(doc, own)
            documents.add_samples(doc, batch)
        seqs = [s.seq for s in batch]

        def mark(cur: sqlite3.Cursor) -> None:
            cur.executemany(
                "UPDATE raw_samples SET folded=1 WHERE ride_id=? AND device=? AND seq=?",
                [(ride_id, self.device_id, s) for s in seqs],
            )

        try:
            self.persist(own.doc_id, extra=mark)
        except StorageFull as exc:
            # The change is in the document; persist() writes it with the next one that fits. Recovery
            # marks these raw rows folded then, since the document holds their seqs.
            log.critical("storage full; fold kept in memory", extra={"ride_id": ride_id, "error": str(exc)})
        self._seqs.setdefault(ride_id, set()).update(seqs)
        pending.clear()
        return len(batch)

    # -- ride events ----------------------------------------------------------------------------------

    def end_ride(self, ride_id: str, t: float | None = None, duration_s: float | None = None) -> bool:
        """Bike or app: fold what is pending and claim `ended` with what this device recorded."""
        own = self._own_ref(ride_id)
        if own is None or own.kind not in (DocKind.BIKE, DocKind.APP):
            raise StoreError(f"a {self.role.value} replica does not claim ride ends")
        self.fold(ride_id)
        seqs = self._seqs.get(ride_id, set())
        with self._crdt_guard():
            wrote = documents.claim_ended(
                self.doc(own.doc_id),
                ride_id,
                self._clock() if t is None else t,
                last_seq=max(seqs) if seqs else None,
                count=len(seqs),
                duration_s=duration_s,
            )
        self.persist(own.doc_id)
        return wrote

    def record_end_event(
        self, ride_id: str, key: str, device: str, role: str, t: float | None = None
    ) -> bool:
        """Backend: an end event (idempotency key) received from a device. True the first time only."""
        own = self._own_backend(ride_id)
        with self._crdt_guard():
            wrote = documents.record_end_event(
                self.doc(own.doc_id), key, self._clock() if t is None else t, device, role
            )
        self.persist(own.doc_id)
        return wrote

    def finalize(self, ride_id: str, t: float | None = None) -> policy.RideView:
        """Backend: write the official totals once the bike's declared samples are all here."""
        own = self._own_backend(ride_id)
        view = self.view(ride_id)
        if view.phase is Phase.FINALIZED:
            return view
        if not view.ready_to_finalize:
            raise StoreError(
                f"ride {ride_id} is not ready to finalize: {view.phase.label}, missing {view.missing_samples}"
            )
        with self._crdt_guard():
            documents.write_finalization(
                self.doc(own.doc_id), self._clock() if t is None else t, view.totals, view.samples
            )
        self.persist(own.doc_id)
        return self.view(ride_id)

    def _own_backend(self, ride_id: str) -> DocRef:
        if self.role is not Role.BACKEND:
            raise StoreError("only the backend writes end events and finalization")
        ref = schema.own_ref(ride_id, self.device_id, Role.BACKEND)
        assert ref is not None
        doc = self.ensure_doc(ref)
        with self._crdt_guard():
            documents.init_doc(doc, ref)
        shared_ref = schema.shared_ref(ride_id)
        shared = self.ensure_doc(shared_ref)
        with self._crdt_guard():
            documents.index_doc(shared, ref)
        self.persist_if_dirty(shared_ref.doc_id)
        return ref

    def edit_shared(self, ride_id: str, field_name: str, value: Any, t: float | None = None) -> str:
        """Edit a shared field (title, notes, rating, target.*). The policy, not Automerge, picks winners."""
        ref = schema.shared_ref(ride_id)
        shared = self.ensure_doc(ref)
        decoded = self._docs[ref.doc_id].decode()
        seen = policy.current_edit_key(decoded.edits, field_name) if isinstance(decoded, SharedDoc) else None
        with self._crdt_guard():
            documents.init_doc(shared, ref)
            key = documents.edit_shared(
                shared,
                field_name,
                value,
                t=self._clock() if t is None else t,
                device=self.device_id,
                role=self.role.value,
                seen=seen,
            )
        self.persist(ref.doc_id)
        return key

    # -- views ----------------------------------------------------------------------------------------

    def ride_docs(self, ride_id: str) -> RideDocs:
        owner = self._owners.get(ride_id)
        shared = None
        devices = []
        backends = []
        for entry in sorted(self._ride_entries(ride_id), key=lambda e: e.ref.doc_id):
            decoded = entry.decode()
            if isinstance(decoded, SharedDoc):
                shared = decoded
            elif isinstance(decoded, BackendDoc):
                backends.append(decoded)
            else:
                devices.append(decoded)
        return RideDocs(
            ride_id=ride_id,
            shared=shared,
            devices=tuple(devices),
            backends=tuple(backends),
            owner=None if owner is None else owner.device,
        )

    def view(self, ride_id: str) -> policy.RideView:
        return policy.resolve(self.ride_docs(ride_id))

    def phase(self, ride_id: str) -> Phase:
        """The ride's phase from claims and finalization only (no sample decoding): cheap per message, and
        cached until one of the ride's device or backend documents changes (a gate asks on every message)."""
        owner = self._owners.get(ride_id)
        bike = None if owner is None else owner.device
        # Another bike's document never counts in a ride with an owner (policy rule 2).
        entries = [
            e
            for e in self._ride_entries(ride_id)
            if e.ref.kind is not DocKind.SHARED
            and (bike is None or e.ref.kind is not DocKind.BIKE or e.ref.device == bike)
        ]
        with self._crdt_guard():
            key = tuple((e.ref.doc_id, tuple(e.doc.heads())) for e in entries)
        cached = self._phases.get(ride_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        devices = []
        backends = []
        for entry in entries:
            decoded = documents.decode(entry.doc, entry.ref, samples=False)
            if isinstance(decoded, DeviceDoc):
                devices.append(decoded)
            elif isinstance(decoded, BackendDoc):
                backends.append(decoded)
        phase = policy.phase_of(devices, backends)
        self._phases[ride_id] = (key, phase)
        return phase

    # -- sync bookkeeping -----------------------------------------------------------------------------

    def set_peer_heads(self, doc_id: str, peer: str, heads: Iterable[bytes]) -> None:
        """Record the heads `peer` acknowledged for `doc_id` (durable)."""
        heads = list(heads)
        row = (doc_id, peer, db.pack_heads(heads), self._clock())
        self._write(lambda cur: cur.execute("INSERT OR REPLACE INTO peer_heads VALUES(?, ?, ?, ?)", row))
        self._acked[(doc_id, peer)] = sorted(heads)

    def peer_heads(self, doc_id: str, peer: str) -> list[bytes]:
        known = self._acked.get((doc_id, peer))
        if known is not None:
            return list(known)
        row = self._conn.execute(
            "SELECT heads FROM peer_heads WHERE doc_id=? AND peer=?", (doc_id, peer)
        ).fetchone()
        return db.unpack_heads(row[0]) if row else []

    def acknowledged(self, ride_id: str, peer: str) -> bool:
        """True when `peer` acknowledged the current heads of every document of the ride held here."""
        refs = [e.ref for e in self._ride_entries(ride_id)]
        return bool(refs) and all(self.peer_heads(r.doc_id, peer) == self.heads(r.doc_id) for r in refs)

    def set_sync_state(self, ride_id: str, state: SyncState, reason: str = "") -> None:
        state = SyncState(state)
        self._ensure_ride_row(ride_id)
        now = self._clock()
        row = (state.value, reason, now, ride_id)
        self._write(
            lambda cur: cur.execute(
                "UPDATE rides SET sync_state=?, sync_reason=?, updated=? WHERE ride_id=?", row
            )
        )
        self._status[ride_id] = SyncStatus(ride_id, state, reason, now)

    def sync_status(self, ride_id: str) -> SyncStatus:
        known = self._status.get(ride_id)
        if known is not None:
            return known
        row = self._conn.execute(
            "SELECT sync_state, sync_reason, updated FROM rides WHERE ride_id=?", (ride_id,)
        ).fetchone()
        if row is None:
            raise UnknownRide(f"no ride {ride_id} in this replica")
        return SyncStatus(ride_id, SyncState(row[0]), row[1], row[2])

    # -- sync ---------------------------------------------------------------------------------------

    def generate_sync(self, doc_id: str, session: SyncSession) -> bytes | None:
        """The next sync message for this connection's peer, or None when there is nothing to say."""
        with self._crdt_guard():
            return session.generate(self.doc(doc_id))

    def receive_sync(self, doc_id: str, session: SyncSession, data: bytes) -> list[bytes]:
        """Apply a sync message from a trusted peer (a device receiving from the backend) and persist it
        before returning; returns the new heads. The backend gates what it receives: `gated_sync`."""
        entry = self._docs[doc_id]
        with self._crdt_guard():
            session.receive(entry.doc, data)
        self.persist_if_dirty(doc_id)
        return entry.doc.heads()

    def ride_json(self, ride_id: str) -> dict[str, Any]:
        """The resolved view (`GET /v1/rides/{id}`) plus this replica's sync state for the ride."""
        out = self.view(ride_id).to_json()
        out["sync"] = self.sync_status(ride_id).to_json()
        return out

    # -- the actor gate -----------------------------------------------------------------------------

    def actor_owner(self, actor: bytes) -> tuple[str, Role] | None:
        """The device (and its role) an actor id is bound to, if any."""
        known = self._actors.get(actor)
        if known is not None:
            return known
        row = self._conn.execute("SELECT device, role FROM actors WHERE actor=?", (actor,)).fetchone()
        if row is None:
            return None
        owner = self._actors[actor] = (row[0], Role(row[1]))
        return owner

    def bind_actor(self, actor: bytes, device: str, role: Role) -> bool:
        """Trust on first use: bind `actor` to `device` unless it is bound already. True if the actor is
        (now) bound to this device, False if another device owns it."""
        owner = self.actor_owner(actor)
        if owner is None:
            row = (actor, device, role.value, self._clock())
            self._write(lambda cur: cur.execute("INSERT OR IGNORE INTO actors VALUES(?, ?, ?, ?)", row))
            owner = self._actors[actor] = (device, role)
        return owner[0] == device

    # -- ride owners ----------------------------------------------------------------------------------

    def _load_owners(self) -> None:
        self._owners.clear()
        for ride_id, device, rider, class_id, bound in self._conn.execute("SELECT * FROM ride_owners"):
            self._owners[ride_id] = RideOwner(ride_id, device, rider, class_id, float(bound))

    def ride_owner(self, ride_id: str) -> RideOwner | None:
        """The ride's owner, if one is bound (the backend's rule: engine/backend/README.md)."""
        return self._owners.get(ride_id)

    def ride_owners(self) -> dict[str, RideOwner]:
        return dict(self._owners)

    def bind_ride_owner(
        self, ride_id: str, device: str, *, rider: str | None = None, class_id: str | None = None
    ) -> RideOwner:
        """Trust on first use, as for actors: `device` owns `ride_id` unless someone owns it already.
        Returns the owner, whoever it is (compare its `device`). Check and set run on the store's thread
        with nothing in between, so two devices can never both win; the row is committed with the next
        write (with write-behind: before anything is acknowledged). Owners outlive eviction, so a ride id
        never changes hands."""
        schema.check_ride_id(ride_id)
        owner = self._owners.get(ride_id)
        if owner is None:
            owner = self._owners[ride_id] = RideOwner(ride_id, device, rider, class_id, self._clock())
            row = (ride_id, device, rider, class_id, owner.bound)
            sql = "INSERT OR IGNORE INTO ride_owners VALUES(?, ?, ?, ?, ?)"
            self._write(lambda cur: cur.execute(sql, row))
        return owner

    def complete_ride_owner(
        self, ride_id: str, *, rider: str | None = None, class_id: str | None = None
    ) -> RideOwner:
        """Fill in the owner's rider and class where they are still unset; a value once set stays."""
        owner = self._owners[ride_id]
        new = replace(
            owner,
            rider=owner.rider if owner.rider is not None else rider,
            class_id=owner.class_id if owner.class_id is not None else class_id,
        )
        if new != owner:
            self._owners[ride_id] = new
            row = (new.rider, new.class_id, ride_id)
            self._write(
                lambda cur: cur.execute("UPDATE ride_owners SET rider=?, class_id=? WHERE ride_id=?", row)
            )
        return new

    def gated_sync(self, doc_id: str, backlog: Backlog | None = None) -> GatedSync:
        """A new gated sync of `doc_id` for one connection (engine/store/gate.py): `receive(data, device=,
        role=)` and `generate()`. A server keeps one per connection and document, all sharing the
        connection's `backlog` (the limit on changes queued unapplied)."""
        self.ref(doc_id)
        return GatedSync(self, doc_id, backlog=backlog)

    # -- retention and storage ------------------------------------------------------------------------

    def evictable(self, ride_id: str) -> str | None:
        """None if the ride may be evicted, else the reason it may not."""
        status = self.sync_status(ride_id)
        if self._pending.get(ride_id):
            return "has samples not yet folded"
        if status.state is not SyncState.RECONCILED:
            return f"not reconciled ({status.state.value}: {status.reason})"
        if self.view(ride_id).phase is not Phase.FINALIZED:
            return "not finalized by the backend"
        return None

    def compact_ride(self, ride_id: str) -> int:
        """Compact every document of the ride; prune folded raw samples once the ride is reconciled."""
        total = sum(self.compact(e.ref.doc_id) for e in list(self._ride_entries(ride_id)))
        if self.sync_status(ride_id).state is SyncState.RECONCILED:
            self._write(
                lambda cur: cur.execute("DELETE FROM raw_samples WHERE ride_id=? AND folded=1", (ride_id,))
            )
        return total

    def evict(self, ride_id: str) -> None:
        reason = self.evictable(ride_id)
        if reason is not None:
            raise RideNotEvictable(f"ride {ride_id} cannot be evicted: {reason}")
        doc_ids = [e.ref.doc_id for e in self._ride_entries(ride_id)]

        def write(cur: sqlite3.Cursor) -> None:
            for doc_id in doc_ids:
                for table in ("snapshots", "changes", "peer_heads", "docs"):
                    cur.execute(f"DELETE FROM {table} WHERE doc_id=?", (doc_id,))
            cur.execute("DELETE FROM raw_samples WHERE ride_id=?", (ride_id,))
            cur.execute("DELETE FROM rides WHERE ride_id=?", (ride_id,))

        self._write(write)
        self._by_ride.pop(ride_id, None)
        self._phases.pop(ride_id, None)
        for doc_id in doc_ids:
            del self._docs[doc_id]
            for key in [k for k in self._acked if k[0] == doc_id]:
                del self._acked[key]
        self._known_rides.discard(ride_id)
        self._status.pop(ride_id, None)
        self._seqs.pop(ride_id, None)
        self._pending.pop(ride_id, None)
        self._last_fold.pop(ride_id, None)
        self._top.pop(ride_id, None)

    def apply_retention(self, retention: RetentionPolicy, now: float | None = None) -> dict[str, list[str]]:
        """Compact finalized, reconciled rides; evict those older than the policy allows."""
        now = self._clock() if now is None else now
        out: dict[str, list[str]] = {"compacted": [], "evicted": [], "kept": []}
        for ride_id in self.rides():
            if self.evictable(ride_id) is not None:
                out["kept"].append(ride_id)
                continue
            if now - self.sync_status(ride_id).updated >= retention.keep_finalized_s:
                self.evict(ride_id)
                out["evicted"].append(ride_id)
            else:
                self.compact_ride(ride_id)
                out["compacted"].append(ride_id)
        return out

    def storage_status(self) -> StorageStatus:
        size = sum(p.stat().st_size for p in self.data_dir.glob(db.DB_NAME + "*") if p.is_file())
        free = shutil.disk_usage(self.data_dir).free
        unlogged = sum(len(rows) for rows in self._unlogged.values())
        return StorageStatus(
            db_bytes=size, free_bytes=free, min_free_bytes=self.min_free_bytes, unlogged_samples=unlogged
        )

    def _watch_storage(self) -> None:
        now = time.monotonic()
        if now - self._low_logged < 30.0:
            return
        status = self.storage_status()
        if status.low:
            self._low_logged = now
            # Loud, repeated, and never a reason to stop recording: losing the ride is worse than a full disk.
            log.error("storage low; recording continues", extra=status.to_json())
        else:
            self._low_logged = now - 25.0


__all__ = [
    "RecoveryReport",
    "ReplicaStore",
    "RetentionPolicy",
    "RideNotEvictable",
    "StorageFull",
    "StorageStatus",
    "StoreCorrupt",
    "StoreError",
    "SyncState",
    "SyncStatus",
    "UnknownRide",
]
