"""The actor gate: one connection's gated sync of one document of a store (docs/architecture.md#the-gate).

Checks, on every incoming sync message, before anything reaches the replica's document:
1. a message that carries changes (read from its bytes, `engine.crdt.inspect_sync_message`, before
   Automerge sees it) is refused unless the device passes `policy.may_write` for the document in the
   ride's current phase: a viewer, or a writer of another document, stages nothing at all, not even
   changes Automerge would only queue;
2. the message is applied to a staging copy of the document, and the changes it adds are listed;
   counters are refused (docs/architecture.md#automerge-hazards);
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

That queue is memory a peer can pin: changes whose dependency never comes stay until the staging copy
goes. So a connection's queued, unapplied changes are bounded (`Backlog`, shared by the connection's
gated syncs): over its limit in changes or bytes, the message is refused with code "backlog" and the
connection must close. Counted are the change chunks a message carried that have not (yet) become part
of the document, by hash; a change the document already had counts too until the exchange settles (a
real peer does not resend what the server holds, so this errs only against peers that do).

Threads: every Automerge call here runs on the caller's thread, the store's owner thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from engine.crdt import ChangeInfo, CrdtDoc, CrdtPanic, SyncSession, inspect_sync_message
from engine.ride import policy, schema
from engine.ride.schema import DocKind, DocRef, Phase, Role

_EDIT_KEY = re.compile(r"edit\.([0-9a-f]{2,64})\.([1-9][0-9]{0,9})")  # fullmatch: `$` passes a "\n"
_FIXED = {"schema": schema.SCHEMA_VERSION, "kind": DocKind.SHARED.value}


@dataclass(frozen=True, slots=True)
class GateResult:
    """The outcome of a gated sync message. On rejection nothing changed; drop the connection's session."""

    accepted: bool
    new_changes: tuple[ChangeInfo, ...] = ()
    reason: str = ""
    # why it was refused, for metrics: actor | not_allowed | counter | content | panic | backlog
    code: str = ""


class GateStore(Protocol):
    """What the gate needs from a replica store (the backend's `ReplicaStore` is one)."""

    def ref(self, doc_id: str) -> DocRef: ...

    def doc(self, doc_id: str) -> CrdtDoc: ...

    def phase(self, ride_id: str) -> Phase: ...

    def actor_owner(self, actor: bytes) -> tuple[str, Role] | None: ...

    def bind_actor(self, actor: bytes, device: str, role: Role) -> bool: ...

    def merge_remote(self, doc_id: str, other: CrdtDoc) -> list[bytes]: ...

    def reload(self) -> None: ...


@dataclass(slots=True)
class Backlog:
    """The changes one connection's staging copies hold unapplied (waiting for a missing dependency),
    and its limits. One per connection, shared by all its `GatedSync`s."""

    max_changes: int
    max_bytes: int
    changes: int = 0
    bytes: int = 0

    def add(self, changes: int, nbytes: int) -> None:
        self.changes += changes
        self.bytes += nbytes

    @property
    def over(self) -> bool:
        return self.changes > self.max_changes or self.bytes > self.max_bytes


class GatedSync:
    """One connection's Automerge sync of one document of `store`, gated (see the module docstring).

    `receive` raises CrdtDecodeError for bytes that are not a sync message (nothing changed). After a
    rejection, the connection must be closed and this object dropped (`close` frees its staging copy at
    once)."""

    def __init__(
        self,
        store: GateStore,
        doc_id: str,
        session: SyncSession | None = None,
        backlog: Backlog | None = None,
    ) -> None:
        self.store = store
        self.doc_id = doc_id
        self.session = session if session is not None else SyncSession()
        self.backlog = backlog
        self._staging: CrdtDoc | None = None
        self._merged: list[bytes] = []  # the document's heads last merged into the staging copy
        self._pending: dict[bytes, int] = {}  # change hash -> bytes, received and not (yet) applied

    def _drop_staging(self) -> None:
        """Drop the staging copy and whatever Automerge queued in it."""
        self._staging = None
        if self._pending:
            if self.backlog is not None:
                self.backlog.add(-len(self._pending), -sum(self._pending.values()))
            self._pending.clear()

    def close(self) -> None:
        """The connection is done with this document: free the staging copy now."""
        self._drop_staging()

    @property
    def pending(self) -> tuple[int, int]:
        """(changes, bytes) received on this document and not applied: Automerge's queue, at most."""
        return len(self._pending), sum(self._pending.values())

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
            self._drop_staging()
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
            self._drop_staging()
        return message

    def receive(self, data: bytes, *, device: str, role: Role) -> GateResult:
        store = self.store
        ref = store.ref(self.doc_id)
        info = inspect_sync_message(data)
        if info.carries_changes:
            # Before Automerge sees it: a device that may not write this document stages nothing.
            phase = store.phase(ref.ride_id)
            if not policy.may_write(ref, device, role, phase):
                reason = (
                    f"{role.value} {device} may not write {ref.kind.value} document {ref.doc_id} "
                    f"in phase {phase.label}"
                )
                return GateResult(False, (), reason, "not_allowed")
        staging = self._stage()
        real = store.doc(self.doc_id)
        old = real.heads()
        try:
            self.session.receive(staging, data)
            new = tuple(staging.changes_since(old))
            counters = bool(new) and staging.counters_since(old)
        except CrdtPanic as exc:
            # Only the staging copy is poisoned (engine.crdt keeps it in its graveyard).
            self._drop_staging()
            return GateResult(False, reason=f"the message made Automerge panic: {exc}", code="panic")
        problem = self._count_pending(info.changes, new)
        if problem is not None:
            self._drop_staging()
            return GateResult(False, new, problem, "backlog")
        if not new:
            return GateResult(True)
        if counters:
            return GateResult(
                False, new, "counters are not allowed (docs/architecture.md#automerge-hazards)", "counter"
            )
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

    def _count_pending(
        self, received: tuple[tuple[bytes, int], ...], new: tuple[ChangeInfo, ...]
    ) -> str | None:
        """Account the message's change chunks that are still unapplied; why that is too many, or None."""
        added = added_bytes = 0
        for change_hash, size in received:
            if change_hash not in self._pending:
                self._pending[change_hash] = size
                added, added_bytes = added + 1, added_bytes + size
        for change in new:
            if change.hash in self._pending:
                added, added_bytes = added - 1, added_bytes - self._pending.pop(change.hash)
        backlog = self.backlog
        if backlog is None:
            return None
        backlog.add(added, added_bytes)
        if not backlog.over:
            return None
        return (
            f"{backlog.changes} changes ({backlog.bytes} bytes) queued for missing dependencies; "
            f"the limit is {backlog.max_changes} changes, {backlog.max_bytes} bytes"
        )


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
    `kind`, `ride_id` with their fixed values); a live segment's entry only from that bike. No existing key
    may change or disappear. Once the ride is
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
            if entry.kind is DocKind.SEGMENT and (role is not Role.BIKE or entry.device != device):
                # Every replica fetches the segments the index lists: only their bike lists them.
                return f"shared key {key!r} lists a live segment of bike {entry.device}; only that bike may"
        else:
            match = _EDIT_KEY.fullmatch(key)
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
