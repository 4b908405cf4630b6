"""The backend replica: the core plus end events, finalization, ride owners and the gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from engine.ride import documents, policy, schema
from engine.ride.schema import DocRef, Phase, Role
from engine.store.core import ReplicaCore
from engine.store.db import StoreError
from engine.store.gate import Backlog, GatedSync
from engine.store.model import RideOwner


class BackendReplica(ReplicaCore):
    """The backend's replica: gates what devices send, records end events, finalizes, binds ride owners."""

    roles: ClassVar[frozenset[Role]] = frozenset({Role.BACKEND})

    def record_end_event(
        self, ride_id: str, key: str, device: str, role: str, t: float | None = None
    ) -> bool:
        """Backend: an end event (idempotency key) received from a device. True the first time only."""
        own = self._own_backend(ride_id)
        with self.documents.guard():
            wrote = documents.record_end_event(
                self.doc(own.doc_id), key, self._clock() if t is None else t, device, role
            )
        self.persist(own.doc_id)
        return wrote

    def finalize(self, ride_id: str, t: float | None = None) -> policy.RideView:
        """Backend: write the official totals once the bike's declared samples are all here. Exactly once
        per ride, also across backend nodes over one database: the storage's `claim_finalization` and the
        finalization change commit in one transaction, and a node that loses the claim loads the
        winner's finalization instead of writing its own."""
        return self.finalize_here(ride_id, t)[0]

    def finalize_here(self, ride_id: str, t: float | None = None) -> tuple[policy.RideView, bool]:
        """`finalize`, and whether this replica wrote the finalization: False if the ride was finalized
        already, here or by another node (which won the claim), so that only the writer counts it."""
        own = self._own_backend(ride_id)
        view = self.view(ride_id)
        if view.phase is Phase.FINALIZED:
            return view, False
        if not view.ready_to_finalize:
            raise StoreError(
                f"ride {ride_id} is not ready to finalize: {view.phase.label}, missing {view.missing_samples}"
            )
        at = self._clock() if t is None else t
        won = self.documents.write_once(
            own.doc_id,
            lambda tx: tx.claim_finalization(ride_id, self.actor.hex(), at),
            lambda doc: documents.write_finalization(doc, at, view.totals, view.samples),
        )
        if not won:
            # Another node (over the same database) finalized first: take its finalization.
            self.documents.refresh(own.doc_id)
        return self.view(ride_id), won

    def _own_backend(self, ride_id: str) -> DocRef:
        if self.role is not Role.BACKEND:
            raise StoreError("only the backend writes end events and finalization")
        ref = schema.own_ref(ride_id, self.device_id, Role.BACKEND)
        assert ref is not None
        doc = self.ensure_doc(ref)
        with self.documents.guard():
            documents.init_doc(doc, ref)
        shared_ref = schema.shared_ref(ride_id)
        shared = self.ensure_doc(shared_ref)
        with self.documents.guard():
            documents.index_doc(shared, ref)
        self.persist_if_dirty(shared_ref.doc_id)
        return ref

    # -- the working set (engine/backend/workingset.py decides when) ------------------------------------

    def watch_loads(self, callback: Callable[[str], None]) -> None:
        """`callback(ride_id)` after each ride is read from the storage into memory, whatever asked."""
        self.documents.on_load = callback

    def loaded_rides(self) -> list[str]:
        """The rides held in memory."""
        return list(self.documents.rides)

    def is_loaded(self, ride_id: str) -> bool:
        return ride_id in self.documents.rides

    def release_ride(self, ride_id: str) -> bool:
        """Drop the ride's documents and per-ride state from memory, not from the storage; the next
        `load_ride` reads them back. False (nothing dropped) if it is not held or something of it is not
        yet committed: a change not persisted, or any write still in the write-behind queue (call after
        `flushed()`). The caller makes sure no connection holds the ride's documents."""
        writer = self.writer
        if writer is not None and writer.pending:
            return False
        return self.documents.release(ride_id)

    def gated_sync(self, doc_id: str, backlog: Backlog | None = None) -> GatedSync:
        """A new gated sync of `doc_id` for one connection (engine/store/gate.py): `receive(data, device=,
        role=)` and `generate()`. A server keeps one per connection and document, all sharing the
        connection's `backlog` (the limit on changes queued unapplied)."""
        self.ref(doc_id)
        return GatedSync(self, doc_id, backlog=backlog)

    def bind_ride_owner(
        self, ride_id: str, device: str, *, rider: str | None = None, class_id: str | None = None
    ) -> RideOwner:
        """Trust on first use: `device` owns `ride_id` unless someone owns it already (SyncBook)."""
        return self.book.bind_ride_owner(ride_id, device, rider=rider, class_id=class_id)

    def complete_ride_owner(
        self, ride_id: str, *, rider: str | None = None, class_id: str | None = None
    ) -> RideOwner:
        """Fill in the owner's rider and class where they are still unset; a value once set stays."""
        return self.book.complete_ride_owner(ride_id, rider=rider, class_id=class_id)
