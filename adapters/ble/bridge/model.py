"""What the bridge advertises, sans-I/O: the readings of any bike in, the bytes of standard BLE bike
measurements out.

The bridge holds the latest value of each kind (cadence, power, resistance, speed, heart rate) from
whatever sources the ride reads, and encodes, on demand:

* Indoor Bike Data (FTMS 0x2AD2): speed, cadence, resistance level, power and heart rate as values;
* Cycling Power Measurement (0x2A63): power, plus crank revolution data;
* CSC Measurement (0x2A5B): crank revolution data;
* Heart Rate Measurement (0x2A37) when a strap is paired.

Cycling Power and CSC carry no cadence, only cumulative crank revolutions and the event time of the last
one, which `RevolutionSynth` integrates from the cadence readings (`revolutions.py`). Speed, when no source
measures it, is derived from power with the simulated bikes' drag model, so a head unit has a plausible
number. A source that goes stale, is lost or closes takes its values with it: the bike reads as stopped
(0 rpm, 0 W) and heart rate disappears, rather than a frozen 200 W riding on in Zwift.

The Fitness Machine Control Point (0x2AD9) is answered here too (`FtmsControlPoint`): the bridge cannot
move a Peloton's resistance, so it supports no target setting, but it grants control, and accepts
reset, start and stop, as a central expects before it trusts a fitness machine.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from adapters.ble import cps, csc, ftms
from adapters.ble.hrm import encode_hrm
from adapters.ble.revolutions import MAX_CRANK_PER_MIN, RevolutionSynth
from adapters.ble.sim.bike_model import speed_kmh_for
from adapters.serial.peloton.synth import BikeSample
from engine.readings import Kind, Reading, SourceEvent, SourceItem, SourceState

# Fitness Machine Feature (0x2ACC), first uint32: cadence (bit 1), resistance level (bit 7), heart rate
# (bit 10), power (bit 14). The second uint32, target settings, is 0: nothing can be set on the bike.
FTMS_FEATURES = 1 << 1 | 1 << 7 | 1 << 10 | 1 << 14
FTMS_FEATURE_VALUE = struct.pack("<II", FTMS_FEATURES, 0)
# Service Data of the FTMS advertisement: Fitness Machine Available (flags bit 0), Indoor Bike (type bit 5).
FTMS_SERVICE_DATA = bytes([0x01]) + struct.pack("<H", 1 << 5)
# Cycling Power Feature (0x2A65): crank revolution data (bit 3). Wheel data is left out on purpose: it
# would make the Cycling Power Control Point mandatory (to set the cumulative wheel count).
CPS_FEATURE_VALUE = struct.pack("<I", 1 << 3)
# CSC Feature (0x2A5C): crank revolution data (bit 1); no wheel data for the same reason (SC Control Point).
CSC_FEATURE_VALUE = struct.pack("<H", 1 << 1)
# Sensor Location (0x2A5D): "Other" (0): the power comes from the bike's flywheel, not a crank or hub.
SENSOR_LOCATION_VALUE = bytes([0])

# Sources in these states no longer vouch for their last values.
_GONE = {SourceState.LOST, SourceState.STALE, SourceState.FAILED, SourceState.CLOSED, SourceState.BACKING_OFF}
_BIKE_KINDS = {Kind.CADENCE, Kind.POWER, Kind.RESISTANCE, Kind.SPEED}


def short_names(service_uuids: list[str]) -> list[str]:
    """The profile names of the advertised services, for logs and JSON: ftms, cps, csc, hrs."""
    names = {"1826": "ftms", "1818": "cps", "1816": "csc", "180d": "hrs"}
    return [names.get(u[4:8].lower(), u) for u in service_uuids]


def _clamp(value: float, low: int, high: int) -> int:
    # Bounded before rounding: a huge finite value times a field's resolution overflows to infinity.
    if math.isnan(value):
        return low
    return round(max(float(low), min(float(high), value)))


@dataclass(frozen=True, slots=True)
class Changed:
    """Which advertised measurements a reading changed."""

    bike: bool = False
    hr: bool = False


class BridgeModel:
    def __init__(self, start_s: float) -> None:
        self.cadence_rpm: float | None = None
        self.power_w: float | None = None
        self.resistance_pct: float | None = None
        self.speed_kmh: float | None = None
        self.hr: int | None = None
        # One crank for both profiles: CPS and CSC crank times are both 1/1024 s, revolutions uint16.
        self.crank = RevolutionSynth(start_s, ticks_per_s=csc.CSC_TICKS_PER_S, revs_bits=16)
        self._kinds_by_source: dict[str, set[Kind]] = {}

    def offer(self, item: SourceItem, now_s: float) -> Changed:
        """Take one reading or state event from a ride source, received at host time `now_s`."""
        if isinstance(item, SourceEvent):
            if item.state in _GONE:
                return self._forget(self._kinds_by_source.pop(item.source, set()), now_s)
            return Changed()
        return self._reading(item, now_s)

    def _reading(self, r: Reading, now_s: float) -> Changed:
        value = r.value
        if value is not None and not math.isfinite(value):
            value = None
        self._kinds_by_source.setdefault(r.source, set()).add(r.kind)
        if r.kind is Kind.HEART_RATE:
            self.hr = None if value is None or value <= 0 else _clamp(value, 1, 255)
            return Changed(hr=True)
        if r.kind is Kind.CADENCE:
            if value is not None and value > MAX_CRANK_PER_MIN:
                return Changed()  # not a cadence: keep telling the last one rather than a glitch
            self.cadence_rpm = None if value is None else max(0.0, value)
            self.crank.set_rate(now_s, self.cadence_rpm or 0.0)
        elif r.kind is Kind.POWER:
            self.power_w = None if value is None else max(0.0, value)
        elif r.kind is Kind.RESISTANCE:
            self.resistance_pct = r.pct
        elif r.kind is Kind.SPEED:
            self.speed_kmh = None if value is None else max(0.0, value)
        else:
            return Changed()
        return Changed(bike=True)

    def _forget(self, kinds: set[Kind], now_s: float) -> Changed:
        if Kind.CADENCE in kinds:
            self.cadence_rpm = 0.0
            self.crank.set_rate(now_s, 0.0)
        if Kind.POWER in kinds:
            self.power_w = 0.0
        if Kind.SPEED in kinds:
            self.speed_kmh = 0.0
        if Kind.HEART_RATE in kinds:
            self.hr = None
        return Changed(bike=bool(kinds & _BIKE_KINDS), hr=Kind.HEART_RATE in kinds)

    # --- the measurements ------------------------------------------------------------------------------

    def _speed_kmh(self) -> float:
        if self.speed_kmh is not None:
            return self.speed_kmh
        sample = BikeSample(round(self.cadence_rpm or 0), self.power_w or 0.0, 0)
        return speed_kmh_for(sample)

    def ftms(self) -> bytes:
        """Indoor Bike Data now (values: no integration needed)."""
        return ftms.encode_indoor_bike_data(
            ftms.IndoorBikeData(
                speed_raw=_clamp(self._speed_kmh() * 100, 0, 0xFFFF),
                cadence_raw=_clamp((self.cadence_rpm or 0.0) * 2, 0, 0xFFFF),
                resistance=None if self.resistance_pct is None else _clamp(self.resistance_pct, 0, 100),
                power_w=_clamp(self.power_w or 0.0, 0, 0x7FFF),
                hr=self.hr,
            )
        )

    def cps(self, now_s: float) -> bytes:
        revs, event = self.crank.fields(now_s)
        return cps.encode_cps(
            cps.CyclingPowerMeasurement(
                power_w=_clamp(self.power_w or 0.0, 0, 0x7FFF), crank=cps.crank_data(revs, event)
            )
        )

    def csc(self, now_s: float) -> bytes:
        revs, event = self.crank.fields(now_s)
        return csc.encode_csc(csc.CscMeasurement(wheel=None, crank=csc.crank_data(revs, event)))

    def hrm(self) -> bytes | None:
        return None if self.hr is None else encode_hrm(self.hr)


# --- Fitness Machine Control Point (0x2AD9) ----------------------------------------------------------------

REQUEST_CONTROL = 0x00
RESET = 0x01
START_OR_RESUME = 0x07
STOP_OR_PAUSE = 0x08
RESPONSE_CODE = 0x80
SUCCESS = 0x01
OP_CODE_NOT_SUPPORTED = 0x02
INVALID_PARAMETER = 0x03
CONTROL_NOT_PERMITTED = 0x05
# Fitness Machine Status (0x2ADA) op codes.
STATUS_RESET = 0x01
STATUS_STOPPED_OR_PAUSED = 0x02
STATUS_STARTED_OR_RESUMED = 0x04


class ControlPointError(ValueError):
    """A write to the control point with no op code at all (an ATT-level error, not a response)."""


class FtmsControlPoint:
    """One connection's control point: control is granted per connection and lost on reset."""

    def __init__(self) -> None:
        self.controlled = False

    def handle(self, request: bytes) -> tuple[bytes, bytes | None]:
        """(the response to indicate, the Fitness Machine Status to notify or None) for one write."""
        if not request:
            raise ControlPointError("empty control point write")
        op, param = request[0], request[1:]

        def respond(result: int) -> bytes:
            return bytes([RESPONSE_CODE, op, result])

        if op == REQUEST_CONTROL:
            if param:
                return respond(INVALID_PARAMETER), None
            self.controlled = True
            return respond(SUCCESS), None
        if op not in (RESET, START_OR_RESUME, STOP_OR_PAUSE):
            return respond(OP_CODE_NOT_SUPPORTED), None
        if not self.controlled:
            return respond(CONTROL_NOT_PERMITTED), None
        if op == RESET:
            if param:
                return respond(INVALID_PARAMETER), None
            self.controlled = False
            return respond(SUCCESS), bytes([STATUS_RESET])
        if op == START_OR_RESUME:
            if param:
                return respond(INVALID_PARAMETER), None
            return respond(SUCCESS), bytes([STATUS_STARTED_OR_RESUMED])
        # Stop (1) or pause (2), one byte.
        if len(param) != 1 or param[0] not in (1, 2):
            return respond(INVALID_PARAMETER), None
        return respond(SUCCESS), bytes([STATUS_STOPPED_OR_PAUSED, param[0]])
