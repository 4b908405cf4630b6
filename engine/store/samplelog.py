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
   A bike with live segments (`segment_interval_s`) folds online into its open live segment instead
   (`_fold_segment`: a document of its own, so the durable document is not made of 360 changes an
   hour) and consolidates every `segment_interval_s`, when the link drops and at the end: `fold` writes
   every sample not yet in the durable document (the segment's and the pending ones) there as one
   change, naming the segments it covers (`segment.<n>`). The raw log's `folded` mark means "in some
   document"; "in the durable document" is never stored beside it, it is read from the document.
3. `recover` (at open) replays every raw row whose (device, seq) the durable document does not hold
   (with what this device's segments hold that it lacks) as one consolidation, so it is idempotent
   whatever point the crash hit. Raw rows stay until the ride is reconciled and compacted, so
   a corrupt change record costs nothing that the raw log still has.
A full disk keeps samples in memory (`Ride.unlogged`), logs CRITICAL and writes them as soon as space
returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from engine.crdt import Scalar
from engine.ride import batches, documents, schema
from engine.ride.model import DeviceDoc
from engine.ride.samples import Sample, SampleDecodeError, decode_record, encode_record
from engine.ride.schema import DocKind, DocRef, Role
from engine.store.db import StorageFull, StoreError
from engine.store.docstore import DocumentStore
from engine.store.model import UnknownRide
from engine.store.port import StorageTx
from engine.store.segments import MAX_LIVE_SEGMENTS, Segments

log = logging.getLogger(__name__)

DEFAULT_FOLD_INTERVAL_S = 10.0
DEFAULT_MAX_BATCH = 100
# Offline, at most one fold an hour (a full key, documents.MAX_SAMPLES_PER_KEY at 1 Hz): every fold saved
# is ~100 bytes of change metadata less to reconcile, and a batch compresses better whole (`ridesync bench
# store`: offline_fold_interval). Memory holds at most that hour of samples.
DEFAULT_OFFLINE_FOLD_INTERVAL_S = 3600.0
# A bike with a live link consolidates its live segment into its durable document this often (ride time):
# 12 changes an hour there instead of 360 (docs/architecture.md#live-segments; `ridesync bench store`).
DEFAULT_SEGMENT_INTERVAL_S = 300.0


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
        segment_interval_s: float | None = None,
    ) -> None:
        self.docs = docs
        self.segments = Segments(docs)
        # None: no live segments (apps, or a bike told so): online folds go into the durable document.
        self.segment_interval_s = segment_interval_s if role is Role.BIKE else None
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
        ride.segment_t = ride.last_fold

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
        self._recover_segments(ride_id)
        live = ride.live
        stale_folded: list[int] = []
        for row in self.docs.storage.raw_samples(ride_id):
            device, seq = row.device, row.seq
            if not row.intact:
                report.problem(f"ride {ride_id}: raw sample {device}/{seq} checksum mismatch; skipped")
                report.raw_skipped += 1
                continue
            if device != self.device_id:
                continue
            if seq in seqs or seq in live:
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
        if pending or live:
            # One consolidation of everything the durable document lacks: after a crash at any point
            # (mid-segment, mid-consolidation) every sample ends up there once.
            self.fold(ride_id)

    def _recover_segments(self, ride_id: str) -> None:
        """What this device's segments hold that its durable document lacks (`Ride.live`), and which of
        them it does not name consolidated (`Ride.unmarked`): read from the documents themselves."""
        ride = self.docs.ride(ride_id)
        seqs = ride.seqs or set()
        marked = self.segments.markers(ride_id, self.device_id)
        for entry in self.segments.held(ride_id, self.device_id):
            decoded = entry.decode()
            held = decoded.samples if isinstance(decoded, DeviceDoc) else ()
            if entry.ref.segment not in marked:
                ride.unmarked[entry.ref.segment] = len(held)
            for sample in held:
                if sample.seq not in seqs:
                    ride.live.setdefault(sample.seq, sample)

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

    def unconsolidated(self, ride_id: str) -> int:
        """Samples not yet in the durable document: pending, or only in a live segment."""
        ride = self.docs.rides.get(ride_id)
        return 0 if ride is None else len(ride.pending or ()) + len(ride.live)

    def next_seq(self, ride_id: str) -> int:
        """The first seq after every sample this device recorded for the ride (survives restarts)."""
        ride = self.docs.ride(ride_id)
        if ride.top is None:
            # Once per ride and open; raw rows may be pruned after compaction, so the document counts too.
            known = (*(ride.seqs or ()), *(ride.pending or ()), *ride.live)
            ride.top = max(known, default=-1)
        logged = self.docs.storage.max_seq(ride_id, self.device_id)
        return max(ride.top, -1 if logged is None else logged) + 1

    def maybe_fold(self, ride_id: str, now: float | None = None, *, online: bool = True) -> int:
        """Fold when it is due: `online` (a live link to the backend) every `fold_interval_s` or
        `max_batch` samples; offline every `offline_fold_interval_s` (or a full key's worth of samples).
        With live segments an online fold goes into the open segment, and the segment is consolidated
        into the durable document every `segment_interval_s`, or at once when the link is gone."""
        ride = self.docs.rides.get(ride_id)
        if ride is None:
            return 0
        now = self._clock() if now is None else now
        # Consolidation is due `segment_interval_s` after the last one (or the start), whatever the segment.
        if ride.live and (not online or now - ride.segment_t >= (self.segment_interval_s or 0.0)):
            return self.fold(ride_id, now)
        if not ride.pending:
            return 0
        since = now - (ride.last_fold or 0.0)
        if online:
            due = len(ride.pending) >= self.max_batch or since >= self.fold_interval_s
            if due and self.segment_interval_s is not None and not ride.backlog:
                return self._fold_segment(ride_id, now)
        else:
            # What piles up offline goes into the durable document in one change once the link is back,
            # never through a segment (it would be sent twice).
            ride.backlog = True
            due = len(ride.pending) >= documents.MAX_SAMPLES_PER_KEY or since >= self.offline_fold_interval_s
        return self.fold(ride_id, now) if due else 0

    def _fold_segment(self, ride_id: str, now: float) -> int:
        """Write the pending samples into the open live segment (opening the next one if none is open):
        one change, one transaction with the raw rows' `folded` mark. Past the segment limits (numbers, or
        live segments held) the fold goes into the durable document, as without segments."""
        ride = self.docs.ride(ride_id)
        pending = ride.pending
        assert pending
        if ride.segment is None:
            number = self.segments.next_number(ride_id, self.device_id)
            # Segments held here, retired or not: one the backend has not acknowledged yet still counts.
            held = len(self.segments.held(ride_id, self.device_id))
            if number > schema.MAX_SEGMENT or held >= MAX_LIVE_SEGMENTS:
                return self.fold(ride_id, now)
            ref = schema.segment_ref(ride_id, self.device_id, number)
            shared_ref = schema.shared_ref(ride_id)
            shared = self.docs.ensure_doc(shared_ref)
            with self.docs.guard():
                # Listed before it has content, so every reader can name it (the backend learns of it
                # from its own window of numbers, engine/store/segments.py, whatever arrives first).
                documents.write_once(
                    shared, documents.header_values(shared, shared_ref), documents.index_values(shared, ref)
                )
            self.docs.persist(shared_ref.doc_id)
            ride.segment = number
        ref = schema.segment_ref(ride_id, self.device_id, ride.segment)
        doc = self.docs.ensure_doc(ref)
        batch = [pending[s] for s in sorted(pending)]
        with self.docs.guard():
            documents.add_samples(
                doc, batch, batch_schema=self.batch_schema, extra=documents.header_values(doc, ref)
            )
        self._persist_fold(ride_id, ref.doc_id, [s.seq for s in batch])
        ride = self.docs.ride(ride_id)
        ride.last_fold = now
        if ride.segment is not None:
            ride.unmarked[ride.segment] = ride.unmarked.get(ride.segment, 0) + len(batch)
        for sample in batch:
            ride.live[sample.seq] = sample
        pending.clear()
        return len(batch)

    def _persist_fold(self, ride_id: str, doc_id: str, logged: list[int]) -> None:
        """Write the fold just made in `doc_id` and mark the raw rows of `logged` (this device's seqs)
        folded, in one transaction."""
        device_id = self.device_id

        def mark(tx: StorageTx) -> None:
            tx.mark_folded(ride_id, device_id, logged)

        try:
            self.docs.persist(doc_id, extra=mark)
        except StorageFull as exc:
            # The change is in the document; persist() writes it with the next one that fits. Recovery
            # marks these raw rows folded then, since the document holds their seqs.
            log.critical("storage full; fold kept in memory", extra={"ride_id": ride_id, "error": str(exc)})

    def fold(self, ride_id: str, now: float | None = None, *, extra: dict[str, Scalar] | None = None) -> int:
        """Consolidate: write every sample the durable document lacks (pending, and live in a segment)
        into this device's durable document as one change (with the `extra` keys, if any, e.g. the end
        claim, and the `segment.<n>` keys of the segments it covers), one transaction. Writes nothing,
        `extra` neither, when there is nothing to write."""
        ride = self.docs.ride(ride_id)
        now = self._clock() if now is None else now
        ride.last_fold = now
        pending = ride.pending
        if pending is None:
            pending = ride.pending = {}
        if not pending and not ride.live:
            return 0
        own = self.own_ref(ride_id)
        if own is None or own.kind not in (DocKind.BIKE, DocKind.APP):
            raise StoreError(f"a {self.role.value} replica records no samples")
        doc = self.docs.ensure_doc(own)
        merged = {**ride.live, **pending}
        batch = [merged[s] for s in sorted(merged)]
        with self.docs.guard():
            markers = documents.segment_marker_values(doc, ride.unmarked)
            values = {**documents.header_values(doc, own), **markers, **(extra or {})}
            documents.add_samples(doc, batch, batch_schema=self.batch_schema, extra=values)
        self._persist_fold(ride_id, own.doc_id, sorted(pending))
        ride = self.docs.ride(ride_id)  # (a panic above reloads; the ride object stays the same)
        if ride.seqs is None:
            ride.seqs = set()
        ride.seqs.update(s.seq for s in batch)
        pending.clear()
        ride.live.clear()
        ride.unmarked.clear()
        ride.segment = None
        ride.segment_t = now
        ride.backlog = False
        return len(batch)
