"""What publishers send to the hub, parsed strictly, and the WebSocket framing the hub writes itself.

Inbound (publisher -> hub) messages are small JSON objects; anything else raises `WireError`, which the
hub answers by closing only that connection (close code 4400). Parsing is pure: bytes in, events out.

The hub writes its outbound frames straight to the transport (one pre-framed bytes object per class tick,
shared by every peer that keeps up), so the framing helpers live here too, with a small client-side
reader used by tests and the benchmark.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from engine.auth.tokens import valid_id
from engine.bike_kinds import BIKE_KINDS
from engine.readings import Contact, Kind, Reading, SourceEvent, SourceState
from engine.wire_error import CLOSE_TOO_BIG, WireError

# The metrics the live lane carries and their short keys in frames.
METRIC_KEYS: dict[str, str] = {
    Kind.HEART_RATE.value: "hr",
    Kind.CADENCE.value: "cad",
    Kind.POWER.value: "pwr",
    Kind.RESISTANCE.value: "res",
}
# A sensor clock may run slightly ahead of the hub's; further than this is a broken or hostile sender.
MAX_FUTURE_S = 5.0
MAX_VALUE = 100_000.0
# Messages in one publisher batch (a JSON array); a bike has a handful of metrics, so this is generous.
MAX_BATCH = 32
# The WebSocket subprotocol under which a hub accepts batches; a publisher sends arrays only when the hub
# selected it, so a new publisher still talks to an old hub (one object per message).
BATCH_PROTOCOL = "ridesync-live.2"
_CONTACTS = frozenset(c.value for c in Contact)


# The live lane's close codes: RFC 6455's, and its own (4000-4999), each mirroring an HTTP status.
CLOSE_GOING_AWAY = 1001
CLOSE_MALFORMED = 4400
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_STALLED = 4408


def _malformed(detail: str) -> WireError:
    return WireError("malformed", detail, close_code=CLOSE_MALFORMED)


@dataclass(frozen=True, slots=True)
class SampleIn:
    device: str
    metric: str  # short key: hr, cad, pwr, res
    value: float | None
    t: float
    seq: int
    src: str
    contact: str | None = None


@dataclass(frozen=True, slots=True)
class StateIn:
    """The publisher's source lost the sensor or its contact: show "no contact", never the last number."""

    device: str
    metric: str
    state: str  # "no_contact" | "ok"
    t: float


@dataclass(frozen=True, slots=True)
class HelloIn:
    device: str
    name: str | None
    max_hr: int | None
    # The rider's kind of bike (engine/bike_kinds.py); None: not said (an older publisher): keep what
    # was known.
    bike: str | None = None


InboundEvent = SampleIn | StateIn | HelloIn


def _num(obj: dict[str, object], key: str, *, optional: bool = False) -> float | None:
    v = obj.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _malformed(f"field {key!r} must be a finite number")
    return float(v)


def _metric(obj: dict[str, object]) -> str:
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in METRIC_KEYS:
        raise _malformed(f"field 'kind' must be one of {sorted(METRIC_KEYS)}")
    return METRIC_KEYS[kind]


