"""Cadence and wheel speed from cumulative revolution data: wraparound of both counters, a stopped crank
(repeated event time), resets, long gaps, and no value ever negative or above the plausible maximum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble import cps, csc
from adapters.ble.revolutions import RateUpdate, RevolutionData, RevolutionRate, wheel_speed_kmh


def cadence() -> RevolutionRate:
    return RevolutionRate(max_per_min=250, stop_after_s=3.0)


def test_steady_cadence_and_first_notification_is_only_a_baseline() -> None:
    rate = cadence()
    assert rate.update(csc.crank_data(10, 0), 0.0) is None
    assert rate.update(csc.crank_data(11, 1024), 1.0) == RateUpdate(60.0, 1)
    # 3 revolutions in 2 s of sensor time, whatever the host clock says.
    assert rate.update(csc.crank_data(14, 3072), 1.7) == RateUpdate(90.0, 3)


def test_crank_counter_and_event_time_wrap_together() -> None:
    rate = cadence()
    rate.update(csc.crank_data(65535, 65000), 0.0)
    # 2 revolutions over 2048 ticks, across both uint16 wraps.
    assert rate.update(csc.crank_data(1, (65000 + 2048) % 65536), 2.0) == RateUpdate(60.0, 2)
    assert rate.counters.restarts == 0


def test_wheel_counter_wraps_at_32_bits() -> None:
    wheel = RevolutionRate(max_per_min=2000)
    wheel.update(csc.wheel_data(0xFFFFFFFF, 60000), 0.0)
    update = wheel.update(csc.wheel_data(2, (60000 + 1024) % 65536), 1.0)
    assert update == RateUpdate(180.0, 3)
    assert wheel_speed_kmh(update.per_min, 2.096) == pytest.approx(22.637, abs=1e-3)


def test_cps_wheel_event_time_is_in_2048ths() -> None:
    wheel = RevolutionRate(max_per_min=2000)
    wheel.update(cps.wheel_data(100, 0), 0.0)
    assert wheel.update(cps.wheel_data(103, 2048), 1.0) == RateUpdate(180.0, 3)


def test_stopped_crank_decays_then_reads_zero_never_a_spike() -> None:
    rate = cadence()
    rate.update(csc.crank_data(10, 0), 0.0)
    assert rate.update(csc.crank_data(11, 1024), 1.0) == RateUpdate(60.0, 1)
    # The crank stops: the sensor repeats its last values.
    assert rate.update(csc.crank_data(11, 1024), 2.0) == RateUpdate(60.0, 0, held=True)
    # 2.5 s since the last revolution: at most one revolution per 2.5 s, so at most 24 rpm.
    assert rate.update(csc.crank_data(11, 1024), 3.5) == RateUpdate(24.0, 0, held=True)
    assert rate.update(csc.crank_data(11, 1024), 4.0) == RateUpdate(0.0, 0, stopped=True)
    assert rate.update(csc.crank_data(11, 1024), 30.0) == RateUpdate(0.0, 0, stopped=True)
    # Pedalling again: the first revolution spans the whole pause (a crawl, not a cadence): unknown.
    assert rate.update(csc.crank_data(12, 1024 + 30 * 1024), 31.0) is None
    assert rate.update(csc.crank_data(13, 1024 + 31 * 1024), 32.0) == RateUpdate(60.0, 1)


def test_a_crank_that_never_turns_reads_zero_after_the_timeout() -> None:
    rate = cadence()
    assert rate.update(csc.crank_data(0, 0), 0.0) is None
    assert rate.update(csc.crank_data(0, 0), 1.0) is None
    assert rate.update(csc.crank_data(0, 0), 3.0) == RateUpdate(0.0, 0, stopped=True)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((5000, 10000), (3, 11024)),  # counter back near zero: a reboot (huge modular difference)
        ((40, 10000), (40, 12000)),  # event time moved without a revolution
        ((40, 10000), (41, 10000)),  # a revolution without the event time moving
        ((40, 10000), (45, 10010)),  # 5 revolutions in 10 ms: no human pedals that fast
    ],
)
def test_inconsistent_or_reset_counters_restart_instead_of_reporting(
    before: tuple[int, int], after: tuple[int, int]
) -> None:
    rate = cadence()
    rate.update(csc.crank_data(*before), 0.0)
    assert rate.update(csc.crank_data(*after), 1.0) is None
    assert rate.counters.restarts == 1
    # The new values are the new baseline: the next notification has a true rate.
    revs, ticks = after
    assert rate.update(csc.crank_data(revs + 1, (ticks + 1024) % 65536), 2.0) == RateUpdate(60.0, 1)


def test_a_gap_longer_than_one_event_time_wrap_restarts() -> None:
    """After 64 s without a notification the 1/1024 s event time may have wrapped: the difference is
    ambiguous, so it is not used."""
    rate = cadence()
    rate.update(csc.crank_data(10, 0), 0.0)
    assert rate.update(csc.crank_data(80, 1024), 70.0) is None
    assert rate.counters.restarts == 1


def test_units_change_restarts_the_baseline() -> None:
    wheel = RevolutionRate(max_per_min=2000)
    wheel.update(csc.wheel_data(10, 0), 0.0)
    assert wheel.update(cps.wheel_data(11, 2048), 1.0) is None


def test_reset_forgets_the_baseline() -> None:
    rate = cadence()
    rate.update(csc.crank_data(10, 0), 0.0)
    rate.reset()
    assert rate.update(csc.crank_data(11, 1024), 1.0) is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RevolutionRate(max_per_min=0)
    with pytest.raises(ValueError):
        RevolutionRate(max_per_min=200, stop_after_s=-1)


STEPS = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.floats(0, 80, allow_nan=False)),
    max_size=40,
)


@given(STEPS)
def test_any_sequence_gives_rates_between_zero_and_the_maximum(steps: list[tuple[int, int, float]]) -> None:
    rate = cadence()
    at = 0.0
    for revs, ticks, dt in steps:
        at += dt
        update = rate.update(RevolutionData(revs, ticks, 1024, 16), at)
        if update is not None:
            assert 0.0 <= update.per_min <= 250.0
            assert not (update.stopped and update.per_min)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(1, 4), st.integers(300, 4000))
def test_wraparound_never_changes_the_rate(revs0: int, ticks0: int, d_revs: int, d_ticks: int) -> None:
    rate = cadence()
    rate.update(csc.crank_data(revs0, ticks0), 0.0)
    update = rate.update(csc.crank_data((revs0 + d_revs) % 65536, (ticks0 + d_ticks) % 65536), 1.0)
    expected = d_revs * 60 * 1024 / d_ticks
    if expected > 250:
        assert update is None
    else:
        assert update == RateUpdate(round(expected, 1), d_revs)
