"""A device's side of live segments (docs/architecture.md#live-segments) on its sync connection.

- The bike drops its own segment once the backend acknowledged heads of its durable bike document that
  name the segment consolidated and hold its samples: from then on the backend holds them without it
  (also at a restart, from the acknowledgement stored last).
- Any device drops another device's segment (an app: the bike's) as soon as it holds the durable document
  that covers it.
- A segment the backend retired before this connection sent it everything is answered `doc-unavailable`;
  that is no refusal when this device's own durable document names it consolidated.
A dropped document is forgotten by the connection's session too, so nothing more is said about it.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.ride.schema import DocKind, DocRef, Role
from engine.store import ReplicaStore
from engine.sync import client_session as cs
from engine.sync.docid import document_id_from_hex


def _forget(session: cs.ClientSession, dropped: list[DocRef]) -> list[DocRef]:
    for ref in dropped:
        session.forget(document_id_from_hex(ref.doc_id))
    return dropped


def after_acknowledged(
    store: ReplicaStore, session: cs.ClientSession, doc_hex: str, heads: Sequence[bytes]
) -> list[DocRef]:
    """The backend acknowledged `heads` of `doc_hex`: drop the own segments that acknowledgement covers."""
    if not store.has_doc(doc_hex):
        return []
    ref = store.ref(doc_hex)
    if ref.kind is not DocKind.BIKE or ref.device != store.device_id:
        return []
    return _forget(session, store.retire_segments(ref.ride_id, {doc_hex: list(heads)}))


def at_start(store: ReplicaStore, ride_id: str, peer: str) -> list[DocRef]:
    """Before syncing a ride (a restart): drop the own segments the acknowledgement stored last covers."""
    if store.role is not Role.BIKE:
        return []
    durable = DocRef(ride_id, DocKind.BIKE, store.device_id)
    if not store.has_doc(durable.doc_id):
        return []
    return store.retire_segments(ride_id, {durable.doc_id: store.peer_heads(durable.doc_id, peer)})


def after_change(store: ReplicaStore, session: cs.ClientSession, ride_id: str) -> list[DocRef]:
    """The backend sent changes of the ride: drop the other devices' segments they cover."""
    return _forget(session, store.retire_segments(ride_id))


def consolidated(store: ReplicaStore, doc_hex: str) -> bool:
    """Whether `doc_hex` is one of this replica's segments its durable document names consolidated (a
    `doc-unavailable` for it means the backend retired it, not that it refuses anything)."""
    if not store.has_doc(doc_hex):
        return True  # dropped here already
    ref = store.ref(doc_hex)
    return ref.kind is DocKind.SEGMENT and store.segment_retired(ref)
