"""The bridge's sans-I/O parts: crank revolutions synthesised from cadence, the measurements it encodes
from any source's readings (hostile values included), the FTMS control point and the advertisement."""

from __future__ import annotations

import math

import pytest
from bumble.core import AdvertisingData
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.ble.bridge.gatt import ADVERTISING_MAX, advertising
from adapters.ble.bridge.model import BridgeModel, Changed, ControlPointError, FtmsControlPoint
from adapters.ble.cps import parse_cps
from adapters.ble.csc import crank_data, parse_csc
from adapters.ble.ftms import parse_indoor_bike_data
from adapters.ble.gatt_fields import uuid16
from adapters.ble.hrm import parse_hrm
from adapters.ble.revolutions import RevolutionRate, RevolutionSynth
from engine.readings import Kind, Reading, SourceEvent, SourceState

T0 = 1000.0  # host monotonic time the bridge starts at


def reading(kind: Kind, value: float | None, source: str = "serial:sim", pct: float | None = None) -> Reading:
    return Reading(0.0, source, 1, kind, value, pct=pct)


# --- RevolutionSynth -----------------------------------------------------------------------------------


def test_constant_cadence_counts_whole_revolutions_at_their_own_time() -> None:
    crank = RevolutionSynth(T0)
    crank.set_rate(T0, 90.0)
    # 90 rpm: a revolution every 2/3 s. At 10.2 s, 15 whole ones, the last exactly at 10 s.
    assert crank.fields(T0 + 10.2) == (15, 10 * 1024)
    # Sent again 0.3 s later, no new revolution: the same count and event time (not "now").
    assert crank.fields(T0 + 10.5) == (15, 10 * 1024)
    assert crank.fields(T0 + 10.7) == (16, round(10 * 1024 + 1024 * 2 / 3))


def test_a_rate_change_integrates_each_rate_over_its_own_time() -> None:
    crank = RevolutionSynth(T0)
    crank.set_rate(T0, 60.0)  # 1 rev/s for 2.5 s: 2.5 revolutions
    crank.set_rate(T0 + 2.5, 120.0)  # then 2 rev/s: the third completes 0.25 s later
    assert crank.fields(T0 + 2.6) == (2, 2 * 1024)
    assert crank.fields(T0 + 2.8) == (3, round(2.75 * 1024))


def test_stopped_crank_repeats_its_last_revolution_and_starts_again() -> None:
    crank = RevolutionSynth(T0)
    crank.set_rate(T0, 60.0)
    assert crank.fields(T0 + 3.5) == (3, 3 * 1024)
    crank.set_rate(T0 + 3.5, 0.0)
    assert crank.fields(T0 + 30.0) == (3, 3 * 1024)
    crank.set_rate(T0 + 30.0, 60.0)  # the half turn before the stop is still there
    assert crank.fields(T0 + 30.6) == (4, round(30.5 * 1024))


@pytest.mark.parametrize("bad", [-30.0, math.nan, math.inf, -math.inf, 251.0, 8.98846567431158e307])
def test_nonsense_rates_count_as_stopped(bad: float) -> None:
    crank = RevolutionSynth(T0)
    crank.set_rate(T0, bad)
    assert crank.fields(T0 + 100.0) == (0, 0)


def test_time_going_backwards_changes_nothing() -> None:
    crank = RevolutionSynth(T0)
    crank.set_rate(T0, 60.0)
    assert crank.fields(T0 + 5.0) == (5, 5 * 1024)
    assert crank.fields(T0 + 1.0) == (5, 5 * 1024)


def test_both_fields_wrap_as_on_the_air() -> None:
    crank = RevolutionSynth(T0)
    crank.set_rate(T0, 120.0)  # 2 rev/s
    # Event time wraps every 64 s: the revolution at 70 s is at (70 * 1024) mod 65536.
    assert crank.fields(T0 + 70.0) == (140, (70 * 1024) % 65536)
    # Revolutions wrap at 2^16: 65540 revolutions at 2 rev/s take 32770 s.
    assert crank.fields(T0 + 32770.0) == (65540 % 65536, (32770 * 1024) % 65536)


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.floats(min_value=20, max_value=200),
    period=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    start=st.floats(min_value=0, max_value=200),
)
def test_a_head_unit_reads_the_synthesised_cadence_back_across_wraps(
    rpm: float, period: float, start: float
) -> None:
    """What the central computes from the bridge's counters (the bike source's own RevolutionRate) is the
    cadence the bridge was fed, at every notification that brings a new revolution, across event-time
    wraps (every 64 s). (Between revolutions the tracker holds or caps the rate by host time: its
    policy, not the bridge's counters.)"""
    crank = RevolutionSynth(T0)
    crank.set_rate(T0, rpm)
    rate = RevolutionRate(max_per_min=250)
    seen = []
    for i in range(int(150 / period)):  # 150 s: more than two event-time wraps
        now = T0 + start + i * period
        update = rate.update(crank_data(*crank.fields(now)), now)
        if update is not None and update.new_revs > 0:
            seen.append(update.per_min)
    assert len(seen) > 10
    # Event times are rounded to 1/1024 s; over at least one revolution that is well under 1 rpm at 200.
    assert all(abs(c - rpm) <= max(1.0, rpm * 0.01) for c in seen[1:]), (rpm, seen[:5])


