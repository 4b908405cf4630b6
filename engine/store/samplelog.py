"""The sample log of a bike or app replica: samples are durable the moment `append_samples` returns, and
folded into the device's own document in batches.

Write path of a sample:
1. `append_samples` writes the packed records to the storage's raw sample log in one synchronous
   transaction (SQLite: fsync, synchronous=FULL) before returning: from then on they survive kill -9 and
   power cuts. Only the sample in flight can be lost.
2. `fold` writes the pending samples into the device's own document as one Automerge change, and in the
   same transaction stores that change and marks the raw rows folded. `maybe_fold` decides when: with a
   live link to the backend every `fold_interval_s` (or `max_batch` samples), so the backend and its
   dashboard see the ride within seconds; without one only every `offline_fold_interval_s`, since nobody
   can see a fold then and every change costs its own metadata on the wire later (the raw log, not the
   fold, is what survives a crash). The first call with the link back folds the whole backlog at once,
   as one change (engine/ride/documents.py: one blob per hour of samples).
3. `recover` (at open) replays every raw row whose (device, seq) the document does not hold, so it is
   idempotent whatever point the crash hit. Raw rows stay until the ride is reconciled and compacted, so
   a corrupt change record costs nothing that the raw log still has.
A full disk keeps samples in memory (`Ride.unlogged`), logs CRITICAL and writes them as soon as space
returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from engine.crdt import Scalar
from engine.ride import batches, documents, schema
from engine.ride.samples import Sample, SampleDecodeError, decode_record, encode_record
from engine.ride.schema import DocKind, DocRef, Role
from engine.store.db import StorageFull, StoreError
from engine.store.docstore import DocumentStore
from engine.store.model import UnknownRide
from engine.store.port import StorageTx

log = logging.getLogger(__name__)

DEFAULT_FOLD_INTERVAL_S = 10.0
DEFAULT_MAX_BATCH = 100
# Offline, at most one fold an hour (a full key, documents.MAX_SAMPLES_PER_KEY at 1 Hz): every fold saved
# is ~100 bytes of change metadata less to reconcile, and a batch compresses better whole (`ridesync bench
# store`: offline_fold_interval). Memory holds at most that hour of samples.
DEFAULT_OFFLINE_FOLD_INTERVAL_S = 3600.0


class SampleLog:
    def __init__(
        self,
        docs: DocumentStore,
        *,
        device_id: str,
        role: Role,
        clock: Callable[[], float],
        on_append: Callable[[], None],
        fold_interval_s: float = DEFAULT_FOLD_INTERVAL_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        offline_fold_interval_s: float = DEFAULT_OFFLINE_FOLD_INTERVAL_S,
        batch_schema: int = batches.DEFAULT_BATCH_SCHEMA,
    ) -> None:
        self.docs = docs
        self.device_id = device_id
        self.role = role
        self.fold_interval_s = fold_interval_s
        self.max_batch = max_batch
        self.offline_fold_interval_s = offline_fold_interval_s
        self.batch_schema = batches.check_batch_schema(batch_schema)
        self._clock = clock
        self._on_append = on_append  # storage watch, after every append

    def own_ref(self, ride_id: str) -> DocRef | None:
        return schema.own_ref(ride_id, self.device_id, self.role)

    def start(self, ride_id: str) -> None:
        """The ride records here from now on (idempotent)."""
        ride = self.docs.ride(ride_id)
        if ride.seqs is None:
            ride.seqs = set()
        if ride.pending is None:
            ride.pending = {}
        if ride.last_fold is None:
            ride.last_fold = self._clock()

    def recover(self, ride_id: str) -> None:
        """Replay the raw rows the device's document lacks (at open; see the module docstring)."""
        own = self.own_ref(ride_id)
        if own is None or own.kind not in (DocKind.BIKE, DocKind.APP):
            return
        report = self.docs.recovery
        ride = self.docs.ride(ride_id)
        if ride.seqs is None:
            ride.seqs = self.docs.doc_seqs(own)
        if ride.pending is None:
            ride.pending = {}
        seqs, pending = ride.seqs, ride.pending
        stale_folded: list[int] = []
        for row in self.docs.storage.raw_samples(ride_id):
            device, seq = row.device, row.seq
            if not row.intact:
                report.problem(f"ride {ride_id}: raw sample {device}/{seq} checksum mismatch; skipped")
                report.raw_skipped += 1
                continue
            if device != self.device_id:
                continue
            if seq in seqs:
                if not row.folded:
                    stale_folded.append(seq)
                continue
            try:
                sample = decode_record(row.data)
            except SampleDecodeError as exc:
                report.problem(f"ride {ride_id}: raw sample {device}/{seq} undecodable ({exc}); skipped")
                report.raw_skipped += 1
                continue
            if sample.seq != seq:
                report.problem(f"ride {ride_id}: raw sample {seq} holds seq {sample.seq}; skipped")
                report.raw_skipped += 1
                continue
            pending[seq] = sample
        if stale_folded:
            device_id = self.device_id
            self.docs.storage.write(lambda tx: tx.mark_folded(ride_id, device_id, stale_folded))
        if pending:
            report.raw_replayed += len(pending)
            self.fold(ride_id)

    def append_samples(self, ride_id: str, samples: Iterable[Sample]) -> int:
        """Log samples in one durable transaction; returns how many were new."""
        ride = self.docs.rides.get(ride_id)
        if ride is None or ride.pending is None or ride.seqs is None:
            raise UnknownRide(f"ride {ride_id} is not started on this replica")
        seqs, pending = ride.seqs, ride.pending
        rows = []
        fresh = []
        for sample in samples:
            if sample.seq in seqs or sample.seq in pending:
                continue
            rows.append((ride_id, self.device_id, sample.seq, bytes(encode_record(sample, 0))))
            fresh.append(sample.normalized())
        backlog = ride.unlogged
        if rows or backlog:
            try:
                with self.docs.storage.transaction() as tx:
                    tx.log_samples(backlog + rows)
                ride.unlogged = []
            except StorageFull as exc:
                # Keep recording: the samples stay in memory (and in the document) and are logged as soon
                # as space returns. Only a crash before then can lose them, and that is said loudly.
                ride.unlogged = backlog + rows
                log.critical(
                    "storage full; samples held in memory only",
                    extra={"ride_id": ride_id, "unlogged": len(backlog) + len(rows), "error": str(exc)},
                )
            for sample in fresh:
                pending[sample.seq] = sample
            if fresh and ride.top is not None:
                ride.top = max(ride.top, *(s.seq for s in fresh))
        self._on_append()
        return len(rows)

    def unlogged(self) -> int:
        return sum(len(r.unlogged) for r in self.docs.rides.values())

    def pending_samples(self, ride_id: str) -> int:
        ride = self.docs.rides.get(ride_id)
        return 0 if ride is None or ride.pending is None else len(ride.pending)

    def next_seq(self, ride_id: str) -> int:
        """The first seq after every sample this device recorded for the ride (survives restarts)."""
        ride = self.docs.ride(ride_id)
        if ride.top is None:
            # Once per ride and open; raw rows may be pruned after compaction, so the document counts too.
            ride.top = max(max(ride.seqs or (), default=-1), max(ride.pending or (), default=-1))
        logged = self.docs.storage.max_seq(ride_id, self.device_id)
        return max(ride.top, -1 if logged is None else logged) + 1

    def maybe_fold(self, ride_id: str, now: float | None = None, *, online: bool = True) -> int:
        """Fold when it is due: `online` (a live link to the backend) every `fold_interval_s` or
        `max_batch` samples; offline every `offline_fold_interval_s` (or a full key's worth of samples)."""
        ride = self.docs.rides.get(ride_id)
        if ride is None or not ride.pending:
            return 0
        now = self._clock() if now is None else now
        since = now - (ride.last_fold or 0.0)
        if online:
            due = len(ride.pending) >= self.max_batch or since >= self.fold_interval_s
        else:
            due = len(ride.pending) >= documents.MAX_SAMPLES_PER_KEY or since >= self.offline_fold_interval_s
        return self.fold(ride_id, now) if due else 0

    def fold(self, ride_id: str, now: float | None = None, *, extra: dict[str, Scalar] | None = None) -> int:
        """Write the pending samples into this device's document: one change (with the `extra` keys, if
        any, e.g. the end claim), one transaction. Writes nothing, `extra` neither, when none is pending."""
        ride = self.docs.ride(ride_id)
        ride.last_fold = self._clock() if now is None else now
        pending = ride.pending
        if not pending:
            return 0
        own = self.own_ref(ride_id)
        if own is None or own.kind not in (DocKind.BIKE, DocKind.APP):
            raise StoreError(f"a {self.role.value} replica records no samples")
        doc = self.docs.ensure_doc(own)
        batch = [pending[s] for s in sorted(pending)]
        with self.docs.guard():
            values = {**documents.header_values(doc, own), **(extra or {})}
            documents.add_samples(doc, batch, batch_schema=self.batch_schema, extra=values)
        seqs = [s.seq for s in batch]
        device_id = self.device_id

        def mark(tx: StorageTx) -> None:
            tx.mark_folded(ride_id, device_id, seqs)

        try:
            self.docs.persist(own.doc_id, extra=mark)
        except StorageFull as exc:
            # The change is in the document; persist() writes it with the next one that fits. Recovery
            # marks these raw rows folded then, since the document holds their seqs.
            log.critical("storage full; fold kept in memory", extra={"ride_id": ride_id, "error": str(exc)})
        ride = self.docs.ride(ride_id)  # (a panic above reloads; the ride object stays the same)
        if ride.seqs is None:
            ride.seqs = set()
        ride.seqs.update(seqs)
        pending.clear()
        return len(batch)
