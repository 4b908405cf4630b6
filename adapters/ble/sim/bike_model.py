"""What a simulated BLE bike notifies, sans-I/O: a ride-profile sample in, the bytes of one measurement out.

The sample (cadence, power, resistance: the serial simulator's `RideProfile`) is what the rider does now.
FTMS carries it as values; CPS and CSC devices only count, so the model integrates crank and wheel
revolutions over simulated time and reports, as real sensors do, the cumulative count and the time of
the last whole revolution (wrapping as the fields do). Speed comes from power with a simple air-drag
model, since the profile has no speed: enough for a plausible number on a dashboard.
"""

from __future__ import annotations

import math

from adapters.ble import cps, csc, ftms
from adapters.ble.bike_services import WHEEL_CIRCUMFERENCE_M
from adapters.ble.revolutions import EVENT_TIME_MOD
from adapters.serial.peloton.calibration import CalibrationTable
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION, BikeSample

BIKE_KINDS = ("ftms", "cps", "csc")
# P = k v^3 (air drag only): 200 W gives about 34 km/h, as on a flat road.
_DRAG_W_PER_M3S3 = 0.24
_CALIBRATION = CalibrationTable(DEFAULT_CALIBRATION)


def speed_kmh_for(sample: BikeSample) -> float:
    if sample.cadence <= 0 or sample.power_w <= 0:
        return 0.0
    return round(3.6 * float((sample.power_w / _DRAG_W_PER_M3S3) ** (1 / 3)), 2)


class _Counter:
    """Cumulative revolutions and the time of the last whole one, at a rate that changes each tick."""

    def __init__(self, ticks_per_s: int) -> None:
        self.ticks_per_s = ticks_per_s
        self.revs = 0.0
        self.last_event_s = 0.0

    def advance(self, now_s: float, dt_s: float, per_min: float) -> None:
        before = self.revs
        self.revs += per_min / 60 * dt_s
        if per_min > 0 and math.floor(self.revs) > math.floor(before):
            # The last whole revolution happened this long before now, at this tick's rate.
            self.last_event_s = now_s - (self.revs - math.floor(self.revs)) * 60 / per_min

    def fields(self, revs_bits: int) -> tuple[int, int]:
        revs = math.floor(self.revs) % (1 << revs_bits)
        return revs, round(self.last_event_s * self.ticks_per_s) % EVENT_TIME_MOD


class BikeModel:
    """One simulated bike of `kind` ("ftms", "cps" or "csc")."""

    def __init__(self, kind: str) -> None:
        if kind not in BIKE_KINDS:
            raise ValueError(f"simulated bike kind must be one of {', '.join(BIKE_KINDS)}, not {kind!r}")
        self.kind = kind
        self.now_s = 0.0
        self.sample = BikeSample(0, 0.0, DEFAULT_CALIBRATION[0])
        crank_ticks = cps.CPS_CRANK_TICKS_PER_S if kind == "cps" else csc.CSC_TICKS_PER_S
        wheel_ticks = cps.CPS_WHEEL_TICKS_PER_S if kind == "cps" else csc.CSC_TICKS_PER_S
        self._crank = _Counter(crank_ticks)
        self._wheel = _Counter(wheel_ticks)

    def advance(self, dt_s: float, sample: BikeSample) -> None:
        """`dt_s` simulated seconds pass, ridden as `sample`."""
        if dt_s < 0:
            raise ValueError("time only moves forward")
        self.now_s += dt_s
        self.sample = sample
        self._crank.advance(self.now_s, dt_s, float(sample.cadence))
        wheel_per_min = speed_kmh_for(sample) / 3.6 / WHEEL_CIRCUMFERENCE_M * 60
        self._wheel.advance(self.now_s, dt_s, wheel_per_min)

    def measurement(self) -> bytes:
        """The notification a device of this kind sends now."""
        s = self.sample
        if self.kind == "ftms":
            return ftms.encode_indoor_bike_data(
                ftms.IndoorBikeData(
                    speed_raw=round(speed_kmh_for(s) * 100),
                    cadence_raw=round(s.cadence * 2),
                    resistance=round(_CALIBRATION.percent(s.resistance_raw)),
                    power_w=min(0x7FFF, round(s.power_w)),
                )
            )
        crank = self._crank.fields(16)
        wheel = self._wheel.fields(32)
        if self.kind == "cps":
            return cps.encode_cps(
                cps.CyclingPowerMeasurement(
                    power_w=min(0x7FFF, round(s.power_w)),
                    wheel=cps.wheel_data(*wheel),
                    crank=cps.crank_data(*crank),
                )
            )
        return csc.encode_csc(csc.CscMeasurement(wheel=csc.wheel_data(*wheel), crank=csc.crank_data(*crank)))
