"""Readings → 1 Hz samples: latest values, consumed RR intervals, staleness and gaps told truthfully."""

from __future__ import annotations

import pytest

from engine.device.sampler import RideClock, SampleBuilder
from engine.readings import Contact, Kind, Reading, SourceEvent, SourceState

HR = "ble-hr:F0:00"


def hr(value: float | None, rr: tuple[float, ...] = (), contact: Contact = Contact.DETECTED) -> Reading:
    return Reading(0.0, HR, 1, Kind.HEART_RATE, value, contact=contact, rr_s=rr)


def test_latest_values_and_rr_consumed() -> None:
    b = SampleBuilder()
    b.offer(hr(120, (0.5, 0.5)), 10.0)
    b.offer(hr(121, (0.49,)), 10.4)
    b.offer(Reading(0.0, "bike0", 1, Kind.POWER, 201.3), 10.5)
    b.offer(Reading(0.0, "bike0", 2, Kind.CADENCE, 88.6), 10.5)
    s = b.take(0, 11.0)
    assert (s.seq, s.t, s.hr, s.power_dw, s.cadence) == (0, 11.0, 121, 2013, 89)
    assert s.rr == (512, 512, 502)
    assert s.contact == "detected" and not s.stale and not s.gap
    assert b.take(1, 12.0).rr == ()


def test_nothing_seen_is_none_never_zero() -> None:
    s = SampleBuilder().take(0, 1.0)
    assert (s.hr, s.cadence, s.power_dw, s.resistance, s.contact) == (None, None, None, None, None)


def test_old_heart_rate_is_stale_and_old_bike_metrics_unknown() -> None:
    b = SampleBuilder(stale_after_s=3.0)
    b.offer(hr(130), 0.0)
    b.offer(Reading(0.0, "bike0", 1, Kind.POWER, 150.0), 0.0)
    fresh = b.take(0, 3.0)
    assert not fresh.stale and fresh.power_dw == 1500
    late = b.take(1, 3.5)
    assert late.stale and late.hr == 130 and late.power_dw is None
    assert not late.hr_usable()


def test_lost_strap_marks_a_gap_until_it_streams_again() -> None:
    b = SampleBuilder()
    b.offer(hr(110), 0.0)
    b.offer(SourceEvent(0.0, HR, SourceState.LOST), 0.5)
    assert b.take(0, 1.0).gap
    b.offer(SourceEvent(0.0, HR, SourceState.STREAMING), 1.2)
    b.offer(hr(111), 1.3)
    assert not b.take(1, 2.0).gap


def test_no_contact_is_reported() -> None:
    b = SampleBuilder()
    b.offer(hr(0, contact=Contact.NOT_DETECTED), 0.0)
    s = b.take(0, 0.5)
    assert s.contact == "not_detected" and not s.hr_usable()


def test_ride_clock() -> None:
    now = [100.0]
    clock = RideClock(origin=1000.0, speed=60.0, monotonic=lambda: now[0])
    now[0] += 1.0
    assert clock.now() == 1060.0
    assert clock.wall_delay(1120.0) == pytest.approx(1.0)
    assert clock.wall_delay(1000.0) == 0.0
    clock.rebase(5000.0)
    assert clock.now() == 5000.0
    with pytest.raises(ValueError):
        RideClock(speed=0)


def test_staleness_is_judged_on_the_wall_clock_not_ride_time() -> None:
    # At --speed 60 a reading 1 s old (wall) is a ride minute old, and still fresh.
    b = SampleBuilder(stale_after_s=3.0)
    b.offer(Reading(0.0, "bike0", 1, Kind.POWER, 200.0), 100.0)
    s = b.take(0, ride_t=5000.0, now=101.0)
    assert s.t == 5000.0 and s.power_dw == 2000
    assert b.take(1, ride_t=5001.0, now=104.0).power_dw is None
