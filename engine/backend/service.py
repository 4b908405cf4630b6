"""The backend's durable-lane state: its replica store, the idempotency ledger, the open sync connections,
per-ride sync state and finalization.

Everything here runs on the event loop thread, and so does every Automerge call (the store is not
thread-safe, and Automerge documents stay on one thread). The store's commits run on its writer thread
(write-behind with group commit: only SQL and bytes cross over); whoever answers a peer awaits
`store.flushed()` first. The ledger's SQLite steps run in worker threads through `Ledger.run_async`.

Backend sync state per ride (DESIGN §1.5), derived from what the backend holds:
- `syncing` while the ride is in progress, and after its end while samples the bike declared are missing
  (the reason says how many, from whom);
- `reconciled` once the backend finalized the ride (it holds every declared sample; official totals);
- `failed` when a device that writes this ride had a sync message refused (the reason is the gate's),
  until that ride's next accepted change.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from engine.backend.config import BackendConfig
from engine.backend.metrics import BackendMetrics
from engine.events.idempotency import Ledger
from engine.ride import policy, schema
from engine.ride.schema import DocRef, Phase, Role
from engine.store import ReplicaStore, SyncState
from engine.sync.docid import InvalidDocumentId, document_id_from_bytes, document_id_to_bytes

log = logging.getLogger(__name__)

STORE_DIR = "backend"
LEDGER_FILE = "idempotency.sqlite3"


class Peer(Protocol):
    """A sync connection, as the backend sees it: it can be told that a document changed."""

    device: str

    def document_changed(self, doc_id: str) -> None: ...


def hex_id(document_id: str) -> str | None:
    """The store's hex id of an automerge-repo document id, or None if it is not one."""
    try:
        return document_id_to_bytes(document_id).hex()
    except InvalidDocumentId:
        return None


def repo_id(ref: DocRef) -> str:
    return document_id_from_bytes(ref.raw_id)


