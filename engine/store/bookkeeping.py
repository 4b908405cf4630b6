"""Sync bookkeeping: what each peer acknowledged, each ride's sync state, which device each actor id is
bound to, and (on the backend) which bike owns each ride. Every write goes through the storage port; reads
come from memory where this process wrote them, so they never depend on whether a write-behind commit has
happened yet."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from engine.ride import schema
from engine.ride.schema import Role
from engine.store.docstore import DocumentStore
from engine.store.lru import LruMap
from engine.store.model import RideOwner, SyncState, SyncStatus, UnknownRide
from engine.store.port import Job, OwnerRow

# Actor bindings and ride owners kept in memory (each; the storage answers the rest). The backend asks on
# every sync message and HTTP write, for the rides in use: a few per connection. Bounded, because the
# storage holds one of each for every ride ever served.
CACHED_BINDINGS = 8192


class SyncBook:
    def __init__(self, docs: DocumentStore, *, clock: Callable[[], float]) -> None:
        self.docs = docs
        self.storage = docs.storage
        self._clock = clock
        self._actors: LruMap[bytes, tuple[str, Role]] = LruMap(CACHED_BINDINGS)
        self._owners: LruMap[str, RideOwner] = LruMap(CACHED_BINDINGS)
        # Acknowledged heads of documents this replica does not hold (held ones keep theirs in OpenDoc).
        self._acked_elsewhere: dict[tuple[str, str], list[bytes]] = {}

    # -- peer heads -----------------------------------------------------------------------------------

    def set_peer_heads(self, doc_id: str, peer: str, heads: Iterable[bytes]) -> None:
        """Record the heads `peer` acknowledged for `doc_id` (durable)."""
        heads = list(heads)
        now = self._clock()
        job: Job = lambda tx: tx.set_peer_heads(doc_id, peer, heads, now)  # noqa: E731
        entry = self.docs.docs.get(doc_id)
        if entry is not None:
            self.docs.write(entry.ref.ride_id, job)
            entry.acked[peer] = sorted(heads)
        else:
            self.storage.write(job)
            self._acked_elsewhere[(doc_id, peer)] = sorted(heads)

    def peer_heads(self, doc_id: str, peer: str) -> list[bytes]:
        entry = self.docs.docs.get(doc_id)
        known = self._acked_elsewhere.get((doc_id, peer)) if entry is None else entry.acked.get(peer)
        if known is not None:
            return list(known)
        return self.storage.peer_heads(doc_id, peer) or []

    def acknowledged(self, ride_id: str, peer: str) -> bool:
        """True when `peer` acknowledged the current heads of every document of the ride held here."""
        entries = self.docs.ride_entries(ride_id)
        return bool(entries) and all(self.peer_heads(e.ref.doc_id, peer) == e.doc.heads() for e in entries)

    # -- sync state -----------------------------------------------------------------------------------

    def set_sync_state(self, ride_id: str, state: SyncState, reason: str = "") -> None:
        state = SyncState(state)
        ride = self.docs.ensure_ride_row(ride_id)
        now = self._clock()
        self.docs.write(ride_id, lambda tx: tx.set_sync_state(ride_id, state.value, reason, now))
        ride.status = SyncStatus(ride_id, state, reason, now)

    def sync_status(self, ride_id: str) -> SyncStatus:
        ride = self.docs.rides.get(ride_id)
        if ride is not None and ride.status is not None:
            return ride.status
        row = self.storage.ride(ride_id)
        if row is None:
            raise UnknownRide(f"no ride {ride_id} in this replica")
        return SyncStatus(ride_id, SyncState(row.state), row.reason, row.updated)

    # -- actors ---------------------------------------------------------------------------------------

    def actor_owner(self, actor: bytes) -> tuple[str, Role] | None:
        """The device (and its role) an actor id is bound to, if any."""
        known = self._actors.get(actor)
        if known is not None:
            return known
        row = self.storage.actor(actor)
        if row is None:
            return None
        return self._actors.put(actor, (row[0], Role(row[1])))

    def bind_actor(self, actor: bytes, device: str, role: Role) -> bool:
        """Trust on first use: bind `actor` to `device` unless it is bound already. True if the actor is
        (now) bound to this device, False if another device owns it."""
        owner = self._actors.get(actor)
        if owner is None:
            # Decided by the storage, so two backend nodes over one database never bind it twice.
            held = self.storage.claim_actor(actor, device, role.value, self._clock())
            owner = self._actors.put(actor, (held[0], Role(held[1])))
        return owner[0] == device

    # -- ride owners ----------------------------------------------------------------------------------

    def ride_owner(self, ride_id: str) -> RideOwner | None:
        """The ride's owner, if one is bound (the backend's rule: engine/backend/README.md). One not in
        memory is looked up in the storage (which also answers for claims not committed yet): over a
        shared database another node may have bound it (only found owners are kept; an owner's device
        never changes)."""
        owner = self._owners.get(ride_id)
        if owner is None:
            row = self.storage.ride_owner(ride_id)
            if row is not None:
                owner = self._owners.put(ride_id, _owner(row))
        return owner

    def class_owners(self, class_id: str) -> list[RideOwner]:
        """Owners of the rides their owner put in `class_id`, from the storage."""
        return [_owner(row) for row in self.storage.class_owners(class_id)]

    def bind_ride_owner(
        self, ride_id: str, device: str, *, rider: str | None = None, class_id: str | None = None
    ) -> RideOwner:
        """Trust on first use, as for actors: `device` owns `ride_id` unless someone owns it already.
        Returns the owner, whoever it is (compare its `device`). The storage decides (`claim_ride_owner`):
        on SQLite check and set run on the store's thread with nothing in between, on PostgreSQL one
        conditional insert decides for every node, so two devices can never both win. Owners outlive
        eviction, so a ride id never changes hands."""
        schema.check_ride_id(ride_id)
        owner = self._owners.get(ride_id)
        if owner is None:
            # Another node, or this one before the row left memory, may have bound it: the storage decides.
            held = self.storage.claim_ride_owner(OwnerRow(ride_id, device, rider, class_id, self._clock()))
            owner = self._owners.put(ride_id, _owner(held))
        return owner

    def complete_ride_owner(
        self, ride_id: str, *, rider: str | None = None, class_id: str | None = None
    ) -> RideOwner:
        """Fill in the owner's rider and class where they are still unset; a value once set stays."""
        owner = self.ride_owner(ride_id)
        if owner is None:
            raise UnknownRide(f"ride {ride_id} has no owner to complete")
        new = replace(
            owner,
            rider=owner.rider if owner.rider is not None else rider,
            class_id=owner.class_id if owner.class_id is not None else class_id,
        )
        if new != owner:
            self._owners.put(ride_id, new)
            self.storage.complete_ride_owner(
                OwnerRow(ride_id, new.device, new.rider, new.class_id, new.bound)
            )
        return new


def _owner(row: OwnerRow) -> RideOwner:
    return RideOwner(row.ride_id, row.device, row.rider, row.class_id, row.bound)
