"""Cycling Power (0x1818) Cycling Power Measurement (0x2A63) values, sans-I/O: bytes in, a typed value or a
`CpsError` out, and the encoder back.

Layout (Cycling Power Service, Cycling Power Measurement; little-endian, fields in this order):

    flags                 uint16  bit0  Pedal Power Balance Present
                                  bit1  Pedal Power Balance Reference (0 unknown, 1 left pedal)
                                  bit2  Accumulated Torque Present
                                  bit3  Accumulated Torque Source (0 wheel based, 1 crank based)
                                  bit4  Wheel Revolution Data Present
                                  bit5  Crank Revolution Data Present
                                  bit6  Extreme Force Magnitudes Present
                                  bit7  Extreme Torque Magnitudes Present
                                  bit8  Extreme Angles Present
                                  bit9  Top Dead Spot Angle Present
                                  bit10 Bottom Dead Spot Angle Present
                                  bit11 Accumulated Energy Present
                                  bit12 Offset Compensation Indicator
                                  bits13-15 reserved
    instantaneous power   sint16  W, always present
    pedal power balance   uint8   1/2 %                                      if bit0
    accumulated torque    uint16  1/32 N·m                                   if bit2
    wheel revolutions     uint32, last wheel event time uint16 (1/2048 s)    if bit4
    crank revolutions     uint16, last crank event time uint16 (1/1024 s)    if bit5
    extreme force         sint16 maximum, sint16 minimum, N                  if bit6
    extreme torque        sint16 maximum, sint16 minimum, 1/32 N·m           if bit7
    extreme angles        uint24: maximum angle in the low 12 bits, minimum
                          angle in the high 12 bits, degrees                 if bit8
    top dead spot angle   uint16  degrees                                    if bit9
    bottom dead spot      uint16  degrees                                    if bit10
    accumulated energy    uint16  kJ                                         if bit11

Force and torque extremes are mutually exclusive (a sensor measures one or the other), so a value with
both bits set is a `CpsError`, as are reserved flag bits, a flagged field cut short, and bytes after the
flagged fields. The reference and source bits (1, 3) and the offset compensation indicator (12) carry no
field and are kept as booleans whatever else is present, so a value re-encodes byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.ble.gatt_fields import FieldReader, FieldWriter, FitnessPayloadError, uuid16
from adapters.ble.revolutions import RevolutionData

CYCLING_POWER_SERVICE_UUID = uuid16(0x1818)
CYCLING_POWER_MEASUREMENT_UUID = uuid16(0x2A63)

CPS_WHEEL_TICKS_PER_S = 2048
CPS_CRANK_TICKS_PER_S = 1024

_BALANCE = 1 << 0
_BALANCE_LEFT = 1 << 1
_TORQUE = 1 << 2
_TORQUE_CRANK = 1 << 3
_WHEEL = 1 << 4
_CRANK = 1 << 5
_FORCE_EXTREMES = 1 << 6
_TORQUE_EXTREMES = 1 << 7
_ANGLES = 1 << 8
_TOP_DEAD_SPOT = 1 << 9
_BOTTOM_DEAD_SPOT = 1 << 10
_ENERGY = 1 << 11
_OFFSET_COMPENSATION = 1 << 12
_RESERVED = 0xE000

_ANGLE_MAX = 0xFFF


class CpsError(FitnessPayloadError):
    profile = "cps"


@dataclass(frozen=True, slots=True)
class Extremes:
    maximum: int
    minimum: int


@dataclass(frozen=True, slots=True)
class CyclingPowerMeasurement:
    """Raw field values (`*_raw` in the field's unit); the properties convert them to SI units."""

    power_w: int
    balance_raw: int | None = None
    balance_left: bool = False
    torque_raw: int | None = None
    torque_crank_based: bool = False
    wheel: RevolutionData | None = None
    crank: RevolutionData | None = None
    force_n: Extremes | None = None
    torque_extremes_raw: Extremes | None = None
    angles_deg: Extremes | None = None
    top_dead_spot_deg: int | None = None
    bottom_dead_spot_deg: int | None = None
    energy_kj: int | None = None
    offset_compensation: bool = False

    @property
    def balance_pct(self) -> float | None:
        return None if self.balance_raw is None else self.balance_raw / 2

    @property
    def torque_nm(self) -> float | None:
        return None if self.torque_raw is None else self.torque_raw / 32


def wheel_data(revs: int, event_time_raw: int) -> RevolutionData:
    return RevolutionData(revs, event_time_raw, CPS_WHEEL_TICKS_PER_S, 32)


def crank_data(revs: int, event_time_raw: int) -> RevolutionData:
    return RevolutionData(revs, event_time_raw, CPS_CRANK_TICKS_PER_S, 16)


def parse_cps(payload: bytes) -> CyclingPowerMeasurement:
    r = FieldReader(payload, CpsError)
    f = r.flags(2, reserved_mask=_RESERVED)
    if f & _FORCE_EXTREMES and f & _TORQUE_EXTREMES:
        raise r.fail("flags", "extreme force and extreme torque magnitudes are mutually exclusive")
    power = r.sint("instantaneous_power", 2)
    balance = r.uint("pedal_power_balance", 1) if f & _BALANCE else None
    torque = r.uint("accumulated_torque", 2) if f & _TORQUE else None
    wheel = crank = force = torque_ext = angles = None
    if f & _WHEEL:
        wheel = wheel_data(r.uint("wheel_revolutions", 4), r.uint("last_wheel_event_time", 2))
    if f & _CRANK:
        crank = crank_data(r.uint("crank_revolutions", 2), r.uint("last_crank_event_time", 2))
    if f & _FORCE_EXTREMES:
        force = Extremes(r.sint("maximum_force_magnitude", 2), r.sint("minimum_force_magnitude", 2))
    if f & _TORQUE_EXTREMES:
        torque_ext = Extremes(r.sint("maximum_torque_magnitude", 2), r.sint("minimum_torque_magnitude", 2))
    if f & _ANGLES:
        packed = r.uint("extreme_angles", 3)
        angles = Extremes(packed & _ANGLE_MAX, packed >> 12)
    top = r.uint("top_dead_spot_angle", 2) if f & _TOP_DEAD_SPOT else None
    bottom = r.uint("bottom_dead_spot_angle", 2) if f & _BOTTOM_DEAD_SPOT else None
    energy = r.uint("accumulated_energy", 2) if f & _ENERGY else None
    r.end()
    return CyclingPowerMeasurement(
        power_w=power,
        balance_raw=balance,
        balance_left=bool(f & _BALANCE_LEFT),
        torque_raw=torque,
        torque_crank_based=bool(f & _TORQUE_CRANK),
        wheel=wheel,
        crank=crank,
        force_n=force,
        torque_extremes_raw=torque_ext,
        angles_deg=angles,
        top_dead_spot_deg=top,
        bottom_dead_spot_deg=bottom,
        energy_kj=energy,
        offset_compensation=bool(f & _OFFSET_COMPENSATION),
    )


def encode_cps(m: CyclingPowerMeasurement) -> bytes:
    if m.force_n is not None and m.torque_extremes_raw is not None:
        raise ValueError("extreme force and extreme torque magnitudes are mutually exclusive")
    w = FieldWriter()
    f = (_BALANCE_LEFT if m.balance_left else 0) | (_TORQUE_CRANK if m.torque_crank_based else 0)
    f |= _OFFSET_COMPENSATION if m.offset_compensation else 0
    w.sint("instantaneous_power", m.power_w, 2)
    if m.balance_raw is not None:
        f |= _BALANCE
        w.uint("pedal_power_balance", m.balance_raw, 1)
    if m.torque_raw is not None:
        f |= _TORQUE
        w.uint("accumulated_torque", m.torque_raw, 2)
    if m.wheel is not None:
        m.wheel.require_ticks(CPS_WHEEL_TICKS_PER_S)
        f |= _WHEEL
        w.uint("wheel_revolutions", m.wheel.revs, 4)
        w.uint("last_wheel_event_time", m.wheel.event_time_raw, 2)
    if m.crank is not None:
        m.crank.require_ticks(CPS_CRANK_TICKS_PER_S)
        f |= _CRANK
        w.uint("crank_revolutions", m.crank.revs, 2)
        w.uint("last_crank_event_time", m.crank.event_time_raw, 2)
    if m.force_n is not None:
        f |= _FORCE_EXTREMES
        w.sint("maximum_force_magnitude", m.force_n.maximum, 2)
        w.sint("minimum_force_magnitude", m.force_n.minimum, 2)
    if m.torque_extremes_raw is not None:
        f |= _TORQUE_EXTREMES
        w.sint("maximum_torque_magnitude", m.torque_extremes_raw.maximum, 2)
        w.sint("minimum_torque_magnitude", m.torque_extremes_raw.minimum, 2)
    if m.angles_deg is not None:
        f |= _ANGLES
        for name, angle in (("maximum_angle", m.angles_deg.maximum), ("minimum_angle", m.angles_deg.minimum)):
            if not 0 <= angle <= _ANGLE_MAX:
                raise ValueError(f"{name} {angle} out of range 0..{_ANGLE_MAX}")
        w.uint("extreme_angles", m.angles_deg.maximum | m.angles_deg.minimum << 12, 3)
    for bit, name, value in (
        (_TOP_DEAD_SPOT, "top_dead_spot_angle", m.top_dead_spot_deg),
        (_BOTTOM_DEAD_SPOT, "bottom_dead_spot_angle", m.bottom_dead_spot_deg),
        (_ENERGY, "accumulated_energy", m.energy_kj),
    ):
        if value is not None:
            f |= bit
            w.uint(name, value, 2)
    return w.value(f, 2)
