"""The ride's document set: ids, kinds, roles and the root keys each document may hold.

Every document is a flat root map of scalars (see engine/crdt.py for why). Keys:

all documents   `schema` int, `kind` str, `ride_id` str; single-writer documents add `device`, `role`.
bike, app — one per writing device (the bike's is its *durable* document), written only by that
device's actors:
    `s<first seq:08x><last seq:08x>` bytes   a batch blob of packed samples (engine/ride/samples.py);
                                             the key names the seq range, so two writes of one key
                                             always carry the same samples
    `claim.active`, `claim.ended`     JSON   phase claims {"t", "key", ...}; `ended` also declares
                                             "last_seq", "count" and the device's own "duration_s"
    `segment.<n>`                     int    bike: live segment n is consolidated here (its sample count)
segment — a bike's live segment n (id from (ride, "segment", device, n)), written only by that bike: the
    header and sample keys, as a bike document; dropped once the bike document holds its samples
backend — written only by the backend:
    `end.<idempotency key>`           JSON   ride-end events received over HTTP {"t", "device", "role"}
    `finalized`                       JSON   {"t", "totals", "samples": {device: count}}
shared — the one multi-writer document:
    `doc.<doc id>`                    JSON   index of the ride's documents {"kind", "device"}
    `edit.<actor hex>.<n>`            JSON   one edit {"field", "value", "t", "device", "role", "seen"};
                                             keys are unique per writer, so Automerge never has to pick
                                             between concurrent writes: the policy does

Document ids are 16 bytes derived from (ride, kind, device), the kind being the writer's role, so every
replica names a ride's documents alike without coordination, and a server can tell from the id alone which
device (and role) may write it. `DocRef.raw_id` is the form a sync layer encodes (automerge-repo uses
bs58check of 16 bytes).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from engine import ids
from engine.roles import Role as Role  # noqa: PLC0414 (the one Role, re-exported)

SCHEMA_VERSION = 1


class DocKind(enum.StrEnum):
    """What a document is. The kind is part of the document id, so a device's role is checkable from the
    id alone: an app cannot write a document the policy would read as the bike's."""

    SHARED = "shared"
    BIKE = "bike"
    APP = "app"
    BACKEND = "backend"
    # A bike's short-lived live segment (docs/architecture.md#live-segments): written by the bike only.
    SEGMENT = "segment"

    @property
    def role(self) -> Role | None:
        if self is DocKind.SHARED:
            return None
        return Role.BIKE if self is DocKind.SEGMENT else Role(self.value)


class Phase(enum.IntEnum):
    """Forward-only ride phase; the integer order is the only allowed direction."""

    PENDING = 0
    ACTIVE = 1
    ENDED = 2
    FINALIZED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


# Shared-document fields and what values each accepts (anything else is ignored by the policy).
SHARED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "title": str,
    "notes": str,
    "rating": int,
    "target.power_w": (int, float),
    "target.cadence": (int, float),
    "target.resistance": (int, float),
    "target.hr_zone": int,
}
MAX_TEXT = 4000

# Match with `fullmatch`: `$` would also match before a trailing newline.
SAMPLE_KEY = re.compile(r"s([0-9a-f]{8})([0-9a-f]{8})")
# In a bike's durable document: `segment.<n>` = how many samples segment n held when it was consolidated,
# written in the one change that consolidates it (docs/architecture.md#live-segments).
SEGMENT_PREFIX = "segment."
SEGMENT_KEY = re.compile(r"segment\.(0|[1-9][0-9]{0,3})")
# Segment numbers are bounded (a ride of 48 h consolidating every 5 min uses 576; reconnects start new
# ones) so a hostile bike cannot make a server hash or hold an unbounded range of ids.
MAX_SEGMENT = 9999
CLAIM_ACTIVE = "claim.active"
CLAIM_ENDED = "claim.ended"
FINALIZED = "finalized"
END_PREFIX = "end."
DOC_PREFIX = "doc."
EDIT_PREFIX = "edit."


def check_ride_id(ride_id: str) -> str:
    """`ride_id` if it is an id (engine/ids.py, the grammar tokens use too), else ValueError."""
    return ids.check_ride_id(ride_id)