def _load(data: str | bytes) -> object:
    if len(data) > 64 * 1024:
        raise WireError("too_big", "message too large", close_code=CLOSE_TOO_BIG)
    try:
        # UTF-8 only (what a WebSocket text message is), decoded here: json.loads would first sniff bytes
        # for UTF-16/32, which costs a third of the parse of a typical sample.
        return json.loads(data.decode() if isinstance(data, bytes) else data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _malformed("message is not JSON") from exc


def parse_inbound(data: str | bytes, device: str, now: float) -> InboundEvent:
    """Parse one publisher message. `device` is the token's device: a message naming another is refused."""
    return _parse_obj(_load(data), device, now)


def parse_inbound_batch(data: str | bytes, device: str, now: float) -> list[InboundEvent]:
    """A message that is one object, or (protocol `ridesync-live.2`) an array of 1..MAX_BATCH objects: a
    publisher with several readings pending sends them in one WebSocket message, which costs the hub one
    message's overhead instead of several. Any bad member refuses the whole message."""
    obj = _load(data)
    if isinstance(obj, list):
        if not 1 <= len(obj) <= MAX_BATCH:
            raise _malformed(f"a batch holds 1 to {MAX_BATCH} messages")
        return [_parse_obj(item, device, now) for item in obj]
    return [_parse_obj(obj, device, now)]


def _parse_obj(obj: object, device: str, now: float) -> InboundEvent:
    if not isinstance(obj, dict):
        raise _malformed("message is not a JSON object")
    claimed = obj.get("device", device)
    if claimed != device:
        raise WireError(
            "forbidden",
            f"token for device {device!r} may not publish for {claimed!r}",
            close_code=CLOSE_FORBIDDEN,
        )
    kind = obj.get("type")
    if kind == "sample":
        t = _num(obj, "t")
        assert t is not None
        if t > now + MAX_FUTURE_S:
            raise _malformed("sample timestamp is in the future")
        seq = obj.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
            raise _malformed("field 'seq' must be a non-negative integer")
        value = _num(obj, "v", optional=True)
        if value is not None and not 0 <= value <= MAX_VALUE:
            raise _malformed("field 'v' out of range")
        src = obj.get("src", device)
        if not valid_id(src):
            raise _malformed("field 'src' must be a short id")
        contact = obj.get("contact")
        # (A str check first: a list or an object is unhashable, and `in` a frozenset would raise TypeError.)
        if contact is not None and (not isinstance(contact, str) or contact not in _CONTACTS):
            raise _malformed("field 'contact' is not a contact state")
        assert isinstance(src, str)
        return SampleIn(
            device, _metric(obj), value, t, seq, src, contact if isinstance(contact, str) else None
        )
    if kind == "state":
        t = _num(obj, "t")
        assert t is not None
        state = obj.get("state")
        if state not in ("no_contact", "ok"):
            raise _malformed("field 'state' must be 'no_contact' or 'ok'")
        assert isinstance(state, str)
        return StateIn(device, _metric(obj), state, t)
    if kind == "hello":
        name = obj.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 64 or not name.isprintable()):
            raise _malformed("field 'name' must be a short printable string")
        max_hr = obj.get("max_hr")
        if max_hr is not None and (
            isinstance(max_hr, bool) or not isinstance(max_hr, int) or not 100 <= max_hr <= 250
        ):
            raise _malformed("field 'max_hr' must be an integer 100..250")
        bike = obj.get("bike")
        if bike is not None and (not isinstance(bike, str) or bike not in BIKE_KINDS):
            raise _malformed(f"field 'bike' must be one of {sorted(BIKE_KINDS)}")
        return HelloIn(
            device,
            name if isinstance(name, str) else None,
            max_hr if isinstance(max_hr, int) else None,
            bike if isinstance(bike, str) else None,
        )
    raise _malformed("field 'type' must be 'sample', 'state' or 'hello'")


def reading_message(reading: Reading) -> str | None:
    """The publisher's message for one reading, or None when the live lane does not carry its kind."""
    if reading.kind.value not in METRIC_KEYS:
        return None
    value = reading.value
    if reading.contact is Contact.NOT_DETECTED:
        value = None
    msg: dict[str, object] = {
        "type": "sample",
        "kind": reading.kind.value,
        "v": value,
        "t": round(reading.t, 6),
        "seq": reading.seq,
        "src": reading.source,
    }
    if reading.contact is not None:
        msg["contact"] = reading.contact.value
    return json.dumps(msg, separators=(",", ":"))


def state_message(event: SourceEvent, kind: Kind = Kind.HEART_RATE) -> str | None:
    """Source states that mean "no number to show" become a no_contact state; recovery becomes ok."""
    if kind.value not in METRIC_KEYS:
        return None
    if event.state in (SourceState.LOST, SourceState.NO_CONTACT, SourceState.STALE, SourceState.FAILED):
        state = "no_contact"
    elif event.state is SourceState.STREAMING:
        state = "ok"
    else:
        return None
    return json.dumps({"type": "state", "kind": kind.value, "state": state, "t": round(event.t, 6)})


# --- WebSocket framing (RFC 6455) -------------------------------------------------------------------------


def server_text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def client_text_frame(payload: bytes) -> bytes:
    """A masked text frame as a client must send it; the all-zero mask leaves the payload as it is."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


class FrameReader:
    """Incremental reader of unmasked server frames: feed bytes, get (opcode, payload) pairs.

    Used by raw-socket clients (tests, the benchmark's load generator), which must not pay for a full
    WebSocket client per connection. Fragmented messages are not produced by the hub and not supported.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if b1 & 0x80:
                raise WireError("masked", "server frames must not be masked")
            if len(buf) - pos < head + n:
                break
            out.append((b0 & 0x0F, bytes(buf[pos + head : pos + head + n])))
            pos += head + n
        del buf[:pos]
        return out
