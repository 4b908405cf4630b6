"""Cycling Power Measurement (0x2A63): spec-derived vectors for each flag bit alone and every allowed
combination, the 3-byte extreme angles, the force/torque exclusion, strictness, round trips and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble.cps import (
    CpsError,
    CyclingPowerMeasurement,
    Extremes,
    crank_data,
    encode_cps,
    parse_cps,
    wheel_data,
)
from adapters.ble.revolutions import RevolutionData

P = CyclingPowerMeasurement

# Each flag bit alone: flags, body after the flags (instantaneous power first, always), expected value.
# Written out by hand from the field table (little-endian), not produced by the encoder.
SINGLE_BIT = [
    ("0000", "fa00", P(250)),
    ("0000", "38ff", P(-200)),
    ("0100", "fa0064", P(250, balance_raw=100)),
    ("0200", "fa00", P(250, balance_left=True)),
    ("0400", "fa004006", P(250, torque_raw=0x0640)),
    ("0800", "fa00", P(250, torque_crank_based=True)),
    ("1000", "fa00785634120008", P(250, wheel=wheel_data(0x12345678, 2048))),
    ("2000", "fa000a000004", P(250, crank=crank_data(10, 1024))),
    ("4000", "fa005802ceff", P(250, force_n=Extremes(600, -50))),
    ("8000", "fa000001e0ff", P(250, torque_extremes_raw=Extremes(256, -32))),
    ("0001", "fa00bc3a12", P(250, angles_deg=Extremes(0xABC, 0x123))),
    ("0002", "fa000a00", P(250, top_dead_spot_deg=10)),
    ("0004", "fa00b400", P(250, bottom_dead_spot_deg=180)),
    ("0008", "fa00e803", P(250, energy_kj=1000)),
    ("0010", "fa00", P(250, offset_compensation=True)),
]


@pytest.mark.parametrize(("flags", "body", "expected"), SINGLE_BIT)
def test_each_flag_bit_alone(flags: str, body: str, expected: CyclingPowerMeasurement) -> None:
    payload = bytes.fromhex(flags + body)
    assert parse_cps(payload) == expected
    assert encode_cps(expected) == payload


def test_units() -> None:
    m = parse_cps(bytes.fromhex("3500" + "2c01" + "65" + "2100" + "01000000" + "0004" + "0300" + "0008"))
    assert m.power_w == 300
    assert m.balance_pct == 50.5
    assert m.torque_nm == 33 / 32
    assert m.wheel is not None and m.wheel.event_time_s == 0.5  # 1/2048 s
    assert m.crank is not None and m.crank.event_time_s == 2.0  # 1/1024 s
    assert (m.crank.revs, m.wheel.revs) == (3, 1)


def test_extreme_angles_pack_two_12_bit_values_into_three_bytes() -> None:
    """Maximum 0xABC and minimum 0x123 are sent as the uint24 0x123ABC."""
    assert encode_cps(P(0, angles_deg=Extremes(0xABC, 0x123))) == bytes.fromhex("0001" + "0000" + "bc3a12")
    assert parse_cps(bytes.fromhex("0001" + "0000" + "ffffff")).angles_deg == Extremes(4095, 4095)
    assert parse_cps(bytes.fromhex("0001" + "0000" + "000f00")).angles_deg == Extremes(0xF00, 0)
    assert parse_cps(bytes.fromhex("0001" + "0000" + "00f000")).angles_deg == Extremes(0, 0x00F)
    with pytest.raises(ValueError, match="out of range"):
        encode_cps(P(0, angles_deg=Extremes(4096, 0)))


def test_force_and_torque_extremes_together_are_rejected() -> None:
    with pytest.raises(CpsError) as info:
        parse_cps(bytes.fromhex("c000" + "fa00" + "5802ceff" + "0001e0ff"))
    assert info.value.field == "flags" and "mutually exclusive" in str(info.value)
    with pytest.raises(ValueError, match="mutually exclusive"):
        encode_cps(P(0, force_n=Extremes(1, 0), torque_extremes_raw=Extremes(1, 0)))


FIELDS: list[tuple[int, str, dict[str, object]]] = [
    (1 << 0, "c8", {"balance_raw": 200}),
    (1 << 2, "ffff", {"torque_raw": 0xFFFF}),
    (1 << 4, "ffffffffffff", {"wheel": wheel_data(0xFFFFFFFF, 0xFFFF)}),
    (1 << 5, "ffff0100", {"crank": crank_data(0xFFFF, 1)}),
    (1 << 6, "0080ff7f", {"force_n": Extremes(-32768, 32767)}),
    (1 << 7, "2000f0ff", {"torque_extremes_raw": Extremes(32, -16)}),
    (1 << 8, "681001", {"angles_deg": Extremes(0x068, 0x011)}),
    (1 << 9, "5a00", {"top_dead_spot_deg": 90}),
    (1 << 10, "0e01", {"bottom_dead_spot_deg": 270}),
    (1 << 11, "3412", {"energy_kj": 0x1234}),
]
FLAG_ONLY = [(1 << 1, "balance_left"), (1 << 3, "torque_crank_based"), (1 << 12, "offset_compensation")]


def test_every_allowed_flag_combination() -> None:
    """All 2^13 combinations of the defined bits except the 2^11 with both extremes: decode, re-encode."""
    checked = 0
    for flags in range(1 << 13):
        if flags & 0xC0 == 0xC0:
            continue
        body = "9cff"  # -100 W
        expected: dict[str, object] = {"power_w": -100}
        for bit, hex_field, attrs in FIELDS:
            if flags & bit:
                body += hex_field
                expected.update(attrs)
        for bit, attr in FLAG_ONLY:
            expected[attr] = bool(flags & bit)
        payload = flags.to_bytes(2, "little") + bytes.fromhex(body)
        m = parse_cps(payload)
        assert m == P(**expected), f"flags 0x{flags:04x}"  # type: ignore[arg-type]
        assert encode_cps(m) == payload
        checked += 1
    assert checked == 3 * (1 << 11)


ALL_FIELDS = bytes.fromhex("7f0f" + "9cff" + "".join(h for b, h, _ in FIELDS if b != 1 << 7))


def test_every_truncation_of_a_full_payload_names_a_field() -> None:
    parse_cps(ALL_FIELDS)
    fields = set()
    for cut in range(len(ALL_FIELDS)):
        with pytest.raises(CpsError) as info:
            parse_cps(ALL_FIELDS[:cut])
        fields.add(info.value.field)
    assert fields == {
        "flags",
        "instantaneous_power",
        "pedal_power_balance",
        "accumulated_torque",
        "wheel_revolutions",
        "last_wheel_event_time",
        "crank_revolutions",
        "last_crank_event_time",
        "maximum_force_magnitude",
        "minimum_force_magnitude",
        "extreme_angles",
        "top_dead_spot_angle",
        "bottom_dead_spot_angle",
        "accumulated_energy",
    }


@pytest.mark.parametrize(
    ("hex_payload", "field"),
    [
        ("", "flags"),
        ("00", "flags"),
        ("0000", "instantaneous_power"),
        ("0000fa", "instantaneous_power"),
        ("0020fa00", "flags"),  # bit 13, reserved
        ("0080fa00", "flags"),  # bit 15, reserved
        ("0000fa0000", "length"),
        ("2000fa000a000004ff", "length"),
        ("0100fa00", "pedal_power_balance"),
        ("0001fa00bc3a", "extreme_angles"),
    ],
)
def test_bad_payloads_are_typed_errors_naming_the_field(hex_payload: str, field: str) -> None:
    with pytest.raises(CpsError) as info:
        parse_cps(bytes.fromhex(hex_payload))
    assert info.value.field == field


def test_encoder_refuses_event_times_in_the_wrong_unit() -> None:
    csc_wheel = RevolutionData(1, 1, 1024, 32)
    with pytest.raises(ValueError, match="1/2048"):
        encode_cps(P(0, wheel=csc_wheel))


def _opt(strategy: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.none() | strategy


U16, S16, U12 = st.integers(0, 0xFFFF), st.integers(-0x8000, 0x7FFF), st.integers(0, 0xFFF)
S16_PAIR = st.builds(Extremes, S16, S16)


@st.composite
def measurements(draw: st.DrawFn) -> CyclingPowerMeasurement:
    force = draw(st.none() | S16_PAIR)
    torque_ext = None if force is not None else draw(st.none() | S16_PAIR)
    wheel = draw(st.none() | st.builds(wheel_data, st.integers(0, 0xFFFFFFFF), U16))
    crank = draw(st.none() | st.builds(crank_data, U16, U16))
    return CyclingPowerMeasurement(
        power_w=draw(S16),
        balance_raw=draw(_opt(st.integers(0, 0xFF))),
        balance_left=draw(st.booleans()),
        torque_raw=draw(_opt(U16)),
        torque_crank_based=draw(st.booleans()),
        wheel=wheel,
        crank=crank,
        force_n=force,
        torque_extremes_raw=torque_ext,
        angles_deg=draw(st.none() | st.builds(Extremes, U12, U12)),
        top_dead_spot_deg=draw(_opt(U16)),
        bottom_dead_spot_deg=draw(_opt(U16)),
        energy_kj=draw(_opt(U16)),
        offset_compensation=draw(st.booleans()),
    )


@given(measurements())
def test_round_trip(m: CyclingPowerMeasurement) -> None:
    assert parse_cps(encode_cps(m)) == m


@given(st.binary(max_size=48))
def test_fuzz_arbitrary_bytes_decode_canonically_or_fail_typed(data: bytes) -> None:
    try:
        m = parse_cps(data)
    except CpsError:
        return
    assert encode_cps(m) == data


@given(st.integers(0, 0x1FFF), st.binary(max_size=40))
def test_fuzz_valid_flags_with_arbitrary_bodies(flags: int, body: bytes) -> None:
    data = flags.to_bytes(2, "little") + body
    try:
        m = parse_cps(data)
    except CpsError as exc:
        assert exc.field != "flags" or flags & 0xC0 == 0xC0
        return
    assert encode_cps(m) == data
