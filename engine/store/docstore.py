"""The document store: every ride document this replica holds, loaded from and persisted to the storage
port, and the per-ride state the layers above keep (one `ridestate.Ride` per ride: evicting it is one
`del`). A lazy replica (the backend) loads each ride at its first use (`load_ride`), not at open.

Persistence: `persist` stores every change of a document not yet on disk as one record (with the caller's
extra writes in the same transaction); every `compact_every` records, `compact` replaces them with a
snapshot. Loading replays snapshot + records in one Automerge `load`, record by record if that fails, and
reports (never raises) what it had to skip; a document whose history came back incomplete is `degraded`
and never compacted, so its damaged rows are not overwritten by a document that lacks their content.

Panic guard: every Automerge call runs under `guard()`. A panic calls `on_panic` (the replica reloads
what it held from disk under a fresh actor; the poisoned document stays in engine.crdt's graveyard) and
re-raises; nothing from the poisoned document was persisted.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from engine.crdt import ChangeInfo, CrdtDecodeError, CrdtDoc, CrdtPanic
from engine.ride import policy, schema
from engine.ride.model import DeviceDoc, RideDocs, SharedDoc
from engine.ride.schema import DocKind, DocRef, Phase
from engine.store.db import StoreCorrupt
from engine.store.model import RecoveryReport, SyncState, SyncStatus, UnknownRide
from engine.store.port import Job, StoragePort, StorageTx
from engine.store.ridestate import OpenDoc, Ride
from engine.store.viewcache import RideViews, ViewCache

log = logging.getLogger(__name__)

DEFAULT_COMPACT_EVERY = 256


def _holds(doc: CrdtDoc, recorded: set[bytes]) -> bool:
    """True if the loaded document holds its whole stored history: every head the snapshot and each record
    were written with. (Not just the last record's: with several writers over one database (PostgreSQL)
    that is one writer's, and a row of another whose dependencies Automerge lacked would go unnoticed
    and later be compacted away.)"""
    if not recorded:
        return True
    held = {change.hash for change in doc.changes_since([])}
    return recorded <= held


class DocumentStore:
    def __init__(
        self,
        storage: StoragePort,
        *,
        actor: bytes,
        clock: Callable[[], float],
        on_panic: Callable[[], None],
        compact_every: int = DEFAULT_COMPACT_EVERY,
    ) -> None:
        self.storage = storage
        self.actor = actor
        self.compact_every = compact_every
        self.recovery = RecoveryReport()
        self._clock = clock
        self._on_panic = on_panic
        self.rides: dict[str, Ride] = {}
        self.docs: dict[str, OpenDoc] = {}  # the same entries as the rides hold, by doc id
        self.views = ViewCache(self.guard)
        # Told of every ride `load_ride` reads into memory (the backend's working set counts them).
        self.on_load: Callable[[str], None] = lambda ride_id: None

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except CrdtPanic:
            log.critical("automerge panicked; reloading the replica from disk")
            self._on_panic()
            raise

    def reset(self, actor: bytes) -> None:
        """Forget every in-memory document (before loading them again under `actor`)."""
        self.actor = actor
        self.docs.clear()
        for ride in self.rides.values():
            ride.forget_documents()
        self.recovery = RecoveryReport()

    # -- rides ----------------------------------------------------------------------------------------

    def ride(self, ride_id: str) -> Ride:
        ride = self.rides.get(ride_id)
        if ride is None:
            ride = self.rides[ride_id] = Ride(ride_id)
        return ride

    def listed(self) -> list[str]:
        return sorted(r.ride_id for r in self.rides.values() if r.listed)

    def is_listed(self, ride_id: str) -> bool:
        ride = self.rides.get(ride_id)
        return ride is not None and ride.listed

    def ensure_ride_row(self, ride_id: str) -> Ride:
        if ride_id not in self.rides and self.load_ride(ride_id):
            return self.rides[ride_id]  # stored, not in memory: read back whole, never held in part
        ride = self.ride(ride_id)
        if ride.listed:
            return ride
        now = self._clock()
        state, reason = SyncState.SYNCING.value, "not yet synced"
        self.write(ride_id, lambda tx: tx.add_ride(ride_id, now, state, reason))
        ride.listed = True
        ride.status = SyncStatus(ride_id, SyncState.SYNCING, "not yet synced", now)
        return ride

    def drop_ride(self, ride_id: str) -> None:
        ride = self.rides.pop(ride_id, None)
        if ride is not None:
            for doc_id in ride.docs:
                del self.docs[doc_id]

    def write(self, ride_id: str, job: Job) -> None:
        """Hand a write about `ride_id` to the storage, noting its place in the write-behind queue."""
        self.storage.write(job)
        writer, ride = getattr(self.storage, "writer", None), self.rides.get(ride_id)
        if writer is not None and ride is not None:
            ride.written = writer.queued

    def unpersisted(self, ride_id: str) -> str | None:
        """What of the ride is only in memory (a change not persisted, samples not folded or logged, a
        write not yet committed by the write-behind writer), or None."""
        ride = self.rides.get(ride_id)
        if ride is None:
            return None
        if any(e.doc.heads() != e.persisted for e in ride.docs.values()):
            return "document changes not persisted"
        if ride.pending or ride.unlogged:
            return "samples not yet folded or logged"
        writer = getattr(self.storage, "writer", None)
        return "writes not yet committed" if writer is not None and ride.written > writer.committed else None

    def release(self, ride_id: str) -> bool:
        """Drop the ride from memory, never from the storage; `load_ride` reads it back. False (nothing
        dropped) if it is not in memory or something of it is `unpersisted`."""
        if ride_id not in self.rides or self.unpersisted(ride_id) is not None:
            return False
        self.drop_ride(ride_id)
        return True

    # -- loading --------------------------------------------------------------------------------------

    def load_all(self) -> list[str]:
        """Load every document; returns the rides whose sample log recovery should replay, in order."""
        for row in self.storage.docs():
            self._load_row(*row)
        return self.check_rides({e.ref.ride_id for e in self.docs.values()}, hold=True)

    def check_rides(self, doc_rides: set[str], *, hold: bool) -> list[str]:
        """Every ride the storage holds, checked: an unreadable id is reported, a ride missing from the
        rides table is restored as syncing. `hold`: mark each listed in memory (loading everything at
        start); else nothing is kept in memory (each ride is `load_ride`d at its first use)."""
        # Rides are found wherever they left a trace, so a damaged `rides` row cannot hide unfolded samples.
        listed = {row.ride_id for row in self.storage.rides()}
        if hold:
            for ride_id in listed:
                self.ride(ride_id).listed = True
        out = []
        for ride_id in sorted(listed | doc_rides | self.storage.sample_rides()):
            try:
                schema.check_ride_id(ride_id)
            except ValueError:
                self.recovery.problem(f"ride {ride_id!r}: unreadable id; its raw samples are not replayed")
                continue
            if ride_id not in listed:
                self.recovery.problem(f"ride {ride_id}: missing from the rides table; restored as syncing")
                self.ensure_ride_row(ride_id)
                if not hold:
                    self.drop_ride(ride_id)  # its row is written; the ride itself loads at first use
            out.append(ride_id)
        return out

    def _load_row(self, doc_id: str, ride_id: str, kind: str, device: str) -> None:
        try:
            ref = schema.ref_from_row(ride_id, kind, device)
        except (ValueError, TypeError):
            self.recovery.problem(f"doc {doc_id!r}: unreadable ride/kind/device; skipped")
            return
        if ref.doc_id != doc_id:
            self.recovery.problem(f"doc {doc_id}: id does not match its ride/kind/device; skipped")
            return
        self._add_entry(self._load_doc(ref))
        self.recovery.docs_loaded += 1

    def load_ride(self, ride_id: str) -> bool:
        """Load a ride this replica does not hold from the storage (another node over a shared database
        wrote it, or the backend's first use of it): its row and every document. False if the storage has
        no such ride. Documents held already are left alone (`refresh` brings in what they lack). A file
        SQLite cannot read here (damage its open-time check skips in a big file) is `StoreCorrupt`, and
        nothing of the ride stays in memory (a ride is never held in part)."""
        try:
            row = self.storage.ride(ride_id)
            if row is None:
                return False
            for doc_row in self.storage.docs(ride_id):
                if doc_row[0] not in self.docs:
                    self._load_row(*doc_row)
        except sqlite3.DatabaseError as exc:
            self.drop_ride(ride_id)
            raise StoreCorrupt(f"ride {ride_id}: the store cannot be read: {exc}") from None
        ride = self.ride(ride_id)
        ride.listed = True
        ride.status = SyncStatus(ride_id, SyncState(row.state), row.reason, row.updated)
        self.on_load(ride_id)
        return True

    def _load_doc(self, ref: DocRef) -> OpenDoc:
        doc_id = ref.doc_id
        report = self.recovery
        base = b""
        recorded: set[bytes] = set()  # every head the stored history was written with
        lost_snapshot = False
        snapshot = self.storage.snapshot(doc_id)
        if snapshot is not None:
            if not snapshot.intact:
                report.problem(
                    f"doc {doc_id}: snapshot checksum mismatch ({len(snapshot.data)} bytes); skipped"
                )
                lost_snapshot = True
            elif not snapshot.data:
                report.problem(f"doc {doc_id}: empty snapshot; skipped")
                lost_snapshot = True
            else:
                base = snapshot.data
                recorded.update(snapshot.heads)
        good: list[bytes] = []
        skipped = 0
        for record in self.storage.change_records(doc_id):
            if not record.intact:
                report.problem(
                    f"doc {doc_id}: change record {record.id} is corrupt ({len(record.data)} bytes); skipped"
                )
                skipped += 1
                continue
            good.append(record.data)
            recorded.update(record.heads)
        report.records_skipped += skipped
        doc = self._load_crdt(doc_id, base, good)
        open_doc = OpenDoc(ref, doc, doc.heads(), records=len(good) + skipped)
        if lost_snapshot or not _holds(doc, recorded):
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

    def refresh_ride(self, ride_id: str) -> list[str]:
        """Merge what other writers committed to a ride this replica holds (several backend nodes over one
        database); returns the ids of the documents whose heads changed, new ones included. A held
        document is refreshed (`refresh`: what the storage holds is applied, never replacing what is here,
        so changes not yet committed stay); a document registered since (another device's) is loaded.
        A ride not held at all is `load_ride`'s."""
        changed = [e.ref.doc_id for e in self.ride_entries(ride_id) if self.refresh(e.ref.doc_id)]
        for doc_row in self.storage.docs(ride_id):
            if doc_row[0] not in self.docs:
                self._load_row(*doc_row)
                if doc_row[0] in self.docs:
                    changed.append(doc_row[0])
        return changed

    # -- documents ------------------------------------------------------------------------------------

    def ensure_doc(self, ref: DocRef) -> CrdtDoc:
        """The document `ref`, created empty (registered, nothing written) if this replica lacks it.

        A sync endpoint calls this for a document a peer offers; the empty document then receives it."""
        entry = self.docs.get(ref.doc_id)
        if entry is None and ref.ride_id not in self.rides and self.load_ride(ref.ride_id):
            # A ride released from memory (or written by another node) is read back before anything is
            # added to it, so it is never held in part.
            entry = self.docs.get(ref.doc_id)
        if entry is None:
            self.ensure_ride_row(ref.ride_id)
            doc_id, ride_id, kind, device = ref.doc_id, ref.ride_id, ref.kind.value, ref.stored_device
            self.write(ride_id, lambda tx: tx.add_doc(doc_id, ride_id, kind, device))
            doc = CrdtDoc.new(self.actor)
            entry = self._add_entry(OpenDoc(ref, doc, doc.heads()))
        return entry.doc

    def forget_doc(self, doc_id: str) -> None:
        """Drop one document from memory (a retired live segment; the caller deletes it from storage)."""
        entry = self.docs.pop(doc_id, None)
        if entry is not None:
            ride = self.rides.get(entry.ref.ride_id)
            if ride is not None:
                ride.docs.pop(doc_id, None)

    def _add_entry(self, entry: OpenDoc) -> OpenDoc:
        self.docs[entry.ref.doc_id] = entry
        self.ride(entry.ref.ride_id).docs[entry.ref.doc_id] = entry
        return entry

    def ride_entries(self, ride_id: str) -> list[OpenDoc]:
        ride = self.rides.get(ride_id)
        return [] if ride is None else list(ride.docs.values())

    def ride_refs(self, ride_id: str) -> list[DocRef]:
        """The documents of `ride_id` this replica holds, plus any the shared index names that it lacks."""
        refs = {e.ref.doc_id: e.ref for e in self.ride_entries(ride_id)}
        shared = self.docs.get(schema.shared_ref(ride_id).doc_id)
        if shared is not None:
            decoded = shared.decode()
            if isinstance(decoded, SharedDoc):
                for ref in decoded.index:
                    if ref.doc_id not in refs and not self.retired_segment(ref):
                        refs[ref.doc_id] = ref
        return sorted(refs.values(), key=lambda r: r.doc_id)

    def retired_segment(self, ref: DocRef) -> bool:
        """Whether `ref` is a live segment its device's durable document, held here, names consolidated:
        nothing to fetch or accept, though the index still lists it (it only grows;
        docs/architecture.md#live-segments)."""
        if ref.kind is not DocKind.SEGMENT:
            return False
        durable = self.docs.get(DocRef(ref.ride_id, DocKind.BIKE, ref.device).doc_id)
        if durable is None:
            return False
        with self.guard():
            return durable.doc.get(f"{schema.SEGMENT_PREFIX}{ref.segment}") is not None

    def entry(self, doc_id: str) -> OpenDoc:
        entry = self.docs.get(doc_id)
        if entry is None:
            raise UnknownRide(f"no document {doc_id} in this replica")
        return entry

    def doc_seqs(self, ref: DocRef) -> set[int]:
        entry = self.docs.get(ref.doc_id)
        if entry is None:
            return set()
        decoded = entry.decode()
        return {s.seq for s in decoded.samples} if isinstance(decoded, DeviceDoc) else set()

    def changes_since(self, doc_id: str, heads: Iterable[bytes]) -> list[ChangeInfo]:
        return self.entry(doc_id).doc.changes_since(heads)

    # -- persistence ----------------------------------------------------------------------------------

    def persist(self, doc_id: str, extra: Callable[[StorageTx], None] | None = None) -> int:
        """Store every change of `doc_id` not yet on disk as one record, in one transaction (with `extra`
        writes, if any). Returns the bytes written (0 if nothing was new)."""
        entry = self.docs[doc_id]
        with self.guard():
            changes = entry.doc.changes_since(entry.persisted)
            heads = entry.doc.heads()
        if not changes:
            if extra is not None:
                self.write(entry.ref.ride_id, extra)
            return 0
        data = b"".join(c.data for c in changes)

        def write(tx: StorageTx) -> None:
            tx.append_change(doc_id, data, heads)
            if extra is not None:
                extra(tx)

        self.write(entry.ref.ride_id, write)
        entry.persisted = heads
        entry.records += 1
        if entry.records >= self.compact_every:
            self.compact(doc_id)
        return len(data)

    def persist_if_dirty(self, doc_id: str) -> None:
        entry = self.docs[doc_id]
        if entry.doc.heads() != entry.persisted:
            self.persist(doc_id)

    def refresh(self, doc_id: str) -> bool:
        """Apply what the storage holds for `doc_id` that this document lacks (another node's writes over
        a shared database). True if the document changed. Damaged rows are skipped (loading reports them)."""
        entry = self.docs[doc_id]
        chunks = []
        recorded: set[bytes] = set()
        snapshot = self.storage.snapshot(doc_id)
        if snapshot is not None and snapshot.intact and snapshot.data:
            chunks.append(snapshot.data)
            recorded.update(snapshot.heads)
        for record in self.storage.change_records(doc_id):
            if record.intact:
                chunks.append(record.data)
                recorded.update(record.heads)
        clean = entry.doc.heads() == entry.persisted
        with self.guard():
            before = entry.doc.heads()
            try:
                after = entry.doc.apply_changes(chunks)
            except CrdtDecodeError as exc:
                log.warning("refresh: stored rows unreadable", extra={"doc_id": doc_id, "error": str(exc)})
                return False
        if clean:
            entry.persisted = after  # everything new came from the storage
        if not _holds(entry.doc, recorded):
            # A stored row Automerge could not apply yet (its dependencies not committed by their node):
            # never compact it away (as on load).
            entry.degraded = True
        return after != before

    def write_once(
        self, doc_id: str, claim: Callable[[StorageTx], bool], edit: Callable[[CrdtDoc], object]
    ) -> bool:
        """Make `edit` to the document only if `claim` wins, in one transaction with the change, committed
        before return: the conditional write behind "exactly once" across nodes. False (nothing changed)
        if the claim lost. Earlier writes are committed first, so the new record never precedes its
        dependencies on disk."""
        entry = self.docs[doc_id]
        self.persist_if_dirty(doc_id)
        self.storage.flush()
        with self.guard():
            draft = entry.doc.fork(self.actor)
            edit(draft)
            changes = draft.changes_since(entry.persisted)
            heads = draft.heads()
        data = b"".join(c.data for c in changes)
        with self.storage.transaction() as tx:
            won = bool(claim(tx))
            if won and data:
                tx.append_change(doc_id, data, heads)
        if won:
            with self.guard():
                entry.doc.merge(draft)
            entry.persisted = heads
            entry.records += 1
        return won

    def merge_remote(self, doc_id: str, other: CrdtDoc) -> list[bytes]:
        """Merge a (gated) fork into the document and persist; returns the new heads."""
        entry = self.docs[doc_id]
        with self.guard():
            new = entry.doc.merge(other)
        self.persist(doc_id)
        return new

    def apply_changes(self, doc_id: str, chunks: Iterable[bytes]) -> list[bytes]:
        entry = self.docs[doc_id]
        with self.guard():
            new = entry.doc.apply_changes(chunks)
        self.persist(doc_id)
        return new

    def compact(self, doc_id: str) -> int:
        """Fold the document's change records into one snapshot. Returns the snapshot size (0 if skipped:
        a document with an incomplete history keeps its records until it is resynced)."""
        entry = self.docs[doc_id]
        if entry.degraded:
            log.warning("not compacting a document with an incomplete history", extra={"doc_id": doc_id})
            return 0
        self.persist_if_dirty(doc_id)
        with self.guard():
            data = entry.doc.save()
            heads = entry.doc.heads()
        job: Job = lambda tx: tx.put_snapshot(doc_id, data, heads)  # noqa: E731
        self.write(entry.ref.ride_id, job)
        entry.records = 0
        return len(data)

    # -- views (viewcache.py) --------------------------------------------------------------------------

    def ride_docs(self, ride_id: str, owner: str | None) -> RideDocs:
        return self.views.ride_docs(ride_id, self.ride_entries(ride_id), owner)

    def view(self, ride_id: str, owner: str | None) -> policy.RideView:
        return self.views.view(ride_id, self.ride_entries(ride_id), self._ride_views(ride_id), owner)

    def phase(self, ride_id: str, owner: str | None) -> Phase:
        return self.views.phase(self.ride_entries(ride_id), self._ride_views(ride_id), owner)

    def _ride_views(self, ride_id: str) -> RideViews | None:
        ride = self.rides.get(ride_id)
        return None if ride is None else ride.views
