"""The backend's working set: which rides it keeps in memory, and releasing the idle ones.

Why: the backend's replica keeps every ride it loads in memory (its Automerge documents, decodes, views
and per-ride state). A server that runs class after class all day would otherwise grow with every ride
it ever served. A ride is released (from memory, never from the storage) once it is idle:

- no sync connection holds it: none named it (`?ride=`) and none has one of its documents open;
- it was not used (a sync message, an HTTP request, a change merged from another node) for
  `unload_idle_s` (`ridesync serve --unload-idle-s`);
- nothing of it is uncommitted: no change only in memory, no write left in the write-behind queue
  (the sweep awaits the store's flush, and the store checks each ride's last write against it).

The backend starts with no ride in memory (the replica is lazy: engine/store/README.md, "Loading"); a
ride's first use loads it, and the next use after a release loads it back, as a node over a shared
database loads a ride another node wrote (`Backend.has_ride`, `fresh`, the replica's whole-ride reads, and
`DocumentStore.ensure_doc` before anything is added to a ride).
A connection that names a ride loads it when it opens and holds it until it closes, so a live session
never works on a released document.

`on_loaded(ride_id)` (the backend finalizes a ride left ready to finalize there) runs for every ride read
from the storage, but only once the load that read it is complete: the storage's load callback fires in
the middle of it (before the ride's samples are recovered), so it only notes the ride, and `load` hands
the noted rides over when the store's `load_ride` has returned. A ride loaded by another path (a sync
message's `ensure_doc`, a whole-ride read) is handed over at the next `load` of any ride.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from engine.backend.metrics import BackendMetrics
from engine.store import BackendReplica

log = logging.getLogger(__name__)


class WorkingSet:
    def __init__(
        self,
        store: BackendReplica,
        metrics: BackendMetrics,
        *,
        idle_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.idle_s = idle_s
        self.clock = clock  # injectable: tests move it instead of sleeping
        # ride -> (when it was last used, a use counter): rides in memory only. The counter tells a use
        # during the sweep's flush from none when the clock did not move.
        self._used: dict[str, tuple[float, int]] = {}
        self._uses = 0
        self._held: Counter[str] = Counter()  # ride -> connections that named it
        self.on_loaded: Callable[[str], None] = lambda ride_id: None
        self._just_loaded: list[str] = []  # read from the storage, not yet handed to `on_loaded`
        self._handing_over = False
        # Every read from the storage into memory, whichever path asked for it (a request, a sync, a
        # change merged from another node, a listing), is counted here.
        store.watch_loads(self._loaded)
        self.metrics.rides_in_memory.set(len(store.loaded_rides()))

    def used(self, ride_id: str) -> None:
        """The ride was just used: it stays in memory for at least `idle_s` more."""
        self._uses += 1
        self._used[ride_id] = (self.clock(), self._uses)

    def hold(self, rides: Iterable[str]) -> None:
        """A connection that names these rides opens: load each (if stored) and keep it until `unhold`."""
        for ride_id in rides:
            self._held[ride_id] += 1
            self.load(ride_id)

    def unhold(self, rides: Iterable[str]) -> None:
        for ride_id in rides:
            self._held[ride_id] -= 1
            if self._held[ride_id] <= 0:
                del self._held[ride_id]
            self.used(ride_id)

    def load(self, ride_id: str) -> bool:
        """True if the backend holds the ride, reading it back from the storage if it was released (or
        another node wrote it)."""
        held = self.store.load_ride(ride_id)
        if held:
            self.used(ride_id)
        self._hand_over()
        return held

    def _hand_over(self) -> None:
        # Not re-entered: what `on_loaded` loads itself is handed over by this same loop.
        if self._handing_over:
            return
        self._handing_over = True
        try:
            while self._just_loaded:
                ride_id = self._just_loaded.pop(0)
                if self.store.is_loaded(ride_id):  # not released again since
                    self.on_loaded(ride_id)
        finally:
            self._handing_over = False

    def _loaded(self, ride_id: str) -> None:
        """A ride was read from the storage into memory (its first use since the start, or since it was
        released, or written by another node)."""
        self.used(ride_id)
        self.metrics.ride_loads.inc()
        self.metrics.rides_in_memory.set(len(self.store.loaded_rides()))
        if ride_id not in self._just_loaded:
            self._just_loaded.append(ride_id)

    @contextmanager
    def peek(self, ride_id: str) -> Iterator[bool]:
        """Within the block the ride is in memory (True if it is stored); one that was not in memory
        before is released again after it (a listing of every ride must not load them all)."""
        loaded = self.store.is_loaded(ride_id)
        held = self.load(ride_id)
        try:
            yield held
        finally:
            if held and not loaded and self.store.release_ride(ride_id):
                self._used.pop(ride_id, None)
                self.metrics.ride_releases.inc()
                self.metrics.rides_in_memory.set(len(self.store.loaded_rides()))

    def idle(self, busy: Callable[[str], bool]) -> dict[str, int]:
        """The rides in memory that may be released now (with their use counter): not held, not `busy`
        (documents open on a connection), unused for `idle_s`."""
        now = self.clock()
        out = {}
        for ride_id in self.store.loaded_rides():
            if ride_id not in self._used:
                self.used(ride_id)  # in memory by a path that does not say (a new ride): counts as a use
            last, use = self._used[ride_id]
            if ride_id not in self._held and not busy(ride_id) and now - last >= self.idle_s:
                out[ride_id] = use
        return out

    async def sweep(self, busy: Callable[[str], bool]) -> list[str]:
        """Release the idle rides; returns them. Their writes are committed first (the store refuses a
        ride with writes still queued); a ride used while the flush ran is kept."""
        # Forget the use times of rides not in memory (released by retention, never stored, read back by
        # a listing only), so this table stays as small as the working set.
        for ride_id in [r for r in self._used if not self.store.is_loaded(r)]:
            del self._used[ride_id]
        candidates = self.idle(busy)
        if not candidates:
            return []
        await self.store.flushed()
        released = []
        for ride_id, use in candidates.items():
            if ride_id in self._held or busy(ride_id) or self._used.get(ride_id, (0.0, use))[1] != use:
                continue
            if self.store.release_ride(ride_id):
                self._used.pop(ride_id, None)
                released.append(ride_id)
        if released:
            self.metrics.ride_releases.inc(len(released))
            log.debug("rides released from memory", extra={"rides": len(released)})
        self.metrics.rides_in_memory.set(len(self.store.loaded_rides()))
        return released
