"""A ride's documents decoded into plain, immutable Python data: the policy's only input.

Nothing here knows about Automerge; engine/ride/documents.py produces these from CRDT documents, and
tests may build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.ride.samples import Sample
from engine.ride.schema import DocRef
from engine.roles import Role


@dataclass(frozen=True, slots=True)
class Claim:
    """A device's phase claim. `ended` claims declare what the device recorded and what it measured."""

    t: float
    key: str
    last_seq: int | None = None
    count: int | None = None
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class DeviceDoc:
    """A bike's or an app's own document. `batches` counts its sample blobs (also when a light decode
    left `samples` empty)."""

    ref: DocRef
    samples: tuple[Sample, ...] = ()
    active: Claim | None = None
    ended: Claim | None = None
    problems: tuple[str, ...] = ()
    batches: int = 0

    @property
    def device(self) -> str:
        return self.ref.device

    @property
    def role(self) -> str:
        return self.ref.role


@dataclass(frozen=True, slots=True)
class EndEvent:
    key: str
    t: float
    device: str
    role: str


@dataclass(frozen=True, slots=True)
class Finalization:
    t: float
    totals: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendDoc:
    ref: DocRef
    end_events: tuple[EndEvent, ...] = ()
    finalized: Finalization | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Edit:
    """One write of one shared field. `seen` is the key of the edit the writer saw as current, if any."""

    key: str
    field: str
    value: Any
    t: float
    device: str
    role: str
    seen: str | None = None


@dataclass(frozen=True, slots=True)
class SharedDoc:
    ride_id: str
    edits: tuple[Edit, ...] = ()
    index: tuple[DocRef, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RideDocs:
    """Everything one replica currently holds of a ride. `owner`: the device id of the bike that owns the
    ride, where the replica knows it (the backend binds it at the bike's first sync); None elsewhere."""

    ride_id: str
    shared: SharedDoc | None = None
    devices: tuple[DeviceDoc, ...] = ()
    backends: tuple[BackendDoc, ...] = ()
    owner: str | None = None

    def device_doc(self, device: str, role: Role) -> DeviceDoc | None:
        """The document `device` writes in `role` (a bike's or an app's own), if this replica holds it."""
        for doc in self.devices:
            if doc.device == device and doc.ref.kind.value == role.value:
                return doc
        return None