def check_device_id(device_id: str) -> str:
    """`device_id` if it is an id (engine/ids.py), else ValueError."""
    return ids.check_device_id(device_id)


@dataclass(frozen=True, slots=True)
class DocRef:
    """One document of a ride: what it is, and whose (device is empty for the shared document)."""

    ride_id: str
    kind: DocKind
    device: str = ""
    segment: int = 0  # a segment's number (0 for every other kind)

    @property
    def role(self) -> str:
        role = self.kind.role
        return "" if role is None else role.value

    @property
    def doc_id(self) -> str:
        """32 hex characters; the store's primary key for the document."""
        return self.raw_id.hex()

    @property
    def raw_id(self) -> bytes:
        """The 16 id bytes (what automerge-repo's bs58check document id encodes)."""
        return doc_id_bytes(self.ride_id, self.kind, self.device, self.segment)

    @property
    def stored_device(self) -> str:
        """The `device` column of the storage's document row: `<device>/<n>` for a segment (a device id
        holds no `/`, so the row names the segment unambiguously), else the device."""
        return f"{self.device}/{self.segment}" if self.kind is DocKind.SEGMENT else self.device

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"doc_id": self.doc_id, "kind": self.kind.value, "device": self.device}
        if self.kind is DocKind.SEGMENT:
            out["segment"] = self.segment
        return out


def doc_id_bytes(ride_id: str, kind: DocKind, device: str = "", segment: int = 0) -> bytes:
    owner = "" if kind is DocKind.SHARED else device
    tail = f"/{segment}" if kind is DocKind.SEGMENT else ""
    return hashlib.sha256(f"ridesync/v1/{ride_id}/{kind.value}/{owner}{tail}".encode()).digest()[:16]


def segment_ref(ride_id: str, device: str, segment: int) -> DocRef:
    """Live segment `segment` of `device`'s bike document (docs/architecture.md#live-segments)."""
    if isinstance(segment, bool) or not isinstance(segment, int) or not 0 <= segment <= MAX_SEGMENT:
        raise ValueError(f"segment number {segment!r} is not in 0..{MAX_SEGMENT}")
    return DocRef(check_ride_id(ride_id), DocKind.SEGMENT, check_device_id(device), segment)


def ref_from_row(ride_id: str, kind: str, device: str) -> DocRef:
    """The DocRef of a storage row (`DocRef.stored_device`); ValueError for a row no ref makes."""
    doc_kind = DocKind(kind)
    if doc_kind is DocKind.SEGMENT:
        name, _, number = device.rpartition("/")
        if not number.isdigit() or len(number) > 6:
            raise ValueError(f"segment row device {device!r} has no segment number")
        return segment_ref(ride_id, name, int(number))
    return DocRef(check_ride_id(ride_id), doc_kind, device)


def shared_ref(ride_id: str) -> DocRef:
    return DocRef(check_ride_id(ride_id), DocKind.SHARED)


def own_ref(ride_id: str, device: str, role: Role) -> DocRef | None:
    """The single-writer document `device` writes for this ride (None for a viewer)."""
    if role is Role.VIEWER:
        return None
    return DocRef(check_ride_id(ride_id), DocKind(role.value), check_device_id(device))


def parse_doc_ref(ride_id: str, entry: dict[str, Any]) -> DocRef | None:
    """A DocRef from a shared-document index entry, or None if the entry is malformed."""
    try:
        kind = DocKind(str(entry.get("kind")))
        device = "" if kind is DocKind.SHARED else check_device_id(str(entry.get("device")))
        if kind is DocKind.SEGMENT:
            number = entry.get("segment")
            if not isinstance(number, int):
                return None
            return segment_ref(ride_id, device, number)
        return DocRef(check_ride_id(ride_id), kind, device)
    except ValueError:
        return None


def sample_key(first_seq: int, last_seq: int) -> str:
    return f"s{first_seq:08x}{last_seq:08x}"


def end_key(ride_id: str) -> str:
    """The one logical idempotency key of a ride's end, shared by the bike, the app and the backend."""
    return f"ride-end:{ride_id}"


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False)


def loads_object(text: object) -> dict[str, Any] | None:
    """A JSON object from a document value, or None for anything else (hostile peers write anything)."""
    if not isinstance(text, str) or len(text) > 64_000:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None
