"""Per-ride sync state as a rider should see it (docs/architecture.md#sync-states), persisted through the
ReplicaStore.

- `reconciled`: the backend acknowledged our heads of every document of the ride (see session.py for
  what an acknowledgement is). Nothing is "probably synced".
- `syncing`: connected, and something is not acknowledged yet; the reason says how much
  ("syncing 1,800 samples").
- `failed`: not connected or refused; the reason says why and that the device retries. Recording goes on.

State changes are written to the store (so `ridesync app`/a UI reading the store sees them after a restart)
and announced as `SyncEvent`s for a UI or CLI; progress reasons are rate-limited so a fast backlog does not
become a write per message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.ride.schema import DocKind
from engine.store import ReplicaStore, SyncState

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class SyncEvent:
    ride_id: str
    state: SyncState
    reason: str
    unacked_samples: int
    t: float

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "sync",
            "ride_id": self.ride_id,
            "state": self.state.value,
            "reason": self.reason,
            "unacked_samples": self.unacked_samples,
            "t": round(self.t, 3),
        }


def samples_text(n: int) -> str:
    return f"{n:,} sample" + ("" if n == 1 else "s")


class SyncTracker:
    """Sync state per ride. What the backend acknowledged is kept in memory (the truth for this process)
    and written to the store by `flush()`: at once when a ride fails, otherwise at most every
    `persist_every_s`. A bike folds every 10 s; persisting each reconciled → syncing → reconciled flap and
    each acknowledgement would triple its fsyncs for nothing, since a restarted replica recomputes its
    state from the acknowledged heads it stored (at worst it says `syncing` until the backend answers)."""

    def __init__(
        self,
        store: ReplicaStore,
        peer: str,
        on_event: Callable[[SyncEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        persist_every_s: float = 5.0,
    ) -> None:
        self.store = store
        self.peer = peer
        self.on_event = on_event
        self._clock = clock
        self.persist_every_s = persist_every_s
        self.rides: list[str] = []
        self.online = False
        self.offline_reason = "not connected yet"
        self._refused: dict[str, str] = {}
        self._closed_out: dict[str, str] = {}  # terminal: finalized without some of our changes
        self._acked_samples: dict[str, int] = {}
        self._acked: dict[str, tuple[bytes, ...]] = {}  # doc → heads the backend acknowledged
        self._unsaved_heads: set[str] = set()
        self._last: dict[str, tuple[SyncState, str, float]] = {}  # announced
        self._saved: dict[str, tuple[SyncState, str]] = {}  # persisted
        self._last_flush = clock()

    # ---- inputs -----------------------------------------------------------------------------------------

    def track(self, ride_id: str) -> None:
        if ride_id not in self.rides:
            self.rides.append(ride_id)
            for ref in self.store.ride_refs(ride_id):
                if self.store.has_doc(ref.doc_id):
                    self._acked[ref.doc_id] = tuple(sorted(self.store.peer_heads(ref.doc_id, self.peer)))
            own = self._own_doc(ride_id)
            if own is not None and self._acked.get(own) == tuple(sorted(self.store.heads(own))):
                self._acked_samples[ride_id] = self.store.next_seq(ride_id)
            else:
                # Unknown after a restart (acknowledgements are per document, not per sample): count all.
                self._acked_samples[ride_id] = 0
            status = self.store.sync_status(ride_id)
            self._saved[ride_id] = (status.state, status.reason)
        self.refresh(ride_id, force=True)

    def acknowledged(self, doc_hex: str, heads: tuple[bytes, ...]) -> None:
        heads = tuple(sorted(heads))
        if self._acked.get(doc_hex) != heads:
            self._acked[doc_hex] = heads
            self._unsaved_heads.add(doc_hex)
        ride_id = self.store.ref(doc_hex).ride_id
        own = self._own_docs(ride_id)
        # Every sample is in this device's own document or one of its live segments (a bike's 10 s folds):
        # all of them acknowledged at their current heads, and the backend holds every sample recorded.
        if doc_hex in own and all(self.is_acknowledged(d) for d in own):
            self._acked_samples[ride_id] = self.store.next_seq(ride_id)
        self.refresh(ride_id)

    def refused(self, ride_id: str, reason: str) -> None:
        self._refused[ride_id] = reason
        self.refresh(ride_id, force=True)

    def close_out(self, ride_id: str, reason: str) -> None:
        """The backend finalized the ride without some of this device's changes: `failed` for good."""
        self._closed_out[ride_id] = reason
        self.refresh(ride_id, force=True)

    def closed_out(self, ride_id: str) -> str | None:
        """Why the ride was closed out, or None."""
        return self._closed_out.get(ride_id)

    def set_online(self, online: bool, reason: str = "") -> None:
        self.online = online
        if not online:
            self.offline_reason = reason or "disconnected"
        for ride_id in self.rides:
            self.refresh(ride_id, force=True)

    # ---- state ------------------------------------------------------------------------------------------

    def unacked_samples(self, ride_id: str) -> int:
        if self._own_doc(ride_id) is None:
            return 0
        return max(0, self.store.next_seq(ride_id) - self._acked_samples.get(ride_id, 0))

    def is_acknowledged(self, doc_hex: str) -> bool:
        """The backend acknowledged this document at our current heads."""
        return self._acked.get(doc_hex) == tuple(sorted(self.store.heads(doc_hex)))

    def is_reconciled(self, ride_id: str) -> bool:
        refs = self.store.ride_refs(ride_id)
        return bool(refs) and all(
            self.store.has_doc(r.doc_id)
            and self._acked.get(r.doc_id) == tuple(sorted(self.store.heads(r.doc_id)))
            for r in refs
        )

    def compute(self, ride_id: str) -> tuple[SyncState, str]:
        if self.is_reconciled(ride_id):
            self._refused.pop(ride_id, None)
            return SyncState.RECONCILED, "the backend holds every change of this ride"
        unacked = self.unacked_samples(ride_id)
        backlog = (
            f"{samples_text(unacked)} not yet on the backend" if unacked else "changes not yet on the backend"
        )
        if ride_id in self._closed_out:
            return SyncState.FAILED, f"{self._closed_out[ride_id]}; {backlog}"
        if ride_id in self._refused:
            return SyncState.FAILED, f"refused by the backend: {self._refused[ride_id]}; {backlog}"
        if self.online:
            return SyncState.SYNCING, f"syncing {samples_text(unacked)}" if unacked else "syncing"
        return SyncState.FAILED, f"{self.offline_reason}; {backlog}, kept on this device"

    def refresh(self, ride_id: str, force: bool = False) -> None:
        state, reason = self.compute(ride_id)
        now = self._clock()
        last = self._last.get(ride_id)
        if last is not None and last[0] is state and last[1] == reason:
            self._maybe_flush(now)
            return
        if not force and last is not None and last[0] is state and now - last[2] < PROGRESS_EVERY_S:
            self._maybe_flush(now)
            return  # only the progress figure changed, and recently
        self._last[ride_id] = (state, reason, now)
        event = SyncEvent(ride_id, state, reason, self.unacked_samples(ride_id), time.time())
        log.info("sync state", extra=event.to_json())
        if self.on_event is not None:
            self.on_event(event)
        if state is SyncState.FAILED:
            self.flush()
        else:
            self._maybe_flush(now)

    def _maybe_flush(self, now: float) -> None:
        if now - self._last_flush >= self.persist_every_s:
            self.flush()

    def flush(self) -> None:
        """Write acknowledged heads and each ride's current state to the store (only what changed)."""
        self._last_flush = self._clock()
        for doc_hex in sorted(self._unsaved_heads):
            self.store.set_peer_heads(doc_hex, self.peer, self._acked[doc_hex])
        self._unsaved_heads.clear()
        for ride_id, (state, reason, _) in self._last.items():
            if self._saved.get(ride_id) != (state, reason):
                self.store.set_sync_state(ride_id, state, reason)
                self._saved[ride_id] = (state, reason)

    def state(self, ride_id: str) -> tuple[SyncState, str]:
        status = self.store.sync_status(ride_id)
        return status.state, status.reason

    def _own_docs(self, ride_id: str) -> list[str]:
        """This device's own document and the live segments it holds (a bike's), by doc id."""
        me = self.store.device_id
        return [
            r.doc_id
            for r in self.store.ride_refs(ride_id)
            if r.device == me
            and r.kind in (DocKind.BIKE, DocKind.APP, DocKind.SEGMENT)
            and self.store.has_doc(r.doc_id)
        ]

    def _own_doc(self, ride_id: str) -> str | None:
        for ref in self.store.ride_refs(ride_id):
            if ref.kind in (DocKind.BIKE, DocKind.APP) and ref.device == self.store.device_id:
                return ref.doc_id
        return None