class Backend:
    def __init__(self, data_dir: Path, config: BackendConfig, metrics: BackendMetrics) -> None:
        self.config = config
        self.metrics = metrics
        directory = Path(data_dir) / STORE_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.store = ReplicaStore(directory, device_id=config.device_id, role=Role.BACKEND)
        # Commits leave the event loop (engine/store/writer.py); replies await store.flushed() first.
        self.store.start_write_behind(on_group=self._observe_group)
        try:
            self.ledger = Ledger(directory / LEDGER_FILE)
        except BaseException:
            self.store.close()
            raise
        self.peers: set[Peer] = set()
        # automerge-repo document id -> the connections that have it open (pushes go only to them).
        self._subscribers: dict[str, set[Peer]] = {}
        self._ride_peers: Counter[str] = Counter()
        self._cached_state: dict[str, tuple[SyncState, str]] = {}
        self._failed: dict[str, str] = {}
        self._event = asyncio.Event()
        self.version = 0  # bumped on every ride change; tests and pollers wait on it

    def _observe_group(self, jobs: int, group_s: float, commit_s: float) -> None:
        # On the store's writer thread: Prometheus metrics are thread-safe, nothing else is touched.
        self.metrics.store_group_jobs.observe(jobs)
        self.metrics.store_group_seconds.observe(group_s)
        self.metrics.store_commit_seconds.observe(commit_s)

    def close(self) -> None:
        self.ledger.close()
        self.store.close()

    # -- connections ----------------------------------------------------------------------------------

    def add_peer(self, peer: Peer) -> None:
        self.peers.add(peer)
        self.metrics.connections.set(len(self.peers))

    def remove_peer(self, peer: Peer, rides: set[str], documents: set[str]) -> None:
        self.peers.discard(peer)
        for document_id in documents:
            subscribers = self._subscribers.get(document_id)
            if subscribers is not None:
                subscribers.discard(peer)
                if not subscribers:
                    del self._subscribers[document_id]
        for ride in rides:
            self._ride_peers[ride] -= 1
            if self._ride_peers[ride] <= 0:
                del self._ride_peers[ride]
        self.metrics.connections.set(len(self.peers))
        self.metrics.open_rides.set(len(self._ride_peers))
        self._notify()

    def subscribe(self, document_id: str, peer: Peer) -> None:
        self._subscribers.setdefault(document_id, set()).add(peer)

    def ride_opened(self, ride_id: str) -> None:
        self._ride_peers[ride_id] += 1
        self.metrics.open_rides.set(len(self._ride_peers))

    def connected_devices(self, ride_id: str) -> int:
        return self._ride_peers.get(ride_id, 0)

    def broadcast(self, document_id: str, exclude: Peer | None = None) -> None:
        """Tell every connection (but `exclude`) that has the document open that it changed."""
        for peer in list(self._subscribers.get(document_id, ())):
            if peer is not exclude:
                peer.document_changed(document_id)

    # -- rides ----------------------------------------------------------------------------------------

    def has_ride(self, ride_id: str) -> bool:
        return self.store.has_ride(ride_id)

    def ride_changed(self, ride_id: str, device: str, origin: Peer | None = None) -> None:
        """A sync message or an HTTP event changed the ride: finalize if it is time, refresh its state."""
        self._failed.pop(ride_id, None)
        phase = self.store.phase(ride_id)
        view = None
        if phase is Phase.ENDED:
            view = self.store.view(ride_id)
            if view.ready_to_finalize:
                view = self.finalize(ride_id)
        self.refresh_state(ride_id, phase if view is None else view.phase, view)
        self._notify()

    def finalize(self, ride_id: str) -> policy.RideView:
        view = self.store.finalize(ride_id)
        self.metrics.finalized.inc()
        log.info(
            "ride finalized",
            extra={"ride_id": ride_id, "samples": view.samples, "totals": view.totals},
        )
        # Every connection with the ride open gets the finalization, the origin included.
        self.backend_doc_changed(ride_id)
        return view

    def backend_doc_changed(self, ride_id: str) -> None:
        """The backend wrote its own document (and indexed it in the shared one): push both."""
        own = schema.own_ref(ride_id, self.config.device_id, Role.BACKEND)
        assert own is not None
        self.broadcast(repo_id(own))
        self.broadcast(repo_id(schema.shared_ref(ride_id)))

    def gate_rejected(self, ride_id: str, device: str, role: Role, reason: str) -> None:
        """A sync message of `device` for this ride was refused. The ride shows `failed` only if that
        device writes this ride (a stranger's bad message says nothing about the ride's own sync) and the
        ride is not finalized yet."""
        own = schema.own_ref(ride_id, device, role)
        if own is None or not self.store.has_doc(own.doc_id):
            return
        phase = self.store.phase(ride_id)
        if phase is Phase.FINALIZED:
            # Late writes after the upload was confirmed are refused by design; the ride stays reconciled.
            return
        self._failed[ride_id] = f"{role.value} {device}: {reason}"
        self.refresh_state(ride_id, phase)
        self._notify()

    def refresh_state(self, ride_id: str, phase: Phase, view: policy.RideView | None = None) -> None:
        if ride_id in self._failed:
            state, reason = SyncState.FAILED, self._failed[ride_id]
        elif phase is Phase.FINALIZED:
            state, reason = SyncState.RECONCILED, "finalized: the backend holds every declared sample"
        elif phase is Phase.ENDED:
            view = view if view is not None else self.store.view(ride_id)
            if view.missing_samples:
                missing = ", ".join(f"{n} from {d}" for d, n in sorted(view.missing_samples.items()))
                state, reason = SyncState.SYNCING, f"ended; waiting for samples: {missing}"
            else:
                state, reason = SyncState.SYNCING, "ended; waiting for the bike's end claim"
        else:
            state, reason = SyncState.SYNCING, f"ride {phase.label}"
        if self._cached_state.get(ride_id) != (state, reason):
            self.store.set_sync_state(ride_id, state, reason)
            self._cached_state[ride_id] = (state, reason)

    # -- waiting (tests, long polls) ------------------------------------------------------------------

    def _notify(self) -> None:
        self.version += 1
        # Wake every waiter at once and start a new generation: no lock, no task per notification.
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; re-checked after every ride change. Callers bound it with
        asyncio.timeout."""
        while not predicate():
            await self._event.wait()
