"""The documents one sync connection may see and write: a `DocumentProvider` (engine/sync/server_session.py)
backed by the backend's replica store.

Visibility: a document the backend holds is known to the peer if its ride is readable by the token
(auth.may_read). A document the backend lacks is known only if it is one the peer may create: the shared
document or the peer's own document of a ride the connection named (`?ride=`), and only while the peer
may write that ride (`Backend.write_refusal`: its owning bike, an app it admits, the backend); for the
ride's owning bike also its next live segments (`Segments.window`: the numbers after the last one its
durable document names consolidated, so a retired segment is never created again). Everything else is
`doc-unavailable`, so ids are not probeable beyond the peer's own rides; so is a live segment retired
while a connection had it open (docs/architecture.md#live-segments).

Writing: a bike or app may sync only documents of rides it may write. Its sync message for any other
ride (one that another bike started while this connection was open, or a readable ride it did not name)
is refused before the gate sees it (`not_ride_owner`), and the connection is closed.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable

from engine.auth.tokens import Claims
from engine.backend.service import Backend, Peer, hex_id
from engine.crdt import CrdtDecodeError
from engine.ride import schema
from engine.ride.schema import DocKind, DocRef
from engine.roles import Role
from engine.store import Backlog, GatedSync, GateResult
from engine.sync.effects import CLOSE_BACKLOG
from engine.sync.server_session import Applied, Rejected, SyncOutcome

log = logging.getLogger(__name__)


class RideDocuments:
    def __init__(
        self,
        backend: Backend,
        peer: Peer,
        *,
        device: str,
        role: Role,
        rides: frozenset[str],
        may_read: Callable[[str], bool],
        claims: Claims | None = None,
    ) -> None:
        self.backend = backend
        # Weak: the connection holds this provider, and a cycle would keep both (and every staging copy)
        # until the cycle collector runs, which `serve` runs rarely.
        self._peer = weakref.ref(peer)
        self.device = device
        self.role = role
        self.may_read = may_read
        # The token's claims decide which rides this peer may write; without them (tests driving the
        # provider directly), a token for this device and role scoped to the connection's rides.
        self.claims = (
            claims if claims is not None else Claims(role, device, frozenset(), rides, 0.0, math.inf)
        )
        self.sessions: dict[str, GatedSync] = {}  # by hex id; the store's gate (engine/store/gate.py)
        config = backend.config
        self.backlog = Backlog(config.max_queued_changes, config.max_queued_bytes)
        self.rides_open: set[str] = set()
        self._rides = frozenset(rides)
        self.documents_open: set[str] = set()  # automerge-repo ids
        self.rejection: str | None = None
        creatable: list[DocRef] = []
        if role is not Role.VIEWER:
            for ride in sorted(rides):
                creatable.append(schema.shared_ref(ride))
                own = schema.own_ref(ride, device, role)
                if own is not None:
                    creatable.append(own)
        self._creatable = {ref.doc_id: ref for ref in creatable}

    @property
    def peer(self) -> Peer:
        peer = self._peer()
        assert peer is not None, "the connection outlives its provider"
        return peer

    def _ref(self, doc_id: str) -> DocRef | None:
        hexid = hex_id(doc_id)
        if hexid is None:
            return None
        store = self.backend.store
        if store.has_doc(hexid):
            ref = store.ref(hexid)
            return ref if self.may_read(ref.ride_id) else None
        creatable = self._creatable.get(hexid) or self._next_segment(hexid)
        if creatable is None or self.backend.write_refusal(self.claims, creatable.ride_id) is not None:
            return None
        return creatable

    def _next_segment(self, hexid: str) -> DocRef | None:
        """One of the owning bike's next live segments of a ride the connection named, or None."""
        if self.role is not Role.BIKE:
            return None
        for ride in sorted(self._rides):
            owner = self.backend.owner(ride)
            if owner is None or owner.device != self.device:
                continue
            # Loads a stored ride not in memory; a ride with nothing stored yet has no segment consolidated.
            self.backend.has_ride(ride)
            for ref in self.backend.store.segments.window(ride, self.device):
                if ref.doc_id == hexid:
                    return ref
        return None

    # -- DocumentProvider -----------------------------------------------------------------------------

    def is_known(self, doc_id: str) -> bool:
        return self._ref(doc_id) is not None

    def open(self, doc_id: str) -> None:
        ref = self._ref(doc_id)
        assert ref is not None, "open() follows is_known()"
        self.backend.store.ensure_doc(ref)
        self.sessions[ref.doc_id] = self.backend.store.gated_sync(ref.doc_id, self.backlog)
        self.documents_open.add(doc_id)
        self.backend.subscribe(doc_id, self.peer)
        if ref.ride_id not in self.rides_open:
            self.rides_open.add(ref.ride_id)
            self.backend.ride_opened(ref.ride_id)

    def receive_sync(self, doc_id: str, data: bytes) -> SyncOutcome:
        hexid = hex_id(doc_id)
        assert hexid is not None and hexid in self.sessions
        backend = self.backend
        started = time.perf_counter()
        ref = backend.store.ref(hexid)
        refusal = None if self.role is Role.VIEWER else backend.write_refusal(self.claims, ref.ride_id)
        if refusal is not None:
            # Not this peer's ride: refused before anything is staged; the ride's own state is untouched.
            backend.metrics.gate_rejects.labels("not_owner").inc()
            self.sessions.clear()
            self.rejection = f"not_ride_owner: {refusal}"
            self._log_rejected(ref, self.rejection, "not_owner")
            return Rejected(self.rejection)
        if ref.kind is DocKind.SEGMENT:
            problem = backend.segment_refusal(ref)
            if problem is not None:
                backend.metrics.gate_rejects.labels("segment_limit").inc()
                self.close()
                self.rejection = problem
                if not backend.store.heads(hexid):
                    backend.store.segments.drop(ref)  # registered by open(); nothing was written to it
                self._log_rejected(ref, problem, "segment_limit")
                return Rejected(problem)
        try:
            outcome = self.sessions[hexid].receive(data, device=self.device, role=self.role)
        except CrdtDecodeError as exc:
            outcome = GateResult(False, reason=f"garbage sync data: {exc}", code="garbage")
        if not outcome.accepted:
            backend.metrics.gate_rejects.labels(outcome.code).inc()
            # The connection is closed by the session; its sync states must not be reused either.
            self.close()
            self.rejection = outcome.reason
            backlog = outcome.code == "backlog"
            # A backlog refusal is logged once, at INFO, by the connection that closes (with the reason).
            self._log_rejected(
                ref,
                outcome.reason,
                outcome.code,
                level=logging.DEBUG if backlog else logging.WARNING,
                changes=len(outcome.new_changes),
            )
            backend.gate_rejected(ref.ride_id, self.device, self.role, outcome.reason)
            return Rejected(outcome.reason, CLOSE_BACKLOG) if backlog else Rejected(outcome.reason)
        if outcome.new_changes:
            backend.ride_changed(ref.ride_id, self.device, self.peer)
        backend.metrics.sync_seconds.observe(time.perf_counter() - started)
        return Applied(changed=bool(outcome.new_changes))

    def _log_rejected(
        self, ref: DocRef, reason: str, code: str, level: int = logging.WARNING, **more: object
    ) -> None:
        """One structured line for a refused sync message (what, whose, why)."""
        log.log(
            level,
            "sync message rejected",
            extra={
                "ride_id": ref.ride_id,
                "doc_id": ref.doc_id,
                "kind": ref.kind.value,
                "device": self.device,
                "role": self.role.value,
                "reason": reason,
                "code": code,
                **more,
            },
        )

    def close(self) -> None:
        """Drop every sync state and staging copy now (rejection, disconnect): what a peer queued is
        freed with its connection."""
        for gated in self.sessions.values():
            gated.close()
        self.sessions.clear()

    def generate_sync(self, doc_id: str) -> bytes | None:
        hexid = hex_id(doc_id)
        staged = self.sessions.get(hexid) if hexid is not None else None
        if staged is not None and not self.backend.store.has_doc(staged.doc_id):
            # A live segment retired while this connection had it open: nothing more to say about it.
            self.sessions.pop(staged.doc_id, None)
            staged.close()
            return None
        return None if staged is None else staged.generate()
