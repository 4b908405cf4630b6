"""The device replica (bike or app): the core plus the sample log and the device's own end claim."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from engine.ride import documents
from engine.ride.samples import Sample
from engine.ride.schema import DocKind, Role
from engine.store.core import ReplicaCore
from engine.store.db import StoreError


class DeviceReplica(ReplicaCore):
    """A bike's or an app's replica: records samples durably and folds them into its own document."""

    roles: ClassVar[frozenset[Role]] = frozenset({Role.BIKE, Role.APP})

    # -- samples (bike, app) --------------------------------------------------------------------------

    def append_sample(self, ride_id: str, sample: Sample) -> bool:
        """Log one sample durably (committed and fsync'd on return). False if (device, seq) is known."""
        return self.samples.append_samples(ride_id, [sample]) == 1

    def append_samples(self, ride_id: str, samples: Iterable[Sample]) -> int:
        """Log samples in one durable transaction; returns how many were new."""
        return self.samples.append_samples(ride_id, samples)

    def pending_samples(self, ride_id: str) -> int:
        return self.samples.pending_samples(ride_id)

    def next_seq(self, ride_id: str) -> int:
        """The first seq after every sample this device recorded for the ride (survives restarts)."""
        return self.samples.next_seq(ride_id)

    def maybe_fold(self, ride_id: str, now: float | None = None, *, online: bool = True) -> int:
        """Fold when due: with a live link (`online`, the default) every `fold_interval_s` or `max_batch`
        samples; offline every `offline_fold_interval_s`, so a backlog reconciles as few changes."""
        return self.samples.maybe_fold(ride_id, now, online=online)

    def fold(self, ride_id: str) -> int:
        """Write the pending samples into this device's document: one change, one transaction."""
        return self.samples.fold(ride_id)

    def end_ride(self, ride_id: str, t: float | None = None, duration_s: float | None = None) -> bool:
        """Bike or app: fold what is pending and claim `ended` with what this device recorded."""
        own = self._own_ref(ride_id)
        if own is None or own.kind not in (DocKind.BIKE, DocKind.APP):
            raise StoreError(f"a {self.role.value} replica does not claim ride ends")
        ride = self.documents.rides.get(ride_id)
        seqs = set() if ride is None else set(ride.seqs or ()) | set(ride.pending or ()) | set(ride.live)
        doc = self.documents.ensure_doc(own)
        with self.documents.guard():
            claim = documents.claim_ended_values(
                doc,
                ride_id,
                self._clock() if t is None else t,
                last_seq=max(seqs) if seqs else None,
                count=len(seqs),
                duration_s=duration_s,
            )
        # The last fold and the claim in one change: one change's metadata less to sync.
        if self.samples.fold(ride_id, extra=claim):
            return bool(claim)
        with self.documents.guard():
            wrote = documents.write_once(self.doc(own.doc_id), claim)
        self.persist(own.doc_id)
        return wrote
