"""Fitness Machine Service (0x1826) Indoor Bike Data (0x2AD2) values, sans-I/O: bytes in, a typed value or
an `FtmsError` out, and the encoder back.

Layout (Fitness Machine Service, Indoor Bike Data; little-endian, fields in this order):

    flags                  uint16  bit0  More Data: the Instantaneous Speed field is present when this
                                         bit is 0 (inverted, unlike every other bit)
                                   bit1  Average Speed present
                                   bit2  Instantaneous Cadence present
                                   bit3  Average Cadence present
                                   bit4  Total Distance present
                                   bit5  Resistance Level present
                                   bit6  Instantaneous Power present
                                   bit7  Average Power present
                                   bit8  Expended Energy present (the three energy fields together)
                                   bit9  Heart Rate present
                                   bit10 Metabolic Equivalent present
                                   bit11 Elapsed Time present
                                   bit12 Remaining Time present
                                   bits13-15 reserved
    instantaneous speed    uint16  1/100 km/h     if bit0 is 0
    average speed          uint16  1/100 km/h
    instantaneous cadence  uint16  1/2 rpm
    average cadence        uint16  1/2 rpm
    total distance         uint24  m
    resistance level       sint16  unitless
    instantaneous power    sint16  W
    average power          sint16  W
    total energy           uint16  kcal           } 0xFFFF, 0xFFFF and 0xFF mean "Data Not Available"
    energy per hour        uint16  kcal           } (decoded as None inside `ExpendedEnergy`)
    energy per minute      uint8   kcal           }
    heart rate             uint8   bpm
    metabolic equivalent   uint8   1/10
    elapsed time           uint16  s
    remaining time         uint16  s

A machine may split one data record over several notifications (More Data = 1 on all but the last); each
notification is decoded on its own here, and the speed appears in the one with More Data = 0. Strict,
like `parse_hrm`: reserved flag bits, a flagged field cut short and bytes after the flagged fields are
each an `FtmsError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from adapters.ble.gatt_fields import FieldReader, FieldWriter, FitnessPayloadError, uuid16

FITNESS_MACHINE_SERVICE_UUID = uuid16(0x1826)
INDOOR_BIKE_DATA_UUID = uuid16(0x2AD2)

_MORE_DATA = 1 << 0
_AVG_SPEED = 1 << 1
_CADENCE = 1 << 2
_AVG_CADENCE = 1 << 3
_DISTANCE = 1 << 4
_RESISTANCE = 1 << 5
_POWER = 1 << 6
_AVG_POWER = 1 << 7
_ENERGY = 1 << 8
_HR = 1 << 9
_MET = 1 << 10
_ELAPSED = 1 << 11
_REMAINING = 1 << 12
_RESERVED = 0xE000

_NOT_AVAILABLE_U16 = 0xFFFF
_NOT_AVAILABLE_U8 = 0xFF


class FtmsError(FitnessPayloadError):
    profile = "ftms"


@dataclass(frozen=True, slots=True)
class ExpendedEnergy:
    """The energy triple; None for a value the machine sent as "Data Not Available"."""

    total_kcal: int | None
    per_hour_kcal: int | None
    per_minute_kcal: int | None


@dataclass(frozen=True, slots=True)
class IndoorBikeData:
    """Raw field values (`*_raw` in the field's unit); the properties convert them. None: not present."""

    speed_raw: int | None = None
    avg_speed_raw: int | None = None
    cadence_raw: int | None = None
    avg_cadence_raw: int | None = None
    distance_m: int | None = None
    resistance: int | None = None
    power_w: int | None = None
    avg_power_w: int | None = None
    energy: ExpendedEnergy | None = None
    hr: int | None = None
    met_raw: int | None = None
    elapsed_s: int | None = None
    remaining_s: int | None = None

    @property
    def speed_kmh(self) -> float | None:
        return None if self.speed_raw is None else self.speed_raw / 100

    @property
    def avg_speed_kmh(self) -> float | None:
        return None if self.avg_speed_raw is None else self.avg_speed_raw / 100

    @property
    def cadence_rpm(self) -> float | None:
        return None if self.cadence_raw is None else self.cadence_raw / 2

    @property
    def avg_cadence_rpm(self) -> float | None:
        return None if self.avg_cadence_raw is None else self.avg_cadence_raw / 2

    @property
    def met(self) -> float | None:
        return None if self.met_raw is None else self.met_raw / 10


class _Field(NamedTuple):
    bit: int
    name: str
    size: int
    signed: bool
    attr: str  # the IndoorBikeData attribute


# Every single-valued field after the speed, in spec order; the energy triple sits between average power and
# heart rate.
_BEFORE_ENERGY = tuple(
    _Field(*spec)
    for spec in (
        (_AVG_SPEED, "average_speed", 2, False, "avg_speed_raw"),
        (_CADENCE, "instantaneous_cadence", 2, False, "cadence_raw"),
        (_AVG_CADENCE, "average_cadence", 2, False, "avg_cadence_raw"),
        (_DISTANCE, "total_distance", 3, False, "distance_m"),
        (_RESISTANCE, "resistance_level", 2, True, "resistance"),
        (_POWER, "instantaneous_power", 2, True, "power_w"),
        (_AVG_POWER, "average_power", 2, True, "avg_power_w"),
    )
)
_AFTER_ENERGY = tuple(
    _Field(*spec)
    for spec in (
        (_HR, "heart_rate", 1, False, "hr"),
        (_MET, "metabolic_equivalent", 1, False, "met_raw"),
        (_ELAPSED, "elapsed_time", 2, False, "elapsed_s"),
        (_REMAINING, "remaining_time", 2, False, "remaining_s"),
    )
)


def _read(r: FieldReader, field: _Field) -> int:
    return r.sint(field.name, field.size) if field.signed else r.uint(field.name, field.size)


def parse_indoor_bike_data(payload: bytes) -> IndoorBikeData:
    r = FieldReader(payload, FtmsError)
    f = r.flags(2, reserved_mask=_RESERVED)
    values: dict[str, Any] = {}  # attribute -> value, per the tables above
    if not f & _MORE_DATA:
        values["speed_raw"] = r.uint("instantaneous_speed", 2)
    for field in _BEFORE_ENERGY:
        if f & field.bit:
            values[field.attr] = _read(r, field)
    if f & _ENERGY:
        total = r.uint("total_energy", 2)
        per_hour = r.uint("energy_per_hour", 2)
        per_minute = r.uint("energy_per_minute", 1)
        values["energy"] = ExpendedEnergy(
            None if total == _NOT_AVAILABLE_U16 else total,
            None if per_hour == _NOT_AVAILABLE_U16 else per_hour,
            None if per_minute == _NOT_AVAILABLE_U8 else per_minute,
        )
    for field in _AFTER_ENERGY:
        if f & field.bit:
            values[field.attr] = _read(r, field)
    r.end()
    return IndoorBikeData(**values)


def encode_indoor_bike_data(m: IndoorBikeData) -> bytes:
    """Encode one notification. No speed sets More Data (the speed field is then absent)."""
    w = FieldWriter()
    f = 0
    if m.speed_raw is None:
        f |= _MORE_DATA
    else:
        w.uint("instantaneous_speed", m.speed_raw, 2)
    for field in _BEFORE_ENERGY:
        f |= _write(w, field, getattr(m, field.attr))
    if m.energy is not None:
        f |= _ENERGY
        e = m.energy
        _write_available(w, "total_energy", e.total_kcal, 2, _NOT_AVAILABLE_U16)
        _write_available(w, "energy_per_hour", e.per_hour_kcal, 2, _NOT_AVAILABLE_U16)
        _write_available(w, "energy_per_minute", e.per_minute_kcal, 1, _NOT_AVAILABLE_U8)
    for field in _AFTER_ENERGY:
        f |= _write(w, field, getattr(m, field.attr))
    return w.value(f, 2)


def _write(w: FieldWriter, field: _Field, value: int | None) -> int:
    """Writes the field when it has a value; returns its flag bit then, else 0."""
    if value is None:
        return 0
    if field.signed:
        w.sint(field.name, value, field.size)
    else:
        w.uint(field.name, value, field.size)
    return field.bit


def _write_available(w: FieldWriter, name: str, value: int | None, size: int, sentinel: int) -> None:
    """None is sent as "Data Not Available"; the sentinel itself cannot be sent as a value."""
    if value == sentinel:
        raise ValueError(f"{name} {value} is the 'Data Not Available' value; pass None for that")
    w.uint(name, sentinel if value is None else value, size)
