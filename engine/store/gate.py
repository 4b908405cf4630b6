"""The actor gate: one connection's gated sync of one document of a store (DESIGN §4).

Checks, on every incoming sync message, before anything reaches the replica's document:
1. the message is applied to a staging copy of the document, and the changes it adds are listed;
2. counters are refused (DESIGN §8); the device must pass `policy.may_write` for the document in the
   ride's current phase;
3. every new change's actor must be unbound (it is then bound to this device: trust on first use) or bound
   to this same device; an actor of another device is refused, relayed or not, since changes are not
   signed and a relay could forge any bound actor;
4. shared document only: every key the message adds must be one the schema lets this device add (see
   `shared_content_problem`), so an app cannot write an edit claiming `"role": "backend"` and outrank
   everyone in the policy.
Only then is the staging copy merged into the document and persisted (with write-behind: queued, and the
caller awaits `store.flushed()` before answering).

Why a staging copy kept across the messages of an exchange rather than a fork per message: Automerge
queues a received change whose dependencies it lacks (the sync protocol's Bloom filter has false
positives, so a peer may skip a change it wrongly believes we have and send its descendants). A fork per
message throws that queue away; the receiver asks again for the change it cannot apply, the peer sends it
again, and the two loop forever (tests/store/test_gate_convergence.py). The staging copy keeps the queue
until the missing dependency arrives; once there is nothing left to say it is dropped, and the next
message starts a fresh one.

Threads: every Automerge call here runs on the caller's thread, the store's owner thread.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from engine.crdt import CrdtDoc, CrdtPanic, SyncSession
from engine.ride import policy, schema
from engine.ride.schema import DocKind, DocRef, Phase, Role

if TYPE_CHECKING:
    from engine.store.replica import GateResult, ReplicaStore

_EDIT_KEY = re.compile(r"^edit\.([0-9a-f]{2,64})\.([1-9][0-9]{0,9})$")
_FIXED = {"schema": schema.SCHEMA_VERSION, "kind": DocKind.SHARED.value}


class GatedSync:
    """One connection's Automerge sync of one document of `store`, gated (see the module docstring).

    `receive` raises CrdtDecodeError for bytes that are not a sync message (nothing changed). After a
    rejection, the connection must be closed and this object dropped."""

    def __init__(self, store: ReplicaStore, doc_id: str, session: SyncSession | None = None) -> None:
        self.store = store
        self.doc_id = doc_id
        self.session = session if session is not None else SyncSession()
        self._staging: CrdtDoc | None = None
        self._merged: list[bytes] = []  # the document's heads last merged into the staging copy

    def _stage(self) -> CrdtDoc:
        """The staging copy, holding everything the document holds (plus changes queued for deps)."""
        real = self.store.doc(self.doc_id)
        heads = real.heads()
        try:
            if self._staging is None:
                self._staging = real.fork()
            elif heads != self._merged:
                self._staging.merge(real)
        except CrdtPanic:
            # The replica's own document panicked: reload it from disk, as the store does for its calls.
            self._staging = None
            self.store.reload()
            raise
        self._merged = heads
        return self._staging

    def generate(self) -> bytes | None:
        if self._staging is None:
            # No exchange in progress, so nothing can be queued: the document itself answers (a push to
            # an idle connection costs no fork).
            try:
                return self.session.generate(self.store.doc(self.doc_id))
            except CrdtPanic:
                self.store.reload()
                raise
        message = self.session.generate(self._stage())
        if message is None:
            # In sync: no change can be waiting for a dependency, so the copy can go.
            self._staging = None
        return message

    def receive(self, data: bytes, *, device: str, role: Role) -> GateResult:
        from engine.store.replica import GateResult

        store = self.store
        ref = store.ref(self.doc_id)
        staging = self._stage()
        real = store.doc(self.doc_id)
        old = real.heads()
        try:
            self.session.receive(staging, data)
            new = tuple(staging.changes_since(old))
            counters = bool(new) and staging.counters_since(old)
        except CrdtPanic as exc:
            # Only the staging copy is poisoned (engine.crdt keeps it in its graveyard).
            self._staging = None
            return GateResult(False, reason=f"the message made Automerge panic: {exc}", code="panic")
        if not new:
            return GateResult(True)
        if counters:
            return GateResult(False, new, "counters are not allowed (DESIGN §8)", "counter")
        phase = store.phase(ref.ride_id)
        if not policy.may_write(ref, device, role, phase):
            reason = (
                f"{role.value} {device} may not write {ref.kind.value} document {ref.doc_id} "
                f"in phase {phase.label}"
            )
            return GateResult(False, new, reason, "not_allowed")
        actors = sorted({c.actor for c in new})
        for actor in actors:
            owner = store.actor_owner(actor)
            if owner is not None and owner[0] != device:
                reason = f"actor {actor.hex()} belongs to {owner[1].value} {owner[0]}, not {device}"
                return GateResult(False, new, reason, "actor")
        if ref.kind is DocKind.SHARED:
            problem = shared_content_problem(
                ref, real, staging, actors={a.hex() for a in actors}, device=device, role=role, phase=phase
            )
            if problem is not None:
                return GateResult(False, new, problem, "content")
        for actor in actors:
            store.bind_actor(actor, device, role)
        self._merged = store.merge_remote(self.doc_id, staging)
        return GateResult(True, new)


def shared_content_problem(
    ref: DocRef,
    old: CrdtDoc,
    new: CrdtDoc,
    *,
    actors: set[str],
    device: str,
    role: Role,
    phase: Phase = Phase.ACTIVE,
) -> str | None:
    """Why the keys `new` adds to the shared document `old` are not this device's to add, or None.

    Allowed: `edit.<actor hex>.<n>` under one of the message's own actors (`actors`) and naming the
    writing device and role, a well-formed `doc.<id>` index entry of this ride, and the header (`schema`,
    `kind`, `ride_id` with their fixed values). No existing key may change or disappear. Once the ride is
    `finalized` (`phase`), a device other than the backend may add only edits of the fields
    `policy.may_edit` leaves open (title, notes, rating)."""
    frozen = phase is Phase.FINALIZED and role is not Role.BACKEND
    before = old.items()
    after = new.items()
    for key in sorted(before):
        if key not in after:
            return f"shared key {key!r} was deleted"
        if after[key] != before[key]:
            return f"shared key {key!r} was overwritten (shared keys are written once)"
    for key in sorted(set(after) - set(before)):
        value = after[key]
        if value is None:
            return f"shared key {key!r} is not a scalar (JS clients: write an ImmutableString)"
        if key in _FIXED:
            if value != _FIXED[key]:
                return f"shared key {key!r} must be {_FIXED[key]!r}"
        elif key == "ride_id":
            if value != ref.ride_id:
                return f"shared key 'ride_id' must be {ref.ride_id!r}"
        elif key.startswith(schema.DOC_PREFIX):
            if frozen:
                return f"shared key {key!r}: ride {ref.ride_id} is finalized; only edits of {_open_fields()}"
            obj = schema.loads_object(value)
            entry = schema.parse_doc_ref(ref.ride_id, obj) if obj is not None else None
            if entry is None or entry.doc_id != key[len(schema.DOC_PREFIX) :]:
                return f"shared key {key!r} is not a valid index entry of ride {ref.ride_id}"
        else:
            match = _EDIT_KEY.match(key)
            if match is None:
                return f"shared key {key!r} is not allowed (only edit.<actor>.<n>, doc.<id> and the header)"
            if match.group(1) not in actors:
                return f"edit {key!r} is not under the actor that wrote it"
            obj = schema.loads_object(value)
            if obj is None:
                return f"edit {key!r} is not a JSON object"
            if obj.get("device") != device or obj.get("role") != role.value:
                return (
                    f"edit {key!r} claims {obj.get('role')!r} {obj.get('device')!r}, "
                    f"but was written by {role.value} {device}"
                )
            field_name = obj.get("field")
            if frozen and not policy.may_edit(str(field_name), role, phase):
                return (
                    f"edit {key!r} of {field_name!r}: ride {ref.ride_id} is finalized; "
                    f"only {_open_fields()} stay editable"
                )
    return None


def _open_fields() -> str:
    return ", ".join(sorted(policy.EDITABLE_AFTER_FINALIZED))