# --- the measurements -----------------------------------------------------------------------------------


def test_readings_become_the_three_bike_measurements_and_hr() -> None:
    model = BridgeModel(T0)
    model.offer(reading(Kind.CADENCE, 90.0), T0)
    model.offer(reading(Kind.POWER, 200.0), T0)
    model.offer(reading(Kind.RESISTANCE, 600.0, pct=42.4), T0)
    assert model.hrm() is None  # no strap reading yet: HRS notifies nothing
    changed = model.offer(reading(Kind.HEART_RATE, 142.0, source="ble-hr:x"), T0)
    assert changed.hr and not changed.bike
    ftms = parse_indoor_bike_data(model.ftms())
    assert (ftms.cadence_rpm, ftms.power_w, ftms.resistance, ftms.hr) == (90.0, 200, 42, 142)
    assert ftms.speed_kmh is not None and 30 < ftms.speed_kmh < 40  # derived from power: no speed sensor
    power = parse_cps(model.cps(T0 + 2.0))
    assert power.power_w == 200 and power.crank is not None and power.wheel is None
    assert (power.crank.revs, power.crank.event_time_raw) == (3, round(2.0 * 1024))
    csc = parse_csc(model.csc(T0 + 2.0))
    assert csc.wheel is None and csc.crank == power.crank
    hrm = model.hrm()
    assert hrm is not None and parse_hrm(hrm).hr == 142


def test_an_impossible_cadence_is_dropped_not_advertised() -> None:
    """Found by the property below: a cadence of 9e307 made the crank count infinite revolutions."""
    model = BridgeModel(T0)
    model.offer(reading(Kind.CADENCE, 90.0), T0)
    assert model.offer(reading(Kind.CADENCE, 8.98846567431158e307), T0) == Changed()
    assert parse_indoor_bike_data(model.ftms()).cadence_rpm == 90.0
    assert parse_cps(model.cps(T0 + 2.0)).crank == parse_csc(model.csc(T0 + 2.0)).crank


def test_a_measured_speed_wins_over_the_derived_one() -> None:
    model = BridgeModel(T0)
    model.offer(reading(Kind.POWER, 200.0), T0)
    model.offer(reading(Kind.SPEED, 27.5, source="ble-bike:y"), T0)
    assert parse_indoor_bike_data(model.ftms()).speed_kmh == 27.5


@pytest.mark.parametrize(
    "state", [SourceState.LOST, SourceState.STALE, SourceState.CLOSED, SourceState.FAILED]
)
def test_a_source_that_goes_away_takes_its_values_with_it(state: SourceState) -> None:
    model = BridgeModel(T0)
    model.offer(reading(Kind.CADENCE, 90.0), T0)
    model.offer(reading(Kind.POWER, 200.0), T0)
    model.offer(reading(Kind.HEART_RATE, 150.0, source="ble-hr:x"), T0)
    changed = model.offer(SourceEvent(0.0, "serial:sim", state), T0 + 5.0)
    assert changed.bike and not changed.hr
    ftms = parse_indoor_bike_data(model.ftms())
    assert (ftms.cadence_rpm, ftms.power_w, ftms.hr) == (0.0, 0, 150)  # the strap is still there
    before = parse_cps(model.cps(T0 + 5.0)).crank
    assert parse_cps(model.cps(T0 + 60.0)).crank == before  # the crank stopped with it
    model.offer(SourceEvent(0.0, "ble-hr:x", state), T0 + 6.0)
    assert model.hrm() is None and parse_indoor_bike_data(model.ftms()).hr is None


