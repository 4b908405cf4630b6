"""The storage port: what the layers above (documents, sample log, sync bookkeeping, retention) need from a
database, and nothing more. `engine/store/sqlite.py` is the embedded implementation, `memory.py` one for
unit tests; every implementation passes `tests/contracts/test_storage_port.py`.

Reads are plain calls. Writes are jobs, `Callable[[StorageTx], object]`, that the port runs in one
transaction: `write(job)` commits before it returns, or, once `start_write_behind()` was called, queues it
(then the owner awaits `flushed()` before acknowledging anything). `transaction()` always commits on exit.
Jobs commit in the order they were written, so storage always holds a prefix of the writes; with
write-behind, reads see only what is committed (the layers above keep what they wrote in memory, or
`flush()` first). A full disk
raises `StorageFull` from a synchronous write.

Blobs carry their integrity with them: an implementation checks each stored record (the SQLite file keeps a
CRC32 per row) and reports a damaged one as `intact=False` rather than raising, so recovery can skip it and
say so. Heads are lists of 32-byte change hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A document's compacted state. `data` may be empty or damaged: see `intact`."""

    data: bytes
    heads: list[bytes]
    intact: bool


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One persisted batch of changes (the changes of one commit, concatenated), in write order."""

    id: int
    data: bytes
    heads: list[bytes]  # the document's heads once this record is applied ([] if not intact)
    intact: bool


@dataclass(frozen=True, slots=True)
class RawSample:
    """One row of the durable sample log."""

    device: str
    seq: int
    data: bytes
    intact: bool
    folded: bool


@dataclass(frozen=True, slots=True)
class RideRow:
    ride_id: str
    state: str
    reason: str
    updated: float


@dataclass(frozen=True, slots=True)
class OwnerRow:
    ride_id: str
    device: str
    rider: str | None
    class_id: str | None
    bound: float


class StorageTx(Protocol):
    """The writes, inside one transaction."""

    def put_meta(self, key: str, value: str) -> None: ...

    def add_ride(self, ride_id: str, created: float, state: str, reason: str) -> None:
        """Insert the ride's row unless it exists."""

    def set_sync_state(self, ride_id: str, state: str, reason: str, updated: float) -> None: ...

    def add_doc(self, doc_id: str, ride_id: str, kind: str, device: str) -> None:
        """Register a document unless it is registered."""

    def append_change(self, doc_id: str, data: bytes, heads: list[bytes]) -> None: ...

    def put_snapshot(self, doc_id: str, data: bytes, heads: list[bytes]) -> None:
        """Replace the document's snapshot and delete every change record written before it."""

    def log_samples(self, rows: Iterable[tuple[str, str, int, bytes]]) -> None:
        """(ride, device, seq, packed record) rows, unfolded; a (ride, device, seq) already logged is kept."""

    def mark_folded(self, ride_id: str, device: str, seqs: Iterable[int]) -> None: ...

    def prune_folded(self, ride_id: str) -> None:
        """Delete the ride's folded raw samples."""

    def delete_ride(self, ride_id: str, doc_ids: Iterable[str]) -> None:
        """Delete the ride, its documents (snapshots, records, peer heads) and its raw samples. Actor
        bindings and ride owners stay."""

    def delete_doc(self, doc_id: str) -> None:
        """Delete one document: its registration, snapshot, change records and peer heads (a retired live
        segment, docs/architecture.md#live-segments). Its ride, the ride's other documents and the raw
        samples stay. Deleting a document that is not stored does nothing."""

    def set_peer_heads(self, doc_id: str, peer: str, heads: list[bytes], updated: float) -> None: ...

    def bind_actor(self, actor: bytes, device: str, role: str, bound: float) -> None:
        """Bind `actor` unless it is bound already (the first binding stays)."""

    def add_ride_owner(self, owner: OwnerRow) -> None:
        """Insert unless the ride has an owner already (the first owner stays)."""

    def update_ride_owner(self, ride_id: str, rider: str | None, class_id: str | None) -> None: ...

    def claim_finalization(self, ride_id: str, by: str, at: float) -> bool:
        """The conditional write that makes finalization happen once per ride: True for the one
        transaction (on any node) that claims the ride first, False for every other. Claims outlive
        `delete_ride`."""


Job = Callable[[StorageTx], object]


class StoragePort(Protocol):
    """A replica's durable storage (see the module docstring)."""

    # -- writes -----------------------------------------------------------------------------------------

    def write(self, job: Job) -> None:
        """Run `job` in a transaction: committed on return, or queued with write-behind."""

    def transaction(self) -> AbstractContextManager[StorageTx]:
        """A transaction committed on exit (rolled back on an exception), also with write-behind."""

    def start_write_behind(
        self, max_group: int, on_group: Callable[[int, float, float], None] | None
    ) -> None:
        """From now on `write` queues jobs, committed in groups off the owner's thread."""

    def flush(self) -> None:
        """Return once everything written so far is committed."""

    async def flushed(self) -> None:
        """Awaitable `flush`."""

    def close(self) -> None: ...

    # -- claims: decided and committed before they return, so that several nodes over one database agree --

    def claim_actor(self, actor: bytes, device: str, role: str, bound: float) -> tuple[str, str]:
        """Bind `actor` to (device, role) unless it is bound; returns the binding that holds (the first)."""

    def claim_ride_owner(self, owner: OwnerRow) -> OwnerRow:
        """Make `owner` the ride's owner unless it has one; returns the owner that holds (the first)."""

    def complete_ride_owner(self, owner: OwnerRow) -> None:
        """Write the rider and class of the ride's owner (the caller keeps values once set)."""

    # -- reads ------------------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]: ...

    def docs(self, ride_id: str | None = None) -> list[tuple[str, str, str, str]]:
        """Every registered document (of `ride_id` if given): (doc id, ride id, kind, device), by doc id."""

    def snapshot(self, doc_id: str) -> Snapshot | None: ...

    def change_records(self, doc_id: str) -> Iterator[ChangeRecord]:
        """The document's change records in write order (streamed: consume before the next write)."""

    def rides(self) -> list[RideRow]: ...

    def ride_ids(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` ride ids greater than `after` (all if None), in code-point order: one page of
        a listing that must not read every row of a large store."""

    def ride(self, ride_id: str) -> RideRow | None: ...

    def sample_rides(self) -> set[str]:
        """Every ride with a row in the sample log."""

    def raw_samples(self, ride_id: str) -> Iterator[RawSample]:
        """The ride's logged samples, by seq (streamed: consume before the next write)."""

    def max_seq(self, ride_id: str, device: str) -> int | None: ...

    def peer_heads(self, doc_id: str, peer: str) -> list[bytes] | None: ...

    def actor(self, actor: bytes) -> tuple[str, str] | None:
        """(device, role) the actor is bound to."""

    def class_owners(self, class_id: str) -> list[OwnerRow]:
        """Owners of the rides their owner put in `class_id` (committed, or claimed through this
        storage), by ride id."""

    def ride_owner(self, ride_id: str) -> OwnerRow | None:
        """The ride's owner (committed, or claimed through this storage)."""

    def usage(self) -> tuple[int, int]:
        """(bytes the storage takes, bytes free where it grows)."""
