"""Heart Rate Service payloads: every flag combination, the examples of docs/architecture.md#sensors, round
trips and fuzzing."""

from __future__ import annotations

import contextlib
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble.hrm import (
    BodySensorLocation,
    HeartRateMeasurement,
    HrmError,
    encode_hrm,
    parse_battery_level,
    parse_body_sensor_location,
    parse_hrm,
)
from engine.readings import Contact


@pytest.mark.parametrize(
    ("hex_payload", "expected"),
    [
        ("0048", HeartRateMeasurement(72, Contact.UNSUPPORTED, None, (), False)),
        ("1641b103", HeartRateMeasurement(65, Contact.DETECTED, None, (945,), False)),
        ("1f2c01d204c800cd00", HeartRateMeasurement(300, Contact.DETECTED, 1234, (200, 205), True)),
    ],
)
def test_design_examples_byte_for_byte(hex_payload: str, expected: HeartRateMeasurement) -> None:
    payload = bytes.fromhex(hex_payload)
    assert parse_hrm(payload) == expected
    assert (
        encode_hrm(
            expected.hr,
            contact=expected.contact,
            energy_kj=expected.energy_kj,
            rr_raw=expected.rr_raw,
            uint16=expected.uint16,
        )
        == payload
    )


def test_design_example_rr_in_seconds() -> None:
    assert parse_hrm(bytes.fromhex("1641b103")).rr_s == (945 / 1024,)
    assert parse_hrm(bytes.fromhex("1f2c01d204c800cd00")).rr_s == (200 / 1024, 205 / 1024)


CONTACT_BITS = {
    0b00: Contact.UNSUPPORTED,
    0b01: Contact.UNSUPPORTED,
    0b10: Contact.NOT_DETECTED,
    0b11: Contact.DETECTED,
}


@pytest.mark.parametrize("flags", range(32))
def test_every_flag_combination(flags: int) -> None:
    """All 32 combinations of the five defined flag bits, with well-formed bodies."""
    uint16 = bool(flags & 0x01)
    hr = 0x1234 if uint16 else 0x9C
    body = struct.pack("<H", hr) if uint16 else bytes([hr])
    energy = None
    if flags & 0x08:
        energy = 4321
        body += struct.pack("<H", energy)
    rr: tuple[int, ...] = ()
    if flags & 0x10:
        rr = (1024, 1, 65535)
        body += b"".join(struct.pack("<H", r) for r in rr)
    m = parse_hrm(bytes([flags]) + body)
    assert m == HeartRateMeasurement(hr, CONTACT_BITS[(flags >> 1) & 0b11], energy, rr, uint16)


@pytest.mark.parametrize("reserved", [0x20, 0x40, 0x80, 0xE0])
def test_reserved_flag_bits_are_ignored(reserved: int) -> None:
    assert parse_hrm(bytes([reserved, 60])) == HeartRateMeasurement(60, Contact.UNSUPPORTED, None, (), False)


@pytest.mark.parametrize(
    ("hex_payload", "field"),
    [
        ("", "flags"),
        ("00", "heart_rate"),
        ("01", "heart_rate"),
        ("0148", "heart_rate"),
        ("0848", "energy_expended"),
        ("084801", "energy_expended"),
        ("1048", "rr_interval"),
        ("104801", "rr_interval"),
        ("1848d204", "rr_interval"),
        ("18480102030405", "rr_interval"),
        ("004801", "length"),
        ("01480001", "length"),
    ],
)
def test_truncated_or_inconsistent_payloads_name_the_field(hex_payload: str, field: str) -> None:
    with pytest.raises(HrmError) as info:
        parse_hrm(bytes.fromhex(hex_payload))
    assert info.value.field == field
    assert field in str(info.value)
    assert info.value.payload == bytes.fromhex(hex_payload)


def test_many_rr_intervals() -> None:
    rr = tuple(range(500, 500 + 9))
    payload = encode_hrm(70, rr_raw=rr)
    assert len(payload) == 2 + 2 * 9
    assert parse_hrm(payload).rr_raw == rr


