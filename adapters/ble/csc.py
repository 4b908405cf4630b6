"""Cycling Speed and Cadence (0x1816) CSC Measurement (0x2A5B) values, sans-I/O: bytes in, a typed value or
a `CscError` out, and the encoder back.

Layout (Cycling Speed and Cadence Service, CSC Measurement; little-endian):

    flags        uint8    bit0 Wheel Revolution Data Present
                          bit1 Crank Revolution Data Present
                          bits2-7 reserved
    wheel revs   uint32   cumulative wheel revolutions          } if bit0
    wheel time   uint16   last wheel event time, 1/1024 s       }
    crank revs   uint16   cumulative crank revolutions          } if bit1
    crank time   uint16   last crank event time, 1/1024 s       }

Strict, like `parse_hrm`: reserved flag bits, a flagged field cut short and bytes after the flagged fields
are each a `CscError` naming the field. Cadence and speed come from successive values through
`adapters.ble.revolutions.RevolutionRate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.ble.gatt_fields import FieldReader, FieldWriter, FitnessPayloadError, uuid16
from adapters.ble.revolutions import RevolutionData

CSC_SERVICE_UUID = uuid16(0x1816)
CSC_MEASUREMENT_UUID = uuid16(0x2A5B)

CSC_TICKS_PER_S = 1024

_FLAG_WHEEL = 0x01
_FLAG_CRANK = 0x02
_RESERVED = 0xFC


class CscError(FitnessPayloadError):
    profile = "csc"


@dataclass(frozen=True, slots=True)
class CscMeasurement:
    wheel: RevolutionData | None
    crank: RevolutionData | None


def wheel_data(revs: int, event_time_raw: int) -> RevolutionData:
    return RevolutionData(revs, event_time_raw, CSC_TICKS_PER_S, 32)


def crank_data(revs: int, event_time_raw: int) -> RevolutionData:
    return RevolutionData(revs, event_time_raw, CSC_TICKS_PER_S, 16)


def parse_csc(payload: bytes) -> CscMeasurement:
    r = FieldReader(payload, CscError)
    flags = r.flags(1, reserved_mask=_RESERVED)
    wheel = crank = None
    if flags & _FLAG_WHEEL:
        wheel = wheel_data(r.uint("wheel_revolutions", 4), r.uint("last_wheel_event_time", 2))
    if flags & _FLAG_CRANK:
        crank = crank_data(r.uint("crank_revolutions", 2), r.uint("last_crank_event_time", 2))
    r.end()
    return CscMeasurement(wheel, crank)


def encode_csc(m: CscMeasurement) -> bytes:
    w = FieldWriter()
    flags = 0
    if m.wheel is not None:
        m.wheel.require_ticks(CSC_TICKS_PER_S)
        flags |= _FLAG_WHEEL
        w.uint("wheel_revolutions", m.wheel.revs, 4)
        w.uint("last_wheel_event_time", m.wheel.event_time_raw, 2)
    if m.crank is not None:
        m.crank.require_ticks(CSC_TICKS_PER_S)
        flags |= _FLAG_CRANK
        w.uint("crank_revolutions", m.crank.revs, 2)
        w.uint("last_crank_event_time", m.crank.event_time_raw, 2)
    return w.value(flags, 1)
