"""Indoor Bike Data (FTMS 0x2AD2): spec-derived vectors for each flag bit alone and all 8192 combinations,
the inverted More Data bit, "Data Not Available", strictness, round trips and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble.ftms import (
    ExpendedEnergy,
    FtmsError,
    IndoorBikeData,
    encode_indoor_bike_data,
    parse_indoor_bike_data,
)
from adapters.ble.gatt_fields import FitnessPayloadError

# Each flag bit alone, with More Data (bit 0) set so the speed field is absent: flags, body, expected.
# Bodies are written out by hand from the field table (little-endian), not produced by the encoder.
SINGLE_FIELD = [
    ("0100", "", IndoorBikeData()),
    ("0300", "d007", IndoorBikeData(avg_speed_raw=2000)),
    ("0500", "b400", IndoorBikeData(cadence_raw=180)),
    ("0900", "a000", IndoorBikeData(avg_cadence_raw=160)),
    ("1100", "40e201", IndoorBikeData(distance_m=123456)),
    ("2100", "f6ff", IndoorBikeData(resistance=-10)),
    ("4100", "fa00", IndoorBikeData(power_w=250)),
    ("4100", "9cff", IndoorBikeData(power_w=-100)),
    ("8100", "c800", IndoorBikeData(avg_power_w=200)),
    ("0101", "640058020a", IndoorBikeData(energy=ExpendedEnergy(100, 600, 10))),
    ("0102", "96", IndoorBikeData(hr=150)),
    ("0104", "2d", IndoorBikeData(met_raw=45)),
    ("0108", "100e", IndoorBikeData(elapsed_s=3600)),
    ("0110", "2c01", IndoorBikeData(remaining_s=300)),
]


@pytest.mark.parametrize(("flags", "body", "expected"), SINGLE_FIELD)
def test_each_flag_bit_alone(flags: str, body: str, expected: IndoorBikeData) -> None:
    payload = bytes.fromhex(flags + body)
    assert parse_indoor_bike_data(payload) == expected
    assert encode_indoor_bike_data(expected) == payload


def test_more_data_bit_is_inverted_speed_present_when_zero() -> None:
    m = parse_indoor_bike_data(bytes.fromhex("0000" + "e803"))
    assert m == IndoorBikeData(speed_raw=1000)
    assert m.speed_kmh == 10.0
    assert parse_indoor_bike_data(bytes.fromhex("0100")).speed_kmh is None
    with pytest.raises(FtmsError) as info:
        parse_indoor_bike_data(bytes.fromhex("0000"))
    assert info.value.field == "instantaneous_speed"


def test_units() -> None:
    """Speed 1/100 km/h, cadence 1/2 rpm, MET 1/10, distance uint24 metres."""
    m = parse_indoor_bike_data(bytes.fromhex("1e04" + "3904" + "d204" + "a500" + "5b00" + "ffffff" + "4d"))
    assert (m.speed_kmh, m.avg_speed_kmh) == (10.81, 12.34)
    assert (m.cadence_rpm, m.avg_cadence_rpm) == (82.5, 45.5)
    assert m.distance_m == 0xFFFFFF
    assert m.met == 7.7


def test_a_typical_spin_bike_notification() -> None:
    """Speed, cadence, power and heart rate: what most connected spin bikes send every second."""
    m = parse_indoor_bike_data(bytes.fromhex("4402" + "a00f" + "6e00" + "9600" + "78"))
    assert (m.speed_kmh, m.cadence_rpm, m.power_w, m.hr) == (40.0, 55.0, 150, 120)
    assert m.distance_m is None and m.energy is None


def test_energy_data_not_available_values_are_none() -> None:
    m = parse_indoor_bike_data(bytes.fromhex("0101" + "ffff" + "ffff" + "ff"))
    assert m.energy == ExpendedEnergy(None, None, None)
    m = parse_indoor_bike_data(bytes.fromhex("0101" + "2c01" + "ffff" + "ff"))
    assert m.energy == ExpendedEnergy(300, None, None)
    assert encode_indoor_bike_data(m) == bytes.fromhex("0101" + "2c01" + "ffff" + "ff")
    with pytest.raises(ValueError, match="Data Not Available"):
        encode_indoor_bike_data(IndoorBikeData(energy=ExpendedEnergy(0xFFFF, 1, 1)))


# Per flag bit: the field bytes and the IndoorBikeData attributes they decode to, in spec order.
FIELDS: list[tuple[int, str, dict[str, object]]] = [
    (1 << 1, "3930", {"avg_speed_raw": 0x3039}),
    (1 << 2, "a200", {"cadence_raw": 162}),
    (1 << 3, "9c00", {"avg_cadence_raw": 156}),
    (1 << 4, "010203", {"distance_m": 0x030201}),
    (1 << 5, "0580", {"resistance": -32763}),
    (1 << 6, "ff7f", {"power_w": 32767}),
    (1 << 7, "0080", {"avg_power_w": -32768}),
    (1 << 8, "e80310270f", {"energy": ExpendedEnergy(1000, 10000, 15)}),
    (1 << 9, "b4", {"hr": 180}),
    (1 << 10, "0a", {"met_raw": 10}),
    (1 << 11, "ffff", {"elapsed_s": 65535}),
    (1 << 12, "0000", {"remaining_s": 0}),
]


def test_every_flag_combination() -> None:
    """All 8192 combinations of the 13 defined bits, each with well-formed fields, decode and re-encode."""
    for flags in range(1 << 13):
        body = ""
        expected: dict[str, object] = {}
        if not flags & 1:
            body += "3412"
            expected["speed_raw"] = 0x1234
        for bit, hex_field, attrs in FIELDS:
            if flags & bit:
                body += hex_field
                expected.update(attrs)
        payload = flags.to_bytes(2, "little") + bytes.fromhex(body)
        m = parse_indoor_bike_data(payload)
        assert m == IndoorBikeData(**expected), f"flags 0x{flags:04x}"  # type: ignore[arg-type]
        assert encode_indoor_bike_data(m) == payload


ALL_FIELDS = bytes.fromhex("fe1f" + "3412" + "".join(h for _, h, _ in FIELDS))


def test_every_truncation_of_a_full_payload_names_a_field() -> None:
    assert len(ALL_FIELDS) == 2 + 2 + 2 + 2 + 2 + 3 + 2 + 2 + 2 + 5 + 1 + 1 + 2 + 2
    parse_indoor_bike_data(ALL_FIELDS)
    fields = []
    for cut in range(len(ALL_FIELDS)):
        with pytest.raises(FtmsError) as info:
            parse_indoor_bike_data(ALL_FIELDS[:cut])
        assert info.value.payload == ALL_FIELDS[:cut]
        assert info.value.field in str(info.value)
        fields.append(info.value.field)
    assert fields[:6] == [
        "flags",
        "flags",
        "instantaneous_speed",
        "instantaneous_speed",
        "average_speed",
        "average_speed",
    ]
    assert "total_distance" in fields and "energy_per_minute" in fields and fields[-1] == "remaining_time"


@pytest.mark.parametrize(
    ("hex_payload", "field"),
    [
        ("", "flags"),
        ("01", "flags"),
        ("0120", "flags"),  # bit 13, reserved
        ("0180", "flags"),  # bit 15, reserved
        ("0100" + "00", "length"),  # a trailing byte
        ("0000" + "e80300", "length"),
        ("0102", "heart_rate"),  # flagged, absent
        ("0101" + "6400" + "5802", "energy_per_minute"),
        ("1100" + "40e2", "total_distance"),
    ],
)
def test_bad_payloads_are_typed_errors_naming_the_field(hex_payload: str, field: str) -> None:
    with pytest.raises(FtmsError) as info:
        parse_indoor_bike_data(bytes.fromhex(hex_payload))
    assert info.value.field == field
    assert isinstance(info.value, FitnessPayloadError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "m",
    [
        IndoorBikeData(speed_raw=0x10000),
        IndoorBikeData(distance_m=1 << 24),
        IndoorBikeData(power_w=40000),
        IndoorBikeData(resistance=-40000),
        IndoorBikeData(hr=256),
        IndoorBikeData(energy=ExpendedEnergy(1, 2, 0x100)),
    ],
)
def test_encoder_refuses_values_that_do_not_fit(m: IndoorBikeData) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_indoor_bike_data(m)


def _opt(strategy: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.none() | strategy


U8, U16, S16 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(-0x8000, 0x7FFF)
ENERGY = st.builds(
    ExpendedEnergy, _opt(st.integers(0, 0xFFFE)), _opt(st.integers(0, 0xFFFE)), _opt(st.integers(0, 0xFE))
)
BIKE_DATA = st.builds(
    IndoorBikeData,
    speed_raw=_opt(U16),
    avg_speed_raw=_opt(U16),
    cadence_raw=_opt(U16),
    avg_cadence_raw=_opt(U16),
    distance_m=_opt(st.integers(0, 0xFFFFFF)),
    resistance=_opt(S16),
    power_w=_opt(S16),
    avg_power_w=_opt(S16),
    energy=st.none() | ENERGY,
    hr=_opt(U8),
    met_raw=_opt(U8),
    elapsed_s=_opt(U16),
    remaining_s=_opt(U16),
)


@given(BIKE_DATA)
def test_round_trip(m: IndoorBikeData) -> None:
    assert parse_indoor_bike_data(encode_indoor_bike_data(m)) == m


@given(st.binary(max_size=48))
def test_fuzz_arbitrary_bytes_decode_canonically_or_fail_typed(data: bytes) -> None:
    """Any bytes either are a typed error or decode to a value that re-encodes to exactly those bytes."""
    try:
        m = parse_indoor_bike_data(data)
    except FtmsError:
        return
    assert encode_indoor_bike_data(m) == data


@given(st.integers(0, 0x1FFF), st.binary(max_size=40))
def test_fuzz_valid_flags_with_arbitrary_bodies(flags: int, body: bytes) -> None:
    data = flags.to_bytes(2, "little") + body
    try:
        m = parse_indoor_bike_data(data)
    except FtmsError as exc:
        assert exc.field != "flags"
        return
    assert encode_indoor_bike_data(m) == data
