"""The BLE bike source below the radio: service choice, hostile bytes, Device Information strings, and the
simulated bikes' measurement model (sans-I/O)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble.adapter import BleAdapter
from adapters.ble.bike_factory import BikeSpecError, parse_bike_spec, sim_kinds
from adapters.ble.bike_services import (
    BIKE_SERVICES,
    BikeDataError,
    device_info_text,
)
from adapters.ble.bike_source import BleBikeSource
from adapters.ble.budget import ConnectionBudget
from adapters.ble.connect import NotABike, WrongDevice
from adapters.ble.link_source import FATAL_ERRORS
from adapters.ble.sim.bike_model import BikeModel, speed_kmh_for
from adapters.serial.peloton.synth import BikeSample
from adapters.serial.sim.profile import RideProfile
from engine.readings import Kind, Reading, SourceEvent, SourceItem, SourceState

UUIDS = {s.name: s.measurement_uuid for s in BIKE_SERVICES}


def fake_client(*served: str) -> Any:
    """Just enough of a connected BleakClient for service discovery: which measurements it serves."""
    chars = {UUIDS[name] for name in served}
    services = SimpleNamespace(get_characteristic=lambda uuid: object() if uuid in chars else None)
    return SimpleNamespace(services=services, address="AA:BB:CC:DD:EE:01")


def bike_source(clock: float = 1000.0) -> BleBikeSource:
    adapter = BleAdapter("t", ConnectionBudget("t", 1))
    return BleBikeSource("AA:BB:CC:DD:EE:01", adapter=adapter, clock=lambda: clock)


def streaming(source: BleBikeSource, *served: str) -> BleBikeSource:
    source._check_services(fake_client(*served))
    source.machine.connecting(999.0)
    source.machine.subscribed(999.5)
    return source


@pytest.mark.parametrize(
    ("served", "picked"),
    [
        (("ftms", "cps", "csc"), "ftms"),
        (("cps", "csc"), "cps"),
        (("csc", "ftms"), "ftms"),
        (("csc",), "csc"),
    ],
)
def test_service_discovery_prefers_ftms_then_cps_then_csc(served: tuple[str, ...], picked: str) -> None:
    source = bike_source()
    assert source.bike_kind is None  # not known before a connection's service discovery
    source._check_services(fake_client(*served))
    assert source.service is not None and source.service.name == picked
    assert source.bike_kind == f"ble-{picked}"  # what `ridesync ride` tells the class (engine/bike_kinds.py)
    assert source._measurement_uuid() == UUIDS[picked]


def test_a_device_without_a_bike_service_is_the_wrong_device_and_fatal() -> None:
    with pytest.raises(NotABike, match=r"serves no bike service \(Fitness Machine 0x1826"):
        bike_source()._check_services(fake_client())
    assert issubclass(NotABike, WrongDevice) and WrongDevice in FATAL_ERRORS


def test_one_ftms_notification_gives_a_reading_per_value_each_with_the_next_seq() -> None:
    source = streaming(bike_source(), "ftms")
    out: list[SourceItem] = []
    # Speed 25.00 km/h, cadence 90 rpm (180 half-rpm), resistance 40, power 210 W.
    flags = (1 << 2) | (1 << 5) | (1 << 6)
    payload = bytes([flags, 0]) + (2500).to_bytes(2, "little") + (180).to_bytes(2, "little")
    payload += (40).to_bytes(2, "little", signed=True) + (210).to_bytes(2, "little", signed=True)
    source._on_measurement(payload, out.append)
    readings = [i for i in out if isinstance(i, Reading)]
    assert [(r.kind, r.value, r.seq) for r in readings] == [
        (Kind.CADENCE, 90.0, 1),
        (Kind.POWER, 210.0, 2),
        (Kind.SPEED, 25.0, 3),
        (Kind.RESISTANCE, 40.0, 4),
    ]
    assert all(r.extra == {"service": "ftms"} and r.t == 1000.0 for r in readings)
    assert readings[2].to_json()["unit"] == "km/h"


@given(st.sampled_from(["ftms", "cps", "csc"]), st.lists(st.binary(max_size=30), max_size=25))
def test_any_bytes_give_valid_readings_or_nothing_and_bad_ones_take_no_seq(
    kind: str, payloads: list[bytes]
) -> None:
    source = streaming(bike_source(), kind)
    check = next(s for s in BIKE_SERVICES if s.name == kind).decoder()
    out: list[SourceItem] = []
    expected = 0
    malformed = 0
    for i, payload in enumerate(payloads):
        try:
            expected += len(check.decode(payload, float(i)))
        except BikeDataError:
            malformed += 1
        source._clock = lambda i=i: float(i)  # type: ignore[misc]
        source._on_measurement(payload, out.append)
    readings = [i for i in out if isinstance(i, Reading)]
    assert [r.seq for r in readings] == list(range(1, len(readings) + 1))
    assert len(readings) == expected
    assert source.stats.malformed == malformed
    assert source.stats.notifications == len(payloads) - malformed
    bike_kinds = {Kind.CADENCE, Kind.POWER, Kind.SPEED, Kind.RESISTANCE}
    for r in readings:
        assert r.kind in bike_kinds and r.value is not None
        # A resistance level may be negative (FTMS sint16); nothing else a rider makes is.
        assert r.value >= 0 or r.kind is Kind.RESISTANCE


def test_a_bike_that_goes_silent_is_stale_then_fresh_again() -> None:
    source = streaming(bike_source(), "ftms")
    m = source.machine
    out: list[SourceItem] = []
    source._on_measurement(bytes([0x01, 0x00]), out.append)  # More Data, no field: valid, no reading
    assert m.tick(1000.0 + source.settings.stale_after_s + 0.1)[0].state is SourceState.STALE
    source._clock = lambda: 1010.0
    # More Data (no speed), cadence 90 rpm, power 200 W.
    source._on_measurement(bytes([0x45, 0x00, 0xB4, 0x00, 0xC8, 0x00]), out.append)
    states = [i.state for i in out if isinstance(i, SourceEvent)]
    assert states == [SourceState.STREAMING]  # "measurements resumed"
    assert [(r.kind, r.value) for r in out if isinstance(r, Reading)] == [
        (Kind.CADENCE, 90.0),
        (Kind.POWER, 200.0),
    ]


def test_a_malformed_battery_level_is_counted_not_read() -> None:
    source = streaming(bike_source(), "csc")
    out: list[SourceItem] = []
    source._on_battery(b"\x50\x00", out.append)
    source._on_battery(b"\x50", out.append)
    assert [(r.kind, r.value, r.seq) for r in out if isinstance(r, Reading)] == [(Kind.BATTERY, 80.0, 1)]
    assert source.stats.malformed == 1


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"Wahoo Fitness", "Wahoo Fitness"),
        (b"KICKR\x00\x00\x00", "KICKR"),
        (b"  4.2.1 \r\n", "4.2.1"),
        (b"\xff\xfeTacx", "\ufffd\ufffdTacx"),
        (b"\x1b[31mred", "[31mred"),
        (b"x" * 300, "x" * 64),
    ],
)
def test_device_information_strings_are_made_safe_to_print(raw: bytes, text: str) -> None:
    assert device_info_text(raw) == text


@given(st.binary(max_size=600))
def test_any_device_information_bytes_give_a_short_printable_string(raw: bytes) -> None:
    text = device_info_text(raw)
    assert len(text) <= 64 and text.isprintable()


def test_bike_specs() -> None:
    assert parse_bike_spec("sim") == 1
    assert parse_bike_spec(" sim:3 ") == 3
    assert parse_bike_spec("AA:BB:CC:DD:EE:FF,KICKR 1234") == ["AA:BB:CC:DD:EE:FF", "KICKR 1234"]
    for bad in ("sim:0", "sim:25", "sim:x", "", "a,,b", "a,a"):
        with pytest.raises(BikeSpecError):
            parse_bike_spec(bad)
    assert sim_kinds(4) == ["ftms", "cps", "csc", "ftms"]


@pytest.mark.parametrize("kind", ["ftms", "cps", "csc"])
def test_the_simulated_bike_model_round_trips_the_ride_through_the_parsers(kind: str) -> None:
    """What a simulated bike encodes, the source's decoder reads back as the profile's cadence and power."""
    profile = RideProfile.generated(600, seed=7)
    model = BikeModel(kind)
    decoder = next(s for s in BIKE_SERVICES if s.name == kind).decoder()
    cadences: list[tuple[float, int, int]] = []
    for second in range(200, 260):
        sample = profile.at(second)
        before = profile.at(second - 1).cadence
        model.advance(1.0, sample)
        got = decoder.decode(model.measurement(), float(second))
        if kind != "csc":
            assert got[Kind.POWER] == round(sample.power_w)
        else:
            assert Kind.POWER not in got
        if Kind.CADENCE in got:
            cadences.append((got[Kind.CADENCE], before, sample.cadence))
        if kind == "ftms":
            assert got[Kind.SPEED] == pytest.approx(speed_kmh_for(sample), abs=0.01)
    # FTMS carries the cadence; CPS and CSC derive it from the last whole crank revolutions, so it lies
    # between this second's and the previous second's cadence, give or take a revolution's rounding.
    assert len(cadences) >= 55
    for rpm, before, now in cadences:
        if kind == "ftms":
            assert rpm == now
        else:
            assert min(before, now) - 3 <= rpm <= max(before, now) + 3


def test_the_model_counters_wrap_and_a_stopped_crank_reads_zero() -> None:
    model = BikeModel("csc")
    decoder = next(s for s in BIKE_SERVICES if s.name == "csc").decoder()
    riding = BikeSample(120, 250.0, 500)
    last: dict[Kind, float] = {}
    # 12 minutes at 120 rpm: 86,400 crank revolutions, past the 16-bit counter and the event time wrap.
    for second in range(720):
        model.advance(1.0, riding)
        last = decoder.decode(model.measurement(), float(second))
    assert last[Kind.CADENCE] == pytest.approx(120, abs=2)
    stopped = BikeSample(0, 0.0, 500)
    for second in range(720, 726):
        model.advance(1.0, stopped)
        last = decoder.decode(model.measurement(), float(second))
    assert last[Kind.CADENCE] == 0.0
    with pytest.raises(ValueError, match="kind"):
        BikeModel("peloton")
