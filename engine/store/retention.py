"""Retention: what may leave the replica, and when. `evict` refuses anything not finalized *and*
reconciled *and* fully folded; `apply_retention` compacts or evicts eligible rides. Low disk is logged at
ERROR while recording continues (losing the ride is worse than a full disk)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from engine.ride import policy
from engine.ride.schema import Phase
from engine.store.bookkeeping import SyncBook
from engine.store.docstore import DocumentStore
from engine.store.model import RetentionPolicy, RideNotEvictable, StorageStatus, SyncState
from engine.store.samplelog import SampleLog

log = logging.getLogger(__name__)

DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024


class Retention:
    def __init__(
        self,
        docs: DocumentStore,
        samples: SampleLog,
        book: SyncBook,
        *,
        view: Callable[[str], policy.RideView],
        rides: Callable[[], list[str]],
        load: Callable[[str], bool],
        clock: Callable[[], float],
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ) -> None:
        self.docs = docs
        self.samples = samples
        self.book = book
        self.min_free_bytes = min_free_bytes
        self._view = view
        self._rides = rides  # every stored ride, in memory or not (the backend loads each at first use)
        self._load = load
        self._clock = clock
        self._low_logged = 0.0

    def evictable(self, ride_id: str) -> str | None:
        """None if the ride may be evicted, else the reason it may not."""
        status = self.book.sync_status(ride_id)
        if self.samples.unconsolidated(ride_id):
            return "has samples not yet folded"
        if status.state is not SyncState.RECONCILED:
            return f"not reconciled ({status.state.value}: {status.reason})"
        if self._view(ride_id).phase is not Phase.FINALIZED:
            return "not finalized by the backend"
        return None

    def compact_ride(self, ride_id: str) -> int:
        """Compact every document of the ride; prune folded raw samples once the ride is reconciled."""
        self._load(ride_id)
        total = sum(self.docs.compact(e.ref.doc_id) for e in self.docs.ride_entries(ride_id))
        if self.book.sync_status(ride_id).state is SyncState.RECONCILED:
            self.docs.storage.write(lambda tx: tx.prune_folded(ride_id))
        return total

    def evict(self, ride_id: str) -> None:
        reason = self.evictable(ride_id)
        if reason is not None:
            raise RideNotEvictable(f"ride {ride_id} cannot be evicted: {reason}")
        self._load(ride_id)  # every document of it is deleted, also those not yet in memory
        doc_ids = [e.ref.doc_id for e in self.docs.ride_entries(ride_id)]
        self.docs.storage.write(lambda tx: tx.delete_ride(ride_id, doc_ids))
        self.docs.drop_ride(ride_id)

    def apply_retention(self, retention: RetentionPolicy, now: float | None = None) -> dict[str, list[str]]:
        """Compact finalized, reconciled rides; evict those older than the policy allows."""
        now = self._clock() if now is None else now
        out: dict[str, list[str]] = {"compacted": [], "evicted": [], "kept": []}
        for ride_id in self._rides():
            if self.evictable(ride_id) is not None:
                out["kept"].append(ride_id)
                continue
            if now - self.book.sync_status(ride_id).updated >= retention.keep_finalized_s:
                self.evict(ride_id)
                out["evicted"].append(ride_id)
            else:
                self.compact_ride(ride_id)
                out["compacted"].append(ride_id)
        return out

    def storage_status(self) -> StorageStatus:
        size, free = self.docs.storage.usage()
        return StorageStatus(
            db_bytes=size,
            free_bytes=free,
            min_free_bytes=self.min_free_bytes,
            unlogged_samples=self.samples.unlogged(),
        )

    def watch_storage(self) -> None:
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
