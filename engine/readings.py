"""The typed values every sensor source emits, whatever its transport.

The engine consumes these and nothing else: it never imports bleak or pyserial. Every reading carries
the id of its source and a per-source sequence number, so a consumer can detect gaps and duplicates,
and the time the host received it (unix seconds), which is what staleness is measured against.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


class Kind(enum.StrEnum):
    HEART_RATE = "heart_rate"
    CADENCE = "cadence"
    POWER = "power"
    RESISTANCE = "resistance"
    SPEED = "speed"
    BATTERY = "battery"
    BODY_LOCATION = "body_location"


class Contact(enum.StrEnum):
    """Sensor-contact status as the strap reports it (HRM flags bits 1-2)."""

    DETECTED = "detected"
    NOT_DETECTED = "not_detected"
    UNSUPPORTED = "unsupported"


UNITS: dict[Kind, str] = {
    Kind.HEART_RATE: "bpm",
    Kind.CADENCE: "rpm",
    Kind.POWER: "W",
    Kind.RESISTANCE: "raw",
    Kind.SPEED: "km/h",
    Kind.BATTERY: "%",
    Kind.BODY_LOCATION: "",
}


@dataclass(frozen=True, slots=True)
class Reading:
    """One value from one sensor.

    `value` is None only when the sensor delivered the field but it carries no measurement (for example
    a strap reporting "no contact"): consumers show that as a state, never as a zero.
    """

    t: float
    source: str
    seq: int
    kind: Kind
    value: float | None
    contact: Contact | None = None
    rr_s: tuple[float, ...] = ()
    energy_kj: int | None = None
    pct: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        return UNITS[self.kind]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "t": round(self.t, 6),
            "source": self.source,
            "seq": self.seq,
            "kind": self.kind.value,
            "value": self.value,
            "unit": self.unit,
        }
        if self.contact is not None:
            out["contact"] = self.contact.value
        if self.kind is Kind.HEART_RATE:
            out["rr_s"] = list(self.rr_s)
            out["energy_kj"] = self.energy_kj
        if self.pct is not None:
            out["pct"] = self.pct
        out.update(self.extra)
        return out


class SourceState(enum.StrEnum):
    """Link states a source reports, so a consumer can show the truth instead of a frozen number."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    LOST = "lost"
    BACKING_OFF = "backing_off"
    STALE = "stale"
    NO_CONTACT = "no_contact"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """A change in a source's link or signal state (reconnects, staleness, contact)."""

    t: float
    source: str
    state: SourceState
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "t": round(self.t, 6),
            "source": self.source,
            "kind": "state",
            "state": self.state.value,
            "detail": self.detail,
        }
        out.update(self.extra)
        return out


SourceItem = Reading | SourceEvent


class SensorSource(Protocol):
    """What every sensor adapter offers the engine: an async stream of readings and state events.

    Iterating runs the source (connecting, reconnecting, reopening ports) until the iterator is closed
    or its task is cancelled; cancellation is the normal, clean way to stop it.
    """

    @property
    def source_id(self) -> str: ...

    def stream(self) -> AsyncIterator[SourceItem]: ...
