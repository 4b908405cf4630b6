"""The backend's durable-lane state: its replica store, the idempotency ledger, the open sync connections,
per-ride sync state and finalization.

Everything here runs on the event loop thread, and so does every Automerge call (the store is not
thread-safe, and Automerge documents stay on one thread). The store's commits run on its writer thread
(write-behind with group commit: only SQL and bytes cross over); whoever answers a peer awaits
`store.flushed()` first. The ledger's SQLite steps run in worker threads through `Ledger.run_async`.

Backend sync state per ride (docs/architecture.md#sync-states), derived from what the backend holds:
- `syncing` while the ride is in progress, and after its end while samples the bike declared are missing
  (the reason says how many, from whom);
- `reconciled` once the backend finalized the ride (it holds every declared sample; official totals);
- `failed` when a device that writes this ride had a sync message refused (the reason is the gate's),
  until that ride's next accepted change.

Ride owners (README.md, "Ride owners"): `write_refusal` says whether a token may write a ride at all
(create a document in it, sync changes into it, end it, edit it); the gate then checks each document.

Several nodes over one database (README.md, "Several backend nodes"): every ride this node changes is
announced on the ride push (push.py) once its changes are committed; a ride another node announces is
merged from the storage at once when this node has connections on it (which then get the new state); a
ride without connections here is merged at its next use here (`fresh`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from engine.auth.tokens import Claims
from engine.auth.tokens import Role as TokenRole
from engine.backend.config import BackendConfig
from engine.backend.metrics import BackendMetrics
from engine.backend.push import NoPush, RidePush
from engine.backend.stores import open_stores
from engine.backend.workingset import WorkingSet
from engine.ride import policy, schema
from engine.ride.schema import DocKind, DocRef, Phase, Role
from engine.store import RideOwner, StoreError, SyncState
from engine.store.location import StoreLocation
from engine.store.segments import MAX_LIVE_SEGMENTS
from engine.sync.docid import InvalidDocumentId, document_id_from_bytes, document_id_to_hex

log = logging.getLogger(__name__)

STORE_DIR = "backend"


class Peer(Protocol):
    """A sync connection, as the backend sees it: it can be told that a document changed."""

    device: str

    def document_changed(self, doc_id: str) -> None: ...


def hex_id(document_id: str) -> str | None:
    """The store's hex id of an automerge-repo document id, or None if it is not one."""
    try:
        return document_id_to_hex(document_id)
    except InvalidDocumentId:
        return None


def repo_id(ref: DocRef) -> str:
    return document_id_from_bytes(ref.raw_id)


