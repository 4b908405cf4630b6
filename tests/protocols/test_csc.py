"""CSC Measurement (0x2A5B): spec-derived vectors for every flag combination, strictness, round trips and
fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble.csc import CscError, CscMeasurement, crank_data, encode_csc, parse_csc, wheel_data
from adapters.ble.gatt_fields import FitnessPayloadError
from adapters.ble.revolutions import RevolutionData

# Hand-written from the field table: wheel uint32 + uint16 (1/1024 s), crank uint16 + uint16 (1/1024 s).
VECTORS = [
    ("00", CscMeasurement(None, None)),
    ("01e80300000004", CscMeasurement(wheel_data(1000, 1024), None)),
    ("022c010008", CscMeasurement(None, crank_data(300, 2048))),
    ("03ffffffffffffffffffff", CscMeasurement(wheel_data(0xFFFFFFFF, 0xFFFF), crank_data(0xFFFF, 0xFFFF))),
    ("0301000000010002000300", CscMeasurement(wheel_data(1, 1), crank_data(2, 3))),
]


@pytest.mark.parametrize(("hex_payload", "expected"), VECTORS)
def test_every_flag_combination(hex_payload: str, expected: CscMeasurement) -> None:
    payload = bytes.fromhex(hex_payload)
    assert parse_csc(payload) == expected
    assert encode_csc(expected) == payload


def test_event_times_are_in_1024ths_of_a_second_for_wheel_and_crank() -> None:
    m = parse_csc(bytes.fromhex("0305000000000607000002"))
    assert m.wheel is not None and m.crank is not None
    assert (m.wheel.event_time_s, m.crank.event_time_s) == (1.5, 0.5)
    assert (m.wheel.revs_bits, m.crank.revs_bits) == (32, 16)


@pytest.mark.parametrize(
    ("hex_payload", "field"),
    [
        ("", "flags"),
        ("04", "flags"),
        ("80", "flags"),
        ("01", "wheel_revolutions"),
        ("01e8030000", "last_wheel_event_time"),
        ("01e803000000", "last_wheel_event_time"),
        ("02", "crank_revolutions"),
        ("022c01", "last_crank_event_time"),
        ("03e80300000004", "crank_revolutions"),
        ("0000", "length"),
        ("022c01000800", "length"),
    ],
)
def test_bad_payloads_are_typed_errors_naming_the_field(hex_payload: str, field: str) -> None:
    with pytest.raises(CscError) as info:
        parse_csc(bytes.fromhex(hex_payload))
    assert info.value.field == field
    assert isinstance(info.value, FitnessPayloadError)


def test_encoder_refuses_out_of_range_or_wrong_unit() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_csc(CscMeasurement(None, crank_data(0x10000, 0)))
    with pytest.raises(ValueError, match="1/1024"):
        encode_csc(CscMeasurement(RevolutionData(1, 1, 2048, 32), None))


U16 = st.integers(0, 0xFFFF)


@given(
    st.none() | st.builds(wheel_data, st.integers(0, 0xFFFFFFFF), U16),
    st.none() | st.builds(crank_data, U16, U16),
)
def test_round_trip(wheel: RevolutionData | None, crank: RevolutionData | None) -> None:
    m = CscMeasurement(wheel, crank)
    assert parse_csc(encode_csc(m)) == m


@given(st.binary(max_size=24))
def test_fuzz_arbitrary_bytes_decode_canonically_or_fail_typed(data: bytes) -> None:
    try:
        m = parse_csc(data)
    except CscError:
        return
    assert encode_csc(m) == data
