"""The storage port in memory: for unit tests and as the reference the conformance suite checks the
others against. `MemoryStorage(backing)` over the same `MemoryBacking` is a reopen after a clean close.
Write-behind is accepted and changes nothing (every write is visible at once)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from engine.store.port import ChangeRecord, Job, OwnerRow, RawSample, RideRow, Snapshot


@dataclass
class MemoryBacking:
    meta: dict[str, str] = field(default_factory=dict)
    rides: dict[str, RideRow] = field(default_factory=dict)
    docs: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    changes: dict[str, list[ChangeRecord]] = field(default_factory=dict)
    next_change: int = 1
    samples: dict[tuple[str, str, int], RawSample] = field(default_factory=dict)
    peer_heads: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    actors: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    owners: dict[str, OwnerRow] = field(default_factory=dict)
    finalized: dict[str, tuple[str, float]] = field(default_factory=dict)


class MemoryTx:
    def __init__(self, data: MemoryBacking) -> None:
        self.data = data

    def put_meta(self, key: str, value: str) -> None:
        self.data.meta[key] = value

    def add_ride(self, ride_id: str, created: float, state: str, reason: str) -> None:
        self.data.rides.setdefault(ride_id, RideRow(ride_id, state, reason, created))

    def set_sync_state(self, ride_id: str, state: str, reason: str, updated: float) -> None:
        if ride_id in self.data.rides:
            self.data.rides[ride_id] = RideRow(ride_id, state, reason, updated)

    def add_doc(self, doc_id: str, ride_id: str, kind: str, device: str) -> None:
        self.data.docs.setdefault(doc_id, (doc_id, ride_id, kind, device))

    def append_change(self, doc_id: str, data: bytes, heads: list[bytes]) -> None:
        record = ChangeRecord(self.data.next_change, data, sorted(heads), intact=bool(data))
        self.data.next_change += 1
        self.data.changes.setdefault(doc_id, []).append(record)

    def put_snapshot(self, doc_id: str, data: bytes, heads: list[bytes]) -> None:
        self.data.snapshots[doc_id] = Snapshot(data, sorted(heads), intact=True)
        self.data.changes.pop(doc_id, None)

    def log_samples(self, rows: Iterable[tuple[str, str, int, bytes]]) -> None:
        for ride_id, device, seq, data in rows:
            self.data.samples.setdefault((ride_id, device, seq), RawSample(device, seq, data, True, False))

    def mark_folded(self, ride_id: str, device: str, seqs: Iterable[int]) -> None:
        for seq in seqs:
            row = self.data.samples.get((ride_id, device, seq))
            if row is not None:
                self.data.samples[(ride_id, device, seq)] = RawSample(device, seq, row.data, row.intact, True)

    def prune_folded(self, ride_id: str) -> None:
        for key in [k for k, row in self.data.samples.items() if k[0] == ride_id and row.folded]:
            del self.data.samples[key]

    def delete_ride(self, ride_id: str, doc_ids: Iterable[str]) -> None:
        for doc_id in doc_ids:
            self.data.snapshots.pop(doc_id, None)
            self.data.changes.pop(doc_id, None)
            self.data.docs.pop(doc_id, None)
            for peer_key in [k for k in self.data.peer_heads if k[0] == doc_id]:
                del self.data.peer_heads[peer_key]
        for key in [k for k in self.data.samples if k[0] == ride_id]:
            del self.data.samples[key]
        self.data.rides.pop(ride_id, None)

    def delete_doc(self, doc_id: str) -> None:
        self.data.snapshots.pop(doc_id, None)
        self.data.changes.pop(doc_id, None)
        self.data.docs.pop(doc_id, None)
        for peer_key in [k for k in self.data.peer_heads if k[0] == doc_id]:
            del self.data.peer_heads[peer_key]

    def set_peer_heads(self, doc_id: str, peer: str, heads: list[bytes], updated: float) -> None:
        self.data.peer_heads[(doc_id, peer)] = sorted(heads)

    def bind_actor(self, actor: bytes, device: str, role: str, bound: float) -> None:
        self.data.actors.setdefault(actor, (device, role))

    def add_ride_owner(self, owner: OwnerRow) -> None:
        self.data.owners.setdefault(owner.ride_id, owner)

    def update_ride_owner(self, ride_id: str, rider: str | None, class_id: str | None) -> None:
        old = self.data.owners.get(ride_id)
        if old is not None:
            self.data.owners[ride_id] = OwnerRow(ride_id, old.device, rider, class_id, old.bound)

    def claim_finalization(self, ride_id: str, by: str, at: float) -> bool:
        if ride_id in self.data.finalized:
            return False
        self.data.finalized[ride_id] = (by, at)
        return True


class MemoryStorage:
    """`StoragePort` in a `MemoryBacking`."""

    def __init__(self, backing: MemoryBacking | None = None) -> None:
        self.backing = backing if backing is not None else MemoryBacking()

    @contextmanager
    def transaction(self) -> Iterator[MemoryTx]:
        # All or nothing: work on a copy, swap it in on success.
        draft = copy.deepcopy(self.backing)
        yield MemoryTx(draft)
        self.backing.__dict__.update(draft.__dict__)

    def write(self, job: Job) -> None:
        with self.transaction() as tx:
            job(tx)

    def start_write_behind(
        self, max_group: int, on_group: Callable[[int, float, float], None] | None
    ) -> None:
        pass

    def flush(self) -> None:
        pass

    async def flushed(self) -> None:
        pass

    def close(self) -> None:
        pass

    def claim_actor(self, actor: bytes, device: str, role: str, bound: float) -> tuple[str, str]:
        with self.transaction() as tx:
            tx.bind_actor(actor, device, role, bound)
        return self.backing.actors[actor]

    def claim_ride_owner(self, owner: OwnerRow) -> OwnerRow:
        with self.transaction() as tx:
            tx.add_ride_owner(owner)
        return self.backing.owners[owner.ride_id]

    def complete_ride_owner(self, owner: OwnerRow) -> None:
        self.write(lambda tx: tx.update_ride_owner(owner.ride_id, owner.rider, owner.class_id))

    def meta(self) -> dict[str, str]:
        return dict(self.backing.meta)

    def docs(self, ride_id: str | None = None) -> list[tuple[str, str, str, str]]:
        rows = [self.backing.docs[d] for d in sorted(self.backing.docs)]
        return rows if ride_id is None else [row for row in rows if row[1] == ride_id]

    def snapshot(self, doc_id: str) -> Snapshot | None:
        return self.backing.snapshots.get(doc_id)

    def change_records(self, doc_id: str) -> Iterator[ChangeRecord]:
        return iter(list(self.backing.changes.get(doc_id, [])))

    def rides(self) -> list[RideRow]:
        return list(self.backing.rides.values())

    def ride_ids(self, after: str | None, limit: int) -> list[str]:
        return sorted(r for r in self.backing.rides if after is None or r > after)[:limit]

    def ride(self, ride_id: str) -> RideRow | None:
        return self.backing.rides.get(ride_id)

    def sample_rides(self) -> set[str]:
        return {k[0] for k in self.backing.samples}

    def raw_samples(self, ride_id: str) -> Iterator[RawSample]:
        rows = [row for k, row in self.backing.samples.items() if k[0] == ride_id]
        return iter(sorted(rows, key=lambda r: (r.seq, r.device)))

    def max_seq(self, ride_id: str, device: str) -> int | None:
        return max((k[2] for k in self.backing.samples if k[0] == ride_id and k[1] == device), default=None)

    def peer_heads(self, doc_id: str, peer: str) -> list[bytes] | None:
        heads = self.backing.peer_heads.get((doc_id, peer))
        return None if heads is None else list(heads)

    def actor(self, actor: bytes) -> tuple[str, str] | None:
        return self.backing.actors.get(actor)

    def ride_owner(self, ride_id: str) -> OwnerRow | None:
        return self.backing.owners.get(ride_id)

    def class_owners(self, class_id: str) -> list[OwnerRow]:
        return sorted(
            (o for o in self.backing.owners.values() if o.class_id == class_id), key=lambda o: o.ride_id
        )

    def usage(self) -> tuple[int, int]:
        size = sum(len(r.data) for rs in self.backing.changes.values() for r in rs)
        size += sum(len(s.data) for s in self.backing.snapshots.values())
        return size + sum(len(r.data) for r in self.backing.samples.values()), 1 << 40