class Backend:
    def __init__(
        self,
        data_dir: Path,
        config: BackendConfig,
        metrics: BackendMetrics,
        push: RidePush | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        # One node (the default): nothing to announce, and no other writer to read back from the storage.
        self.push: RidePush = push if push is not None else NoPush()
        self.multi_node = not isinstance(self.push, NoPush)
        self._announce: set[str] = set()
        self._announce_wake = asyncio.Event()
        directory = Path(data_dir) / STORE_DIR
        location = config.store if config.store is not None else StoreLocation("sqlite", path=directory)
        self.store, self.ledger = open_stores(location, device_id=config.device_id, sqlite_dir=directory)
        # Commits leave the event loop (engine/store/writer.py); replies await store.flushed() first.
        self.store.start_write_behind(on_group=self._observe_group)
        # Rides in memory: idle ones are released, and read back from the storage at their next use.
        self.working = WorkingSet(self.store, metrics, idle_s=config.unload_idle_s, clock=clock)
        self.working.on_loaded = self._loaded
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

    def add_peer(self, peer: Peer, named: frozenset[str] = frozenset()) -> None:
        """A connection opens; the rides it `named` stay in memory until it closes."""
        self.peers.add(peer)
        self.working.hold(named)
        self.metrics.connections.set(len(self.peers))

    def remove_peer(
        self, peer: Peer, rides: set[str], documents: set[str], named: frozenset[str] = frozenset()
    ) -> None:
        self.peers.discard(peer)
        self.working.unhold(named)
        for ride in rides:
            self.working.used(ride)
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

    # -- ride owners ----------------------------------------------------------------------------------

    def owner(self, ride_id: str) -> RideOwner | None:
        """The ride's owner. A ride stored before owners were recorded, holding exactly one bike's
        document, is that bike's (adopted on first ask); one holding several stays without an owner: no
        bike can take it and the policy names none of them the authority."""
        store = self.store
        owner = store.ride_owner(ride_id)
        if owner is None and self.working.load(ride_id):
            bikes = self._bike_documents(ride_id)
            if len(bikes) == 1:
                owner = store.bind_ride_owner(ride_id, bikes[0])
                log.info("ride owner adopted", extra={"ride_id": ride_id, "device": bikes[0]})
        return owner

    def _bike_documents(self, ride_id: str) -> list[str]:
        store = self.store
        return sorted(
            {
                ref.device
                for ref in store.ride_refs(ride_id)
                if ref.kind is DocKind.BIKE and store.has_doc(ref.doc_id)
            }
        )

    def write_refusal(self, claims: Claims, ride_id: str, *, starting: bool = False) -> str | None:
        """Why this token may not write the ride (create a document in it, sync changes into it, end it,
        edit it), or None if it may. Binds nothing (only `owner`'s adoption of a ride stored before owners
        were recorded may write).

        - The backend (role backend) writes every ride.
        - The ride's owner: the bike whose first sync started it. `starting`: a bike's sync connection is
          opening; an unowned ride is then the bike's to start (`start_ride`).
        - An app whose token names this ride (`--ride`) or the owner's rider (`--rider`).
        - Nobody else: not another bike (not even with a token for this ride: a ride has one bike), not
          another app, never a viewer. An app cannot start a ride; it joins once the bike has synced it.
        """
        role = claims.role
        if role is TokenRole.BACKEND:
            return None
        if role is TokenRole.VIEWER:
            return "viewers never write"
        owner = self.owner(ride_id)
        if owner is None:
            if role is not TokenRole.BIKE:
                return (
                    f"ride {ride_id} has not been started: a ride starts with its bike's first sync, "
                    "and an app joins it after that"
                )
            if not starting:
                return f"ride {ride_id} has no owner: a ride belongs to the bike whose first sync starts it"
            others = [d for d in self._bike_documents(ride_id) if d != claims.device]
            if others:
                return f"ride {ride_id} holds the documents of bike {', '.join(others)}"
            return None
        if role is TokenRole.BIKE:
            return None if owner.device == claims.device else f"ride {ride_id} belongs to bike {owner.device}"
        if claims.rides is not None and ride_id in claims.rides:
            return None
        if claims.rider is not None and claims.rider == owner.rider:
            return None
        rider = f"rider {owner.rider}" if owner.rider is not None else "no rider named"
        return (
            f"ride {ride_id} belongs to bike {owner.device} ({rider}); an app writes it with a token for "
            "the same rider (--rider) or for this ride (--ride)"
        )

    def start_ride(self, claims: Claims, ride_id: str, class_id: str | None) -> RideOwner:
        """A bike's sync connection opens the ride, after `write_refusal(..., starting=True)` allowed it:
        bind the ride to the bike if nobody owns it (trust on first use, committed with the next group,
        so before anything is acknowledged), and fill in the rider and class where still unset (a ride's
        class is set once, by its owner)."""
        assert claims.role is TokenRole.BIKE
        store = self.store
        owner = self.owner(ride_id)
        if owner is None:
            owner = store.bind_ride_owner(ride_id, claims.device, rider=claims.rider, class_id=class_id)
            log.info(
                "ride owner bound",
                extra={"ride_id": ride_id, "device": claims.device, "rider": claims.rider, "class": class_id},
            )
        if owner.device != claims.device:
            # Another backend node (over a shared database) bound it after write_refusal asked: the
            # caller refuses this bike.
            return owner
        return store.complete_ride_owner(ride_id, rider=claims.rider, class_id=class_id)

    # -- rides ----------------------------------------------------------------------------------------

    def has_ride(self, ride_id: str) -> bool:
        """True if the backend holds the ride; over a shared database (`--store postgresql://`) a ride
        another node wrote, or one released from memory while idle, is loaded from it on first ask."""
        return self.working.load(ride_id)

    def ride_changed(self, ride_id: str, device: str, origin: Peer | None = None) -> None:
        """A sync message or an HTTP event changed the ride: finalize if it is time, refresh its state."""
        self._failed.pop(ride_id, None)
        self._changed_here(ride_id)
        self._settle(ride_id)

    def segment_refusal(self, ref: DocRef) -> str | None:
        """Why the bike may not write live segment `ref` (one past the live segments a device may hold),
        or None. Who may write it at all is the gate's and `write_refusal`'s, as for every document."""
        live = [r for r in self.store.segments.live(ref.ride_id, ref.device) if r.doc_id != ref.doc_id]
        if len(live) >= MAX_LIVE_SEGMENTS:
            return (
                f"segment_limit: bike {ref.device} holds {len(live)} live segments of ride {ref.ride_id} "
                f"(at most {MAX_LIVE_SEGMENTS}); segment {ref.segment} is refused until older ones are "
                "consolidated into its bike document"
            )
        return None

    def _settle(self, ride_id: str) -> None:
        """After a change to the ride (here or, merged, from another node): retire the live segments its
        bike documents now cover, finalize if it is time, refresh its state, wake the waiters."""
        self.working.used(ride_id)
        retired = self.store.retire_segments(ride_id)
        if retired:
            self.metrics.segments_retired.inc(len(retired))
        phase = self.store.phase(ride_id)
        view = None
        if phase is Phase.ENDED:
            with self.store.decoding_once():
                view = self.store.view(ride_id)
                if view.ready_to_finalize:
                    view = self.finalize(ride_id)
        self.refresh_state(ride_id, phase if view is None else view.phase, view)
        self._notify()

    def _loaded(self, ride_id: str) -> None:
        """A ride was just read from the storage (after its load completed, workingset.py). One the server
        left ready to finalize (it stopped between committing the bike's last change and finalizing) is
        finalized now: nothing may ever change it again (a reconnecting bike with nothing new, an end
        retry answered from the ledger), and a complete ride must get its official totals. Over a shared
        database the finalization claim decides which node writes them. A failure is logged and leaves
        the ride as it was (the caller's read goes on); its next change, or next load, tries again."""
        if self.store.phase(ride_id) is not Phase.ENDED:
            return  # the common case, without decoding a sample
        try:
            with self.store.decoding_once():
                view = self.store.view(ride_id)
                if not view.ready_to_finalize:
                    return
                view = self.finalize(ride_id)
        except StoreError as exc:
            log.warning(
                "ride left ready to finalize not finalized at its load",
                extra={"ride_id": ride_id, "error": str(exc)},
            )
            return
        self.refresh_state(ride_id, view.phase, view)
        self._notify()

    def finalize(self, ride_id: str) -> policy.RideView:
        view, wrote = self.store.finalize_here(ride_id)
        if wrote:
            self._changed_here(ride_id)
            self.metrics.finalized.inc()
            log.info(
                "ride finalized",
                extra={"ride_id": ride_id, "samples": view.samples, "totals": view.totals},
            )
        # Every connection with the ride open gets the finalization (also one another node wrote, which
        # this node took when it lost the claim), the origin included.
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

    # -- other nodes (the ride push) ------------------------------------------------------------------

    async def run(self) -> None:
        """Announce the rides this node commits, hear the other nodes and release idle rides from memory,
        until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.push.run(self._heard), name="push")
            tg.create_task(self._announce_loop(), name="push-announce")
            tg.create_task(self._release_loop(), name="release-idle")

    async def _release_loop(self) -> None:
        # A few sweeps per idle period: a ride leaves memory between 1x and ~1.25x `unload_idle_s` idle.
        period = min(max(self.config.unload_idle_s / 4, 0.25), 15.0)
        while True:
            await asyncio.sleep(period)
            try:
                await self.release_idle()
            except StoreError as exc:
                # The writer failed (PostgreSQL away): nothing is released while writes are not committed.
                log.warning("idle rides not released", extra={"error": str(exc)})

    async def release_idle(self) -> list[str]:
        """Release the rides idle for `unload_idle_s` from memory (workingset.py); returns them."""
        released = await self.working.sweep(lambda ride_id: self._ride_peers.get(ride_id, 0) > 0)
        for ride_id in released:
            self._cached_state.pop(ride_id, None)
        return released

    def _changed_here(self, ride_id: str) -> None:
        if self.multi_node:
            self._announce.add(ride_id)
            self._announce_wake.set()

    async def _announce_loop(self) -> None:
        while True:
            await self._announce_wake.wait()
            self._announce_wake.clear()
            rides, self._announce = self._announce, set()
            try:
                # Announce only what is committed: a node that hears it must find it in the storage.
                await self.store.flushed()
            except StoreError:
                log.warning(
                    "not announcing rides whose changes failed to commit", extra={"rides": len(rides)}
                )
                continue
            self.push.publish(rides)
            self.metrics.push_rides.labels("announced").inc(len(rides))

    def _heard(self, origin: str, rides: Sequence[str]) -> None:
        """Another node committed changes to `rides`; an empty list: this node may have missed some (its
        link to the others was just (re)established). Only rides with connections here are merged now;
        every other ride is merged at its next use here (`fresh`)."""
        if not rides:
            rides = list(self._ride_peers)
        for ride_id in rides:
            self.metrics.push_rides.labels("heard").inc()
            if self._ride_peers.get(ride_id, 0) > 0:
                self.refresh(ride_id)

    def fresh(self, ride_id: str) -> None:
        """Before this node answers about a ride (a sync upgrade, an HTTP request): with other nodes over
        the same database, merge what they committed unless the ride has connections here (those are
        kept current by the push). A ride nobody here has open may have changed anywhere. A ride released
        from memory while idle is read back."""
        if self.multi_node and self._ride_peers.get(ride_id, 0) == 0:
            self.refresh(ride_id)
        self.working.load(ride_id)

    def refresh(self, ride_id: str) -> None:
        """Merge the ride's changes committed by other nodes; push them to this node's connections and
        finalize if the ride is now ready."""
        changed = self.store.refresh_ride(ride_id)  # loads the ride if it is not in memory (counted)
        if not changed:
            return
        for hexid in changed:
            self.broadcast(repo_id(self.store.ref(hexid)))
        # Not ride_changed: what was merged is another node's, already announced; only a finalization
        # written here is announced (finalize does).
        self._settle(ride_id)

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
