"""The part of a replica every role shares: the store's layers wired to one storage and one actor,
reload after a panic, documents, views, sync and its bookkeeping, retention. `DeviceReplica`
(device_replica.py) and `BackendReplica` (backend_replica.py) add what only their role does;
`ReplicaStore` (replica.py) is both, for callers that pick the role at run time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Self

from engine.crdt import ChangeInfo, CrdtDoc, SyncSession, new_actor_id
from engine.ride import documents, policy, schema
from engine.ride.batches import DEFAULT_BATCH_SCHEMA
from engine.ride.model import RideDocs, SharedDoc
from engine.ride.schema import DocKind, DocRef, Phase, Role
from engine.store import db
from engine.store.bookkeeping import SyncBook
from engine.store.db import StoreCorrupt, StoreError
from engine.store.docstore import DEFAULT_COMPACT_EVERY, DocumentStore
from engine.store.model import (
    RecoveryReport,
    RetentionPolicy,
    RideOwner,
    StorageStatus,
    SyncState,
    SyncStatus,
)
from engine.store.port import StoragePort, StorageTx
from engine.store.retention import DEFAULT_MIN_FREE_BYTES, Retention
from engine.store.samplelog import (
    DEFAULT_FOLD_INTERVAL_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_OFFLINE_FOLD_INTERVAL_S,
    DEFAULT_SEGMENT_INTERVAL_S,
    SampleLog,
)
from engine.store.sqlite import SqliteStorage
from engine.store.writer import GroupObserver, StoreWriter


class ReplicaCore:
    """One replica (bike, app or backend) on one storage: by default the SQLite file in `data_dir`. By
    default every write commits before the call returns. `start_write_behind()` (the backend) hands
    commits to a writer thread instead (engine/store/writer.py): then await `flushed()` before
    acknowledging anything."""

    roles: ClassVar[frozenset[Role]] = frozenset(Role)

    def __init__(
        self,
        data_dir: Path,
        *,
        device_id: str,
        role: Role,
        fold_interval_s: float = DEFAULT_FOLD_INTERVAL_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        offline_fold_interval_s: float = DEFAULT_OFFLINE_FOLD_INTERVAL_S,
        batch_schema: int = DEFAULT_BATCH_SCHEMA,
        segment_interval_s: float | None = DEFAULT_SEGMENT_INTERVAL_S,
        compact_every: int = DEFAULT_COMPACT_EVERY,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        clock: Callable[[], float] = time.time,
        storage: StoragePort | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.device_id = schema.check_device_id(device_id)
        self.role = Role(role)
        if self.role not in self.roles:
            raise StoreError(f"a {type(self).__name__} is not for a {self.role.value} replica")
        # The backend loads each ride at its first use, so a server over 100,000 stored rides starts with
        # none in memory (engine/store/README.md, "Loading"). A bike or an app holds few rides and loads
        # them all at start: its raw-sample recovery (`samples.recover`) replays every ride's log.
        self.lazy = self.role is Role.BACKEND
        self._clock = clock
        self.storage: StoragePort = SqliteStorage(self.data_dir) if storage is None else storage
        self.actor = new_actor_id(self.device_id)
        self.documents = DocumentStore(
            self.storage, actor=self.actor, clock=clock, on_panic=self.reload, compact_every=compact_every
        )
        self.book = SyncBook(self.documents, clock=clock)
        self.samples = SampleLog(
            self.documents,
            device_id=self.device_id,
            role=self.role,
            clock=clock,
            on_append=self._watch_storage,
            fold_interval_s=fold_interval_s,
            max_batch=max_batch,
            offline_fold_interval_s=offline_fold_interval_s,
            batch_schema=batch_schema,
            segment_interval_s=segment_interval_s,
        )
        self.segments = self.samples.segments
        self.retention = Retention(
            self.documents,
            self.samples,
            self.book,
            view=self.view,
            rides=self.rides,
            load=self.load_ride,
            clock=clock,
            min_free_bytes=min_free_bytes,
        )
        try:
            self._check_identity()
            self.book.bind_actor(self.actor, self.device_id, self.role)
            if self.lazy:
                self.documents.check_rides({row[1] for row in self.storage.docs()}, hold=False)
            else:
                self._load_all()
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            # Anything unreadable that per-row checks did not catch: the file is left as found.
            self.storage.close()
            raise StoreCorrupt(f"{self.data_dir / db.DB_NAME} is damaged: {exc}") from None
        except BaseException:
            self.storage.close()
            raise

    def _watch_storage(self) -> None:
        self.retention.watch_storage()

    # -- settings of the layers -----------------------------------------------------------------------

    @property
    def recovery(self) -> RecoveryReport:
        return self.documents.recovery

    @property
    def fold_interval_s(self) -> float:
        return self.samples.fold_interval_s

    @property
    def max_batch(self) -> int:
        return self.samples.max_batch

    @property
    def compact_every(self) -> int:
        return self.documents.compact_every

    @property
    def min_free_bytes(self) -> int:
        return self.retention.min_free_bytes

    # -- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        self.storage.close()

    def start_write_behind(self, max_group: int = 2000, on_group: GroupObserver | None = None) -> None:
        """From now on, commits happen on a writer thread in groups (engine/store/writer.py). Every method
        keeps working from the owner's thread and reads what it wrote; only durability is deferred: await
        `flushed()` (or call `flush()`) before acknowledging anything to anyone."""
        self.storage.start_write_behind(max_group, on_group)

    @property
    def writer(self) -> StoreWriter | None:
        return getattr(self.storage, "writer", None)

    async def flushed(self) -> None:
        """Return once every write made so far is committed (at once without write-behind)."""
        await self.storage.flushed()

    def flush(self) -> None:
        """Blocking `flushed()`."""
        self.storage.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reload(self) -> None:
        """Tear down every in-memory document and load the replica again from disk, under a fresh actor.

        Used after an Automerge panic: the poisoned document stays in engine.crdt's graveyard."""
        self.flush()  # loading reads the storage: it must hold everything written so far
        self.actor = new_actor_id(self.device_id)
        in_memory = list(self.documents.rides)
        self.documents.reset(self.actor)
        self.book.bind_actor(self.actor, self.device_id, self.role)
        if not self.lazy:
            self._load_all()
            return
        # Only the rides that were in memory come back (connections may hold their documents).
        for ride_id in in_memory:
            self.documents.refresh_ride(ride_id)

    def _load_all(self) -> None:
        for ride_id in self.documents.load_all():
            self.samples.recover(ride_id)

    def _check_identity(self) -> None:
        rows = self.storage.meta()
        if "device_id" not in rows:
            with self.storage.transaction() as tx:
                tx.put_meta("device_id", self.device_id)
                tx.put_meta("role", self.role.value)
        elif rows["device_id"] != self.device_id or rows.get("role") != self.role.value:
            raise StoreError(
                f"{self.data_dir} belongs to {rows.get('role')} {rows['device_id']}, "
                f"not {self.role.value} {self.device_id}"
            )

    # -- rides and documents --------------------------------------------------------------------------

    def _own_ref(self, ride_id: str) -> DocRef | None:
        return schema.own_ref(ride_id, self.device_id, self.role)

    def start_ride(self, ride_id: str, t: float | None = None) -> None:
        """Create (or reopen) the ride here: its shared document and this device's own document, indexed.
        A bike or app also claims `active`. Idempotent."""
        schema.check_ride_id(ride_id)
        now = self._clock() if t is None else t
        self.documents.ensure_ride_row(ride_id)
        shared = self.ensure_doc(schema.shared_ref(ride_id))
        own = self._own_ref(ride_id)
        # One change per document: the header with the index entry, the header with the start claim.
        with self.documents.guard():
            index = {} if own is None else documents.index_values(shared, own)
            documents.write_once(shared, documents.header_values(shared, schema.shared_ref(ride_id)), index)
            self.persist(schema.shared_ref(ride_id).doc_id)
            if own is not None:
                doc = self.ensure_doc(own)
                claim = {}
                if own.kind in (DocKind.BIKE, DocKind.APP):
                    key = f"ride-start:{ride_id}:{self.device_id}"
                    claim = documents.claim_active_values(doc, now, key)
                documents.write_once(doc, documents.header_values(doc, own), claim)
                self.persist(own.doc_id)
        self.samples.start(ride_id)

    def refresh_ride(self, ride_id: str) -> list[str]:
        """Merge what other backend nodes committed to this ride in the shared storage, loading the ride if
        this replica does not hold it yet; returns the ids of the documents that changed here."""
        if not self.documents.is_listed(ride_id):
            if not self.load_ride(ride_id):
                return []
            return [e.ref.doc_id for e in self.documents.ride_entries(ride_id)]
        return self.documents.refresh_ride(ride_id)

    def ensure_doc(self, ref: DocRef) -> CrdtDoc:
        """The document `ref`, created empty (registered, nothing written) if this replica lacks it.

        A sync endpoint calls this for a document a peer offers; the empty document then receives it."""
        return self.documents.ensure_doc(ref)

    def rides(self) -> list[str]:
        """Every ride; on a lazy replica (the backend) those not in memory too."""
        if self.lazy:
            return sorted(set(self.documents.listed()) | {row.ride_id for row in self.storage.rides()})
        return self.documents.listed()

    def rides_after(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` rides after `after` in ride-id order, as `rides()` lists them, without reading
        every stored ride's row (a listing page over a large store)."""
        listed = [r for r in self.documents.listed() if after is None or r > after]
        if not self.lazy:
            return listed[:limit]
        return sorted(set(listed[:limit]) | set(self.storage.ride_ids(after, limit)))[:limit]

    def has_ride(self, ride_id: str) -> bool:
        """True if this replica holds the ride (a lazy one loads it from the storage if it is stored)."""
        return self.load_ride(ride_id) if self.lazy else self.documents.is_listed(ride_id)

    def _in_memory(self, ride_id: str) -> None:
        """Before a read of the ride as a whole: a lazy replica loads it at its first use."""
        if self.lazy and not self.documents.is_listed(ride_id):
            self.load_ride(ride_id)

    def load_ride(self, ride_id: str) -> bool:
        """True if this replica holds the ride, loading it from the storage if it is not in memory: not
        yet used on a lazy replica (the backend), released while idle, or written by another node over a
        shared database since this replica opened (DocumentStore.load_ride)."""
        if self.documents.is_listed(ride_id):
            return True
        if not self.documents.load_ride(ride_id):
            return False
        self.samples.recover(ride_id)
        return True

    def refresh(self, doc_id: str) -> bool:
        """Apply what the storage holds for `doc_id` that this replica's document lacks (another node's
        writes over a shared database); True if it changed."""
        return self.documents.refresh(doc_id)

    def ride_refs(self, ride_id: str) -> list[DocRef]:
        """The documents of `ride_id` this replica holds, plus any the shared index names that it lacks."""
        self._in_memory(ride_id)
        refs = self.documents.ride_refs(ride_id)
        # This device's own segments are what it holds: one only listed was dropped here (retired).
        return [
            r
            for r in refs
            if r.kind is not DocKind.SEGMENT or r.device != self.device_id or self.has_doc(r.doc_id)
        ]

    def ref(self, doc_id: str) -> DocRef:
        return self.documents.entry(doc_id).ref

    def has_doc(self, doc_id: str) -> bool:
        return doc_id in self.documents.docs

    def doc(self, doc_id: str) -> CrdtDoc:
        """The live document, e.g. for `engine.crdt.SyncSession`. Call `persist(doc_id)` after changing it
        and before acknowledging anything to anyone."""
        return self.documents.entry(doc_id).doc

    def heads(self, doc_id: str) -> list[bytes]:
        return self.doc(doc_id).heads()

    def changes_since(self, doc_id: str, heads: Iterable[bytes]) -> list[ChangeInfo]:
        return self.documents.changes_since(doc_id, heads)

    # -- persistence ----------------------------------------------------------------------------------

    def persist(self, doc_id: str, extra: Callable[[StorageTx], None] | None = None) -> int:
        """Store every change of `doc_id` not yet on disk as one checksummed record, in one transaction
        (with `extra` writes, if any). Returns the bytes written (0 if nothing was new)."""
        return self.documents.persist(doc_id, extra)

    def merge_remote(self, doc_id: str, other: CrdtDoc) -> list[bytes]:
        """Merge a (gated) fork into the document and persist; returns the new heads."""
        return self.documents.merge_remote(doc_id, other)

    def apply_changes(self, doc_id: str, chunks: Iterable[bytes]) -> list[bytes]:
        return self.documents.apply_changes(doc_id, chunks)

    def compact(self, doc_id: str) -> int:
        """Fold the document's change records into one snapshot (0 if skipped: see DocumentStore)."""
        return self.documents.compact(doc_id)

    def persist_if_dirty(self, doc_id: str) -> None:
        self.documents.persist_if_dirty(doc_id)

    # -- ride events ----------------------------------------------------------------------------------

    def edit_shared(self, ride_id: str, field_name: str, value: Any, t: float | None = None) -> str:
        """Edit a shared field (title, notes, rating, target.*). The policy, not Automerge, picks winners."""
        ref = schema.shared_ref(ride_id)
        shared = self.ensure_doc(ref)
        decoded = self.documents.docs[ref.doc_id].decode()
        seen = policy.current_edit_key(decoded.edits, field_name) if isinstance(decoded, SharedDoc) else None
        with self.documents.guard():
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

    def _owner_device(self, ride_id: str) -> str | None:
        owner = self.book.ride_owner(ride_id)
        return None if owner is None else owner.device

    def ride_docs(self, ride_id: str) -> RideDocs:
        self._in_memory(ride_id)
        return self.documents.ride_docs(ride_id, self._owner_device(ride_id))

    def view(self, ride_id: str) -> policy.RideView:
        self._in_memory(ride_id)
        return self.documents.view(ride_id, self._owner_device(ride_id))

    def decoding_once(self) -> AbstractContextManager[None]:
        """A block in which each device document is decoded at most once per heads (views resolved in it
        share the decode)."""
        return self.documents.views.decoding_once()

    def phase(self, ride_id: str) -> Phase:
        """The ride's phase from claims and finalization only (no sample decoding): cheap per message, and
        cached until one of the ride's device or backend documents changes (a gate asks on every message)."""
        self._in_memory(ride_id)
        return self.documents.phase(ride_id, self._owner_device(ride_id))

    def ride_json(self, ride_id: str) -> dict[str, Any]:
        """The resolved view (`GET /v1/rides/{id}`) plus this replica's sync state for the ride."""
        out = self.view(ride_id).to_json()
        out["sync"] = self.sync_status(ride_id).to_json()
        return out

    # -- sync -----------------------------------------------------------------------------------------

    def generate_sync(self, doc_id: str, session: SyncSession) -> bytes | None:
        """The next sync message for this connection's peer, or None when there is nothing to say."""
        with self.documents.guard():
            return session.generate(self.doc(doc_id))

    def receive_sync(self, doc_id: str, session: SyncSession, data: bytes) -> list[bytes]:
        """Apply a sync message from a trusted peer (a device receiving from the backend) and persist it
        before returning; returns the new heads. The backend gates what it receives: `gated_sync`."""
        entry = self.documents.docs[doc_id]
        with self.documents.guard():
            session.receive(entry.doc, data)
        self.persist_if_dirty(doc_id)
        return entry.doc.heads()

    # -- sync bookkeeping (bookkeeping.SyncBook) ------------------------------------------------------

    def set_peer_heads(self, doc_id: str, peer: str, heads: Iterable[bytes]) -> None:
        """Record the heads `peer` acknowledged for `doc_id` (durable)."""
        self.book.set_peer_heads(doc_id, peer, heads)

    def peer_heads(self, doc_id: str, peer: str) -> list[bytes]:
        return self.book.peer_heads(doc_id, peer)

    def acknowledged(self, ride_id: str, peer: str) -> bool:
        """True when `peer` acknowledged the current heads of every document of the ride held here."""
        return self.book.acknowledged(ride_id, peer)

    def set_sync_state(self, ride_id: str, state: SyncState, reason: str = "") -> None:
        self.book.set_sync_state(ride_id, state, reason)

    def sync_status(self, ride_id: str) -> SyncStatus:
        return self.book.sync_status(ride_id)

    def actor_owner(self, actor: bytes) -> tuple[str, Role] | None:
        """The device (and its role) an actor id is bound to, if any."""
        return self.book.actor_owner(actor)

    def bind_actor(self, actor: bytes, device: str, role: Role) -> bool:
        """Trust on first use: True if `actor` is (now) bound to `device`, False if another device owns it."""
        return self.book.bind_actor(actor, device, role)

    def ride_owner(self, ride_id: str) -> RideOwner | None:
        """The ride's owner, if one is bound (the backend's rule: engine/backend/README.md)."""
        return self.book.ride_owner(ride_id)

    def class_owners(self, class_id: str) -> list[RideOwner]:
        return self.book.class_owners(class_id)

    # -- live segments (segments.Segments; docs/architecture.md#live-segments) ---------------------------

    def retire_segments(
        self, ride_id: str, acked: Mapping[str, Sequence[bytes]] | None = None
    ) -> list[DocRef]:
        """Drop the ride's dead live segments from memory and storage; returns them. This device's own
        only once `acked` (doc id -> heads the backend acknowledged) covers the durable document that
        holds them (segments.Segments.retire)."""
        return self.segments.retire(ride_id, self.device_id, acked)

    def segment_retired(self, ref: DocRef) -> bool:
        """Whether the durable document held here names segment `ref` consolidated."""
        return self.segments.is_retired(ref)

    # -- retention and storage (retention.Retention) --------------------------------------------------

    def evictable(self, ride_id: str) -> str | None:
        """None if the ride may be evicted, else the reason it may not."""
        return self.retention.evictable(ride_id)

    def compact_ride(self, ride_id: str) -> int:
        """Compact every document of the ride; prune folded raw samples once the ride is reconciled."""
        return self.retention.compact_ride(ride_id)

    def evict(self, ride_id: str) -> None:
        self.retention.evict(ride_id)

    def apply_retention(self, retention: RetentionPolicy, now: float | None = None) -> dict[str, list[str]]:
        """Compact finalized, reconciled rides; evict those older than the policy allows."""
        return self.retention.apply_retention(retention, now)

    def storage_status(self) -> StorageStatus:
        return self.retention.storage_status()
