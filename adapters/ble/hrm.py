"""Heart Rate Service (0x180D) payloads, sans-I/O: bytes in, typed values or a typed error out.

Covers Heart Rate Measurement (0x2A37), Body Sensor Location (0x2A38) and Battery Level (0x2A19).

Heart Rate Measurement layout (Bluetooth Heart Rate Service 1.0, §3.1.1):

    flags    uint8   bit0 HR format (0: uint8, 1: uint16)
                     bit1 sensor contact detected (meaningful only when bit2 is set)
                     bit2 sensor contact feature supported
                     bit3 energy expended present (uint16, kJ)
                     bit4 RR intervals present (uint16 each, unit 1/1024 s, as many as fit)
                     bits5-7 reserved
    hr       uint8 or uint16, little-endian
    energy   uint16, if bit3
    rr...    uint16 each, if bit4 (at least one)

Reserved flag bits are ignored, as the spec asks of a client, so a future strap still decodes. Everything
else that does not add up (a missing field, an odd byte left over, RR flagged but absent) is an `HrmError`
naming the field, because a strap that sends a torn notification must not become a number on a screen.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from engine.readings import Contact


def _uuid16(short: int) -> str:
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


HEART_RATE_SERVICE_UUID = _uuid16(0x180D)
HEART_RATE_MEASUREMENT_UUID = _uuid16(0x2A37)
BODY_SENSOR_LOCATION_UUID = _uuid16(0x2A38)
BATTERY_SERVICE_UUID = _uuid16(0x180F)
BATTERY_LEVEL_UUID = _uuid16(0x2A19)

RR_UNIT_S = 1 / 1024

_FLAG_HR_UINT16 = 0x01
_FLAG_CONTACT_DETECTED = 0x02
_FLAG_CONTACT_SUPPORTED = 0x04
_FLAG_ENERGY = 0x08
_FLAG_RR = 0x10

_U16 = struct.Struct("<H")


class HrmError(ValueError):
    """A payload that is not a valid Heart Rate Service value.

    `field` names what was missing or inconsistent; `payload` is the offending bytes, kept for reports.
    """

    def __init__(self, field: str, message: str, payload: bytes) -> None:
        super().__init__(f"{field}: {message} (payload {payload.hex(' ') or 'empty'})")
        self.field = field
        self.payload = bytes(payload)


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    hr: int
    contact: Contact
    energy_kj: int | None
    rr_raw: tuple[int, ...]
    uint16: bool

    @property
    def rr_s(self) -> tuple[float, ...]:
        return tuple(r * RR_UNIT_S for r in self.rr_raw)


def _contact(flags: int) -> Contact:
    if not flags & _FLAG_CONTACT_SUPPORTED:
        return Contact.UNSUPPORTED
    return Contact.DETECTED if flags & _FLAG_CONTACT_DETECTED else Contact.NOT_DETECTED


def parse_hrm(payload: bytes) -> HeartRateMeasurement:
    data = bytes(payload)
    if not data:
        raise HrmError("flags", "empty payload, expected at least flags and heart rate", data)
    flags = data[0]
    uint16 = bool(flags & _FLAG_HR_UINT16)
    pos = 1
    if uint16:
        if len(data) < pos + 2:
            raise HrmError("heart_rate", "flags say uint16 heart rate but fewer than 2 bytes follow", data)
        (hr,) = _U16.unpack_from(data, pos)
        pos += 2
    else:
        if len(data) < pos + 1:
            raise HrmError("heart_rate", "flags say uint8 heart rate but no byte follows", data)
        hr = data[pos]
        pos += 1

    energy: int | None = None
    if flags & _FLAG_ENERGY:
        if len(data) < pos + 2:
            raise HrmError("energy_expended", "flagged present but fewer than 2 bytes follow", data)
        (energy,) = _U16.unpack_from(data, pos)
        pos += 2

    rest = len(data) - pos
    rr: tuple[int, ...] = ()
    if flags & _FLAG_RR:
        if rest == 0:
            raise HrmError("rr_interval", "flagged present but no RR interval follows", data)
        if rest % 2:
            raise HrmError("rr_interval", f"{rest} bytes left, not a whole number of uint16 intervals", data)
        rr = tuple(v for (v,) in _U16.iter_unpack(data[pos:]))
    elif rest:
        raise HrmError("length", f"{rest} unexpected trailing bytes for flags 0x{flags:02x}", data)

    return HeartRateMeasurement(hr=hr, contact=_contact(flags), energy_kj=energy, rr_raw=rr, uint16=uint16)


def encode_hrm(
    hr: int,
    *,
    contact: Contact = Contact.UNSUPPORTED,
    energy_kj: int | None = None,
    rr_raw: Sequence[int] = (),
    uint16: bool | None = None,
) -> bytes:
    """Encode a measurement. `uint16=None` picks the smallest format that holds `hr`.

    Used by the simulated strap to send payloads that bumble's own encoder never produces.
    """
    if not 0 <= hr <= 0xFFFF:
        raise ValueError(f"heart rate {hr} out of range 0..65535")
    wide = hr > 0xFF if uint16 is None else uint16
    if not wide and hr > 0xFF:
        raise ValueError(f"heart rate {hr} does not fit the uint8 format")
    flags = _FLAG_HR_UINT16 if wide else 0
    if contact is Contact.DETECTED:
        flags |= _FLAG_CONTACT_SUPPORTED | _FLAG_CONTACT_DETECTED
    elif contact is Contact.NOT_DETECTED:
        flags |= _FLAG_CONTACT_SUPPORTED
    out = bytearray([0])
    out += _U16.pack(hr) if wide else bytes([hr])
    if energy_kj is not None:
        if not 0 <= energy_kj <= 0xFFFF:
            raise ValueError(f"energy {energy_kj} kJ out of range 0..65535")
        flags |= _FLAG_ENERGY
        out += _U16.pack(energy_kj)
    if rr_raw:
        flags |= _FLAG_RR
        for r in rr_raw:
            if not 0 <= r <= 0xFFFF:
                raise ValueError(f"RR interval {r} out of range 0..65535 (unit 1/1024 s)")
            out += _U16.pack(r)
    out[0] = flags
    return bytes(out)


class BodySensorLocation(enum.IntEnum):
    OTHER = 0
    CHEST = 1
    WRIST = 2
    FINGER = 3
    HAND = 4
    EAR_LOBE = 5
    FOOT = 6


def parse_body_sensor_location(payload: bytes) -> BodySensorLocation:
    data = bytes(payload)
    if len(data) != 1:
        raise HrmError("body_sensor_location", f"expected 1 byte, got {len(data)}", data)
    try:
        return BodySensorLocation(data[0])
    except ValueError:
        raise HrmError("body_sensor_location", f"reserved value {data[0]}", data) from None


def parse_battery_level(payload: bytes) -> int:
    data = bytes(payload)
    if len(data) != 1:
        raise HrmError("battery_level", f"expected 1 byte, got {len(data)}", data)
    if data[0] > 100:
        raise HrmError("battery_level", f"{data[0]}% is above 100%", data)
    return data[0]
