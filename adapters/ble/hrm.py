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

Reserved flag bits are ignored, as the spec asks of a client, so a future strap still decodes.

Two readers:

* `parse_hrm` is strict (`ridesync decode hrm`, tests): everything that does not add up (a missing field,
  an odd byte left over, RR flagged but absent) is an `HrmError` naming the field, and carrying the heart
  rate when it could be read (`HrmError.hr`);
* `parse_hrm_lenient` is for live straps: real straps send an odd trailing byte or set the RR flag with no
  interval now and then (pycycling and bleakheart keep those readings too). When the heart rate itself
  is whole it is kept, the damaged fields are dropped, and each defect is named in `defects`. A payload
  without a whole heart rate is still an `HrmError`.
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

    def __init__(self, field: str, message: str, payload: bytes, hr: int | None = None) -> None:
        read = f"; heart rate read: {hr} bpm" if hr is not None else ""
        super().__init__(f"{field}: {message} (payload {payload.hex(' ') or 'empty'}){read}")
        self.field = field
        self.payload = bytes(payload)
        self.hr = hr


# Defects a live strap's payload may have that still leave a whole heart rate (parse_hrm_lenient).
DEFECT_ENERGY_TRUNCATED = "energy_truncated"
DEFECT_RR_FLAG_WITHOUT_RR = "rr_flag_without_rr"
DEFECT_RR_ODD_BYTE = "rr_odd_trailing_byte"
DEFECT_TRAILING_BYTES = "trailing_bytes"


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
    """Strict: any inconsistency is an HrmError (with the heart rate, when it was whole)."""
    m, _ = _parse(bytes(payload), strict=True)
    return m


def parse_hrm_lenient(payload: bytes) -> tuple[HeartRateMeasurement, tuple[str, ...]]:
    """For live straps: the measurement with damaged optional fields dropped, and the defects found.

    Raises HrmError only when the flags or the heart rate itself are missing.
    """
    return _parse(bytes(payload), strict=False)


def _parse(data: bytes, *, strict: bool) -> tuple[HeartRateMeasurement, tuple[str, ...]]:
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

    defects: list[str] = []

    def defect(name: str, field: str, message: str) -> None:
        if strict:
            raise HrmError(field, message, data, hr)
        defects.append(name)

    energy: int | None = None
    if flags & _FLAG_ENERGY:
        if len(data) < pos + 2:
            defect(
                DEFECT_ENERGY_TRUNCATED, "energy_expended", "flagged present but fewer than 2 bytes follow"
            )
            pos = len(data)
        else:
            (energy,) = _U16.unpack_from(data, pos)
            pos += 2

    rest = len(data) - pos
    rr: tuple[int, ...] = ()
    if flags & _FLAG_RR:
        if rest == 0 and DEFECT_ENERGY_TRUNCATED not in defects:
            defect(DEFECT_RR_FLAG_WITHOUT_RR, "rr_interval", "flagged present but no RR interval follows")
        elif rest % 2:
            defect(
                DEFECT_RR_ODD_BYTE,
                "rr_interval",
                f"{rest} bytes left, not a whole number of uint16 intervals",
            )
        whole = rest - rest % 2
        rr = tuple(v for (v,) in _U16.iter_unpack(data[pos : pos + whole]))
    elif rest:
        defect(DEFECT_TRAILING_BYTES, "length", f"{rest} unexpected trailing bytes for flags 0x{flags:02x}")

    m = HeartRateMeasurement(hr=hr, contact=_contact(flags), energy_kj=energy, rr_raw=rr, uint16=uint16)
    return m, tuple(defects)


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