def test_zero_heart_rate_with_no_contact_decodes_as_such() -> None:
    # A strap off the chest may send 0: the parser reports it with its contact state; showing
    # "no contact" rather than 0 bpm is the consumer's job, and it needs the contact field to do it.
    m = parse_hrm(encode_hrm(0, contact=Contact.NOT_DETECTED))
    assert (m.hr, m.contact) == (0, Contact.NOT_DETECTED)


measurements = st.builds(
    HeartRateMeasurement,
    hr=st.integers(0, 0xFFFF),
    contact=st.sampled_from(Contact),
    energy_kj=st.none() | st.integers(0, 0xFFFF),
    rr_raw=st.lists(st.integers(0, 0xFFFF), max_size=12).map(tuple),
    uint16=st.booleans(),
).filter(lambda m: m.uint16 or m.hr <= 0xFF)


@given(measurements)
def test_encode_decode_round_trip(m: HeartRateMeasurement) -> None:
    payload = encode_hrm(m.hr, contact=m.contact, energy_kj=m.energy_kj, rr_raw=m.rr_raw, uint16=m.uint16)
    assert parse_hrm(payload) == m


@given(st.integers(0, 0xFFFF))
def test_encoder_picks_the_smallest_format(hr: int) -> None:
    assert parse_hrm(encode_hrm(hr)).uint16 == (hr > 0xFF)


@given(st.binary(max_size=64))
def test_fuzz_random_bytes_only_raise_hrm_error(payload: bytes) -> None:
    try:
        m = parse_hrm(payload)
    except HrmError as exc:
        assert exc.payload == payload
    else:
        # Whatever decoded must re-encode to the same bytes, reserved flag bits aside.
        assert (
            encode_hrm(m.hr, contact=m.contact, energy_kj=m.energy_kj, rr_raw=m.rr_raw, uint16=m.uint16)[1:]
            == payload[1:]
        )


@given(measurements, st.data())
def test_fuzz_mutated_valid_payloads(m: HeartRateMeasurement, data: st.DataObject) -> None:
    payload = bytearray(
        encode_hrm(m.hr, contact=m.contact, energy_kj=m.energy_kj, rr_raw=m.rr_raw, uint16=m.uint16)
    )
    op = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if op == "flip":
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "truncate":
        del payload[data.draw(st.integers(0, len(payload) - 1)) :]
    else:
        payload += data.draw(st.binary(min_size=1, max_size=5))
    # Any outcome but a non-HrmError exception is acceptable: flipped bits often still decode.
    with contextlib.suppress(HrmError):
        parse_hrm(bytes(payload))


@pytest.mark.parametrize("value", list(BodySensorLocation))
def test_body_sensor_location(value: BodySensorLocation) -> None:
    assert parse_body_sensor_location(bytes([value])) is value


@pytest.mark.parametrize("payload", [b"", b"\x07", b"\xff", b"\x01\x01"])
def test_body_sensor_location_rejects(payload: bytes) -> None:
    with pytest.raises(HrmError) as info:
        parse_body_sensor_location(payload)
    assert info.value.field == "body_sensor_location"


@pytest.mark.parametrize("level", [0, 1, 57, 100])
def test_battery_level(level: int) -> None:
    assert parse_battery_level(bytes([level])) == level


@pytest.mark.parametrize("payload", [b"", b"\x65", b"\xff", b"\x10\x00"])
def test_battery_level_rejects(payload: bytes) -> None:
    with pytest.raises(HrmError) as info:
        parse_battery_level(payload)
    assert info.value.field == "battery_level"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hr": -1}, "out of range"),
        ({"hr": 0x10000}, "out of range"),
        ({"hr": 300, "uint16": False}, "uint8"),
        ({"hr": 60, "energy_kj": 70000}, "energy"),
        ({"hr": 60, "rr_raw": [1, 70000]}, "RR"),
    ],
)
def test_encoder_rejects_unrepresentable_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_hrm(**kwargs)  # type: ignore[arg-type]


def test_contact_bits_cover_all_states() -> None:
    seen = {parse_hrm(bytes([bits << 1, 60])).contact for bits, _ in itertools.product(range(4), [0])}
    assert seen == set(Contact)
