"""The three standard bike services a BLE bike source can read, in the order it prefers them, and what
each one's measurement means as engine readings. Sans-I/O: bytes in, `{Kind: value}` out.

* Fitness Machine (0x1826), Indoor Bike Data (0x2AD2): smart trainers and connected bikes. Cadence,
  power, speed and resistance come as values (`ftms.py`).
* Cycling Power (0x1818), Cycling Power Measurement (0x2A63): power meters. Power is a value; cadence
  (crank) and speed (wheel) are derived from cumulative revolution counters (`cps.py`,
  `revolutions.py`).
* Cycling Speed and Cadence (0x1816), CSC Measurement (0x2A5B): cadence and speed pods. No power;
  cadence and speed are derived from the counters (`csc.py`).

A device serving several (a trainer with FTMS and CPS) is read through the first: FTMS carries the most.
Speed from wheel revolutions assumes a 700x25c road wheel (2.105 m), as head units do by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from adapters.ble.cps import CYCLING_POWER_MEASUREMENT_UUID, CYCLING_POWER_SERVICE_UUID, parse_cps
from adapters.ble.csc import CSC_MEASUREMENT_UUID, CSC_SERVICE_UUID, parse_csc
from adapters.ble.ftms import FITNESS_MACHINE_SERVICE_UUID, INDOOR_BIKE_DATA_UUID, parse_indoor_bike_data
from adapters.ble.gatt_fields import FitnessPayloadError, uuid16
from adapters.ble.revolutions import RevolutionData, RevolutionRate, wheel_speed_kmh
from engine.readings import Kind

__all__ = [
    "BIKE_SERVICES",
    "DEVICE_INFO_FIELDS",
    "BikeDataError",
    "BikeDecoder",
    "BikeService",
    "device_info_text",
]

# Every parse error of the three profiles (FtmsError, CpsError, CscError) is one of these.
BikeDataError = FitnessPayloadError

WHEEL_CIRCUMFERENCE_M = 2.105
# Above these the counters are not telling the truth (a reset, a glitch): the rate restarts instead.
MAX_CADENCE_RPM = 250.0
MAX_WHEEL_RPM = 1200.0  # about 150 km/h on a road wheel

DEVICE_INFORMATION_SERVICE_UUID = uuid16(0x180A)
# (key in `device_info`, characteristic): what a lab needs to tell one bike model from another.
DEVICE_INFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("manufacturer", uuid16(0x2A29)),
    ("model", uuid16(0x2A24)),
    ("firmware", uuid16(0x2A26)),
)
DEVICE_INFO_MAX_CHARS = 64


class BikeDecoder(Protocol):
    def decode(self, payload: bytes, at_s: float) -> dict[Kind, float]:
        """The readings one notification carries, received at host time `at_s`; `BikeDataError` for
        bytes that are not a measurement."""
        ...


@dataclass(frozen=True, slots=True)
class BikeService:
    name: str  # "ftms", "cps", "csc": in the `streaming` state and on each reading
    service_uuid: str
    measurement_uuid: str
    # A fresh decoder per connection: derived rates only compare notifications of one link.
    decoder: Callable[[], BikeDecoder]


class FtmsDecoder:
    def decode(self, payload: bytes, at_s: float) -> dict[Kind, float]:
        m = parse_indoor_bike_data(payload)
        out: dict[Kind, float] = {}
        for kind, value in (
            (Kind.CADENCE, m.cadence_rpm),
            (Kind.POWER, m.power_w),
            (Kind.SPEED, m.speed_kmh),
            (Kind.RESISTANCE, m.resistance),
        ):
            if value is not None:
                out[kind] = float(value)
        # A negative power is a machine braking (FTMS allows it); a rider's power is never below 0.
        if out.get(Kind.POWER, 0.0) < 0:
            out[Kind.POWER] = 0.0
        return out


class _Counters:
    """Cadence from crank revolutions and speed from wheel revolutions, over one connection."""

    def __init__(self) -> None:
        self.crank = RevolutionRate(max_per_min=MAX_CADENCE_RPM)
        self.wheel = RevolutionRate(max_per_min=MAX_WHEEL_RPM)

    def derive(
        self, crank: RevolutionData | None, wheel: RevolutionData | None, at_s: float, out: dict[Kind, float]
    ) -> None:
        if crank is not None and (rate := self.crank.update(crank, at_s)) is not None:
            out[Kind.CADENCE] = rate.per_min
        if wheel is not None and (rate := self.wheel.update(wheel, at_s)) is not None:
            out[Kind.SPEED] = round(wheel_speed_kmh(rate.per_min, WHEEL_CIRCUMFERENCE_M), 2)


class CpsDecoder(_Counters):
    def decode(self, payload: bytes, at_s: float) -> dict[Kind, float]:
        m = parse_cps(payload)
        out = {Kind.POWER: float(max(0, m.power_w))}
        self.derive(m.crank, m.wheel, at_s, out)
        return out


class CscDecoder(_Counters):
    def decode(self, payload: bytes, at_s: float) -> dict[Kind, float]:
        m = parse_csc(payload)
        out: dict[Kind, float] = {}
        self.derive(m.crank, m.wheel, at_s, out)
        return out


BIKE_SERVICES: tuple[BikeService, ...] = (
    BikeService("ftms", FITNESS_MACHINE_SERVICE_UUID, INDOOR_BIKE_DATA_UUID, FtmsDecoder),
    BikeService("cps", CYCLING_POWER_SERVICE_UUID, CYCLING_POWER_MEASUREMENT_UUID, CpsDecoder),
    BikeService("csc", CSC_SERVICE_UUID, CSC_MEASUREMENT_UUID, CscDecoder),
)


def device_info_text(data: bytes) -> str:
    """A Device Information string as something safe to print: UTF-8 (bad bytes replaced), without the
    NUL padding some firmware sends, printable characters only, at most DEVICE_INFO_MAX_CHARS."""
    text = data.decode("utf-8", errors="replace").replace("\x00", "")
    return "".join(c for c in text if c.isprintable()).strip()[:DEVICE_INFO_MAX_CHARS]