def test_states_that_are_not_a_loss_change_nothing() -> None:
    model = BridgeModel(T0)
    model.offer(reading(Kind.POWER, 200.0), T0)
    for state in (SourceState.CONNECTING, SourceState.STREAMING, SourceState.NO_CONTACT):
        assert model.offer(SourceEvent(0.0, "serial:sim", state), T0) == Changed()
    assert parse_indoor_bike_data(model.ftms()).power_w == 200


hostile = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**9), 10**9).map(float)
)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.tuples(
            st.sampled_from([Kind.CADENCE, Kind.POWER, Kind.SPEED, Kind.HEART_RATE, Kind.RESISTANCE]), hostile
        ),
        max_size=12,
    ),
    pct=st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)),
    dt=st.floats(min_value=0, max_value=1e6),
)
def test_any_readings_encode_to_measurements_that_parse(
    values: list[tuple[Kind, float | None]], pct: float | None, dt: float
) -> None:
    """Whatever a source sends (NaN, infinities, negatives, absurd values), the bridge encodes valid
    payloads in range: never an encoder error, never a value a head unit cannot parse."""
    model = BridgeModel(T0)
    for kind, value in values:
        model.offer(reading(kind, value, pct=pct), T0)
    ftms = parse_indoor_bike_data(model.ftms())
    assert ftms.power_w is not None and 0 <= ftms.power_w <= 0x7FFF
    assert ftms.cadence_rpm is not None and ftms.cadence_rpm >= 0
    assert ftms.resistance is None or 0 <= ftms.resistance <= 100
    assert parse_cps(model.cps(T0 + dt)).power_w >= 0
    assert parse_csc(model.csc(T0 + dt)).crank is not None
    hrm = model.hrm()
    assert hrm is None or 1 <= parse_hrm(hrm).hr <= 255


# --- the control point -----------------------------------------------------------------------------------


def test_control_point_grants_control_then_runs_start_stop_and_reset() -> None:
    cp = FtmsControlPoint()
    assert cp.handle(b"\x07") == (b"\x80\x07\x05", None)  # start before control: not permitted
    assert cp.handle(b"\x00") == (b"\x80\x00\x01", None)
    assert cp.handle(b"\x07") == (b"\x80\x07\x01", b"\x04")  # started by the user
    assert cp.handle(b"\x08\x02") == (b"\x80\x08\x01", b"\x02\x02")  # paused
    assert cp.handle(b"\x08\x09") == (b"\x80\x08\x03", None)  # neither stop nor pause
    assert cp.handle(b"\x05\xc8\x00") == (b"\x80\x05\x02", None)  # target power: no target setting
    assert cp.handle(b"\x00\x01") == (b"\x80\x00\x03", None)  # request control takes no parameter
    assert cp.handle(b"\x01") == (b"\x80\x01\x01", b"\x01")  # reset, and control is gone
    assert cp.handle(b"\x07") == (b"\x80\x07\x05", None)


def test_an_empty_control_point_write_is_an_error_not_a_response() -> None:
    with pytest.raises(ControlPointError):
        FtmsControlPoint().handle(b"")


@given(st.binary(min_size=1, max_size=20))
def test_control_point_answers_every_write_with_its_op_code(request: bytes) -> None:
    response, status = FtmsControlPoint().handle(request)
    assert response[:2] == bytes([0x80, request[0]]) and response[2] in (1, 2, 3, 5)
    assert status is None or len(status) in (1, 2)


# --- the advertisement -----------------------------------------------------------------------------------

SERVICES = [uuid16(u) for u in (0x1826, 0x1818, 0x1816, 0x180D)]


@given(st.text(min_size=1, max_size=29).filter(lambda s: len(s.encode()) <= 29))
def test_advertisement_fits_and_carries_the_services_and_ftms_service_data(name: str) -> None:
    data, scan_response = advertising(name, SERVICES)
    assert len(data) <= ADVERTISING_MAX and len(scan_response) <= ADVERTISING_MAX
    ad = AdvertisingData.from_bytes(data)
    uuids = ad.get(AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS)
    assert uuids is not None and [u.to_hex_str() for u in uuids] == ["1826", "1818", "1816", "180D"]
    service_data = ad.get(AdvertisingData.SERVICE_DATA_16_BIT_UUID)
    assert service_data is not None and service_data[0].to_hex_str() == "1826"
    assert bytes(service_data[1]) == bytes([0x01, 0x20, 0x00])  # available; indoor bike
    assert AdvertisingData.from_bytes(scan_response).get(AdvertisingData.COMPLETE_LOCAL_NAME) == name
