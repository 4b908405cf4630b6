"""The relay's wire format between hub processes: one message per hub per tick, every class's batch in it.

Pure: events in, bytes out, and back. The broker is shared infrastructure, so a message is parsed as
strictly as a publisher's: anything malformed raises `RelayCodecError` and the whole message is ignored.

A message is compact JSON, `{"o": origin, "c": {class: [event, ...], ...}}`, each event an array led by
its type: `["s", device, metric, v, t, seq, src, contact]` sample, `["n", device, metric, state, t]`
state, `["h", device, name, max_hr(, bike)]` hello, `["j", device]` join, `["l", device]` leave,
`["r", [device, ...]]` roster. Why one message for all classes rather than one per class: redis-py's
pure-Python reader costs tens of µs per received message, and every hub hears every hub (itself
included), so per-class messages would cost each hub (classes x ticks x hubs) of those per second.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from engine.auth.tokens import valid_id
from engine.bike_kinds import BIKE_KINDS
from engine.live.relay import Join, Leave, RelayEvent, Roster
from engine.live.wire import MAX_VALUE, METRIC_KEYS, HelloIn, SampleIn, StateIn
from engine.readings import Contact

CHANNEL = "ridesync:live"
MAX_BATCH_BYTES = 4 * 1024 * 1024
# A message grows past this only with very many classes; the sender then splits it (by class).
SPLIT_BYTES = 512 * 1024
MAX_ROSTER = 100_000
_METRICS = frozenset(METRIC_KEYS.values())
_CONTACTS = frozenset(c.value for c in Contact)


class RelayCodecError(ValueError):
    """A batch from the broker that is not one this codec writes."""


def _event(e: RelayEvent) -> list[object]:
    if isinstance(e, SampleIn):
        return ["s", e.device, e.metric, e.value, e.t, e.seq, e.src, e.contact]
    if isinstance(e, StateIn):
        return ["n", e.device, e.metric, e.state, e.t]
    if isinstance(e, HelloIn):
        # No bike: the 3-field hello an older hub also reads.
        hello: list[object] = ["h", e.device, e.name, e.max_hr]
        return hello if e.bike is None else [*hello, e.bike]
    if isinstance(e, Join):
        return ["j", e.device]
    if isinstance(e, Leave):
        return ["l", e.device]
    return ["r", list(e.devices)]


def own_prefix(origin: str) -> bytes:
    """How every message from `origin` starts (so a hub can skip its own without decoding them)."""
    return b'{"o":' + json.dumps(origin).encode() + b',"c":'


def encode_messages(origin: str, batches: Sequence[tuple[str, Sequence[RelayEvent]]]) -> list[bytes]:
    """One message (more only past SPLIT_BYTES) for a tick's (class, events) batches, in order; a class
    that appears twice has its events concatenated."""
    merged: dict[str, list[RelayEvent]] = {}
    for class_id, events in batches:
        merged.setdefault(class_id, []).extend(events)
    head = own_prefix(origin)
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for class_id, events in merged.items():
        part = (
            json.dumps(class_id).encode()
            + b":"
            + json.dumps([_event(e) for e in events], separators=(",", ":")).encode()
        )
        if parts and size + len(part) > SPLIT_BYTES:
            out.append(head + b"{" + b",".join(parts) + b"}}")
            parts, size = [], 0
        parts.append(part)
        size += len(part)
    if parts:
        out.append(head + b"{" + b",".join(parts) + b"}}")
    return out


def _id(v: object) -> str:
    if not valid_id(v):
        raise RelayCodecError("bad id")
    assert isinstance(v, str)
    return v


def _finite(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise RelayCodecError("bad number")
    return float(v)


def _metric(v: object) -> str:
    if not isinstance(v, str) or v not in _METRICS:
        raise RelayCodecError("bad metric")
    assert isinstance(v, str)
    return v


def _decode_event(raw: object) -> RelayEvent:
    if not isinstance(raw, list) or not raw:
        raise RelayCodecError("event is not a non-empty array")
    tag, args = raw[0], raw[1:]
    if tag == "s" and len(args) == 7:
        device, metric, v, t, seq, src, contact = args
        value = None if v is None else _finite(v)
        if value is not None and not 0 <= value <= MAX_VALUE:
            raise RelayCodecError("value out of range")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
            raise RelayCodecError("bad seq")
        if contact is not None and (not isinstance(contact, str) or contact not in _CONTACTS):
            raise RelayCodecError("bad contact")
        return SampleIn(_id(device), _metric(metric), value, _finite(t), seq, _id(src), contact)
    if tag == "n" and len(args) == 4:
        device, metric, state, t = args
        if state not in ("no_contact", "ok"):
            raise RelayCodecError("bad state")
        return StateIn(_id(device), _metric(metric), state, _finite(t))
    # A hello from an older hub has no bike (3 fields); the bike is a short enum word or null.
    if tag == "h" and len(args) in (3, 4):
        device, name, max_hr, bike = (*args, None) if len(args) == 3 else args
        if name is not None and (not isinstance(name, str) or len(name) > 64 or not name.isprintable()):
            raise RelayCodecError("bad name")
        if max_hr is not None and (
            isinstance(max_hr, bool) or not isinstance(max_hr, int) or not 100 <= max_hr <= 250
        ):
            raise RelayCodecError("bad max_hr")
        if bike is not None and (not isinstance(bike, str) or bike not in BIKE_KINDS):
            raise RelayCodecError("bad bike")
        return HelloIn(_id(device), name, max_hr, bike)
    if tag == "j" and len(args) == 1:
        return Join(_id(args[0]))
    if tag == "l" and len(args) == 1:
        return Leave(_id(args[0]))
    if tag == "r" and len(args) == 1:
        devices = args[0]
        if not isinstance(devices, list) or len(devices) > MAX_ROSTER:
            raise RelayCodecError("bad roster")
        return Roster(tuple(_id(d) for d in devices))
    raise RelayCodecError(f"unknown event {str(tag)[:16]!r} with {len(args)} fields")


def decode_message(data: bytes | str) -> tuple[str, dict[str, list[RelayEvent]]]:
    """(origin, {class: events}) of one message; RelayCodecError for anything else."""
    if len(data) > MAX_BATCH_BYTES:
        raise RelayCodecError("message too large")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RelayCodecError("message is not JSON") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("c"), dict):
        raise RelayCodecError("message is not an object with a class map")
    classes: dict[str, list[RelayEvent]] = {}
    for class_id, events in obj["c"].items():
        if not isinstance(events, list):
            raise RelayCodecError("a class's events are not a list")
        classes[_id(class_id)] = [_decode_event(e) for e in events]
    return _id(obj.get("o")), classes
