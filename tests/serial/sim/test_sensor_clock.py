"""The simulated DIY sensor's firmware clock: booted anywhere, and the two tick-math shortcuts."""

from __future__ import annotations

import pytest

from adapters.serial.sim import sensor_clock
from adapters.serial.sim.line_sensor import LineSensor
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.sensor_clock import MICROS_WRAP_MS, MILLIS_OVERFLOW_MS, TickMath, sensor_ticks
from engine.lab.context import SIM_WRAP_RPM
from engine.lab.serial import dips, offline_error_pct, wrap_sensor


def test_the_marks() -> None:
    assert MILLIS_OVERFLOW_MS == 4_194_304  # 69:54.304
    assert sensor_clock.clock_label(MILLIS_OVERFLOW_MS) == "69:54.304"
    assert sensor_clock.clock_label(MICROS_WRAP_MS) == "71:34.967"


def test_exact_ticks_run_straight_through_both_marks() -> None:
    for mark_ms in (MILLIS_OVERFLOW_MS, MICROS_WRAP_MS):
        before = sensor_ticks(mark_ms / 1000 - 1)
        after = sensor_ticks(mark_ms / 1000 + 1)
        assert (after - before) % 0x10000 == 2048


def test_the_millis_shortcut_jumps_at_70_minutes_and_the_micros_one_runs_slow() -> None:
    s = MILLIS_OVERFLOW_MS / 1000
    overflow = TickMath.MILLIS_OVERFLOW
    assert (sensor_ticks(s + 1, overflow) - sensor_ticks(s - 1, overflow)) % 0x10000 != 2048
    ten_seconds = sensor_ticks(11, TickMath.MICROS_SHIFT) - sensor_ticks(1, TickMath.MICROS_SHIFT)
    assert ten_seconds in (9765, 9766)  # 1.024 ms ticks, not 10240 of 1/1024 s


def test_a_sensor_booted_at_zero_sends_what_it_always_did() -> None:
    profile = RideProfile.generated(60, seed=1)
    sensor = LineSensor(None, profile=profile, start_ticks=60000)  # type: ignore[arg-type]
    for t, rec in sensor.records():
        assert rec.sensor_time == (60000 + round(t * 1024)) % 0x10000


@pytest.mark.parametrize(
    ("tick_math", "low", "high"),
    [(TickMath.EXACT, 0.0, 0.5), (TickMath.MILLIS_OVERFLOW, 50.0, 100.0), (TickMath.MICROS_SHIFT, 4.0, 6.0)],
)
def test_the_wrap_check_tells_a_good_firmware_from_both_bad_ones(
    tick_math: TickMath, low: float, high: float
) -> None:
    error = offline_error_pct(tick_math)
    assert error is not None and low <= error <= high


def test_the_simulated_wrap_run_crosses_both_marks() -> None:
    start_ms, end_ms, sensor = wrap_sensor(TickMath.EXACT)
    assert start_ms < MILLIS_OVERFLOW_MS < MICROS_WRAP_MS < end_ms
    assert sensor.profile.at(0).cadence == SIM_WRAP_RPM


def test_dips_are_single_record_drops() -> None:
    assert dips([80, 80, 3.8, 80, 80]) == 1
    assert dips([80, 60, 40, 20, 0]) == 0
