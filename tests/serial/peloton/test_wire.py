"""Peloton bus wire format: checksums, digit payloads and the encoders, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.peloton import (
    Command,
    PelotonEncodeError,
    checksum,
    decode_digits,
    encode_cadence,
    encode_calibration_reply,
    encode_calibration_request,
    encode_digits,
    encode_power,
    encode_reply_payload,
    encode_request,
    encode_resistance,
)


def test_requests_match_the_real_bus_bytes() -> None:
    # These three requests appear verbatim in PeloMon's published capture of a real head unit.
    assert encode_request(Command.CADENCE) == bytes.fromhex("f54136f6")
    assert encode_request(Command.POWER) == bytes.fromhex("f54439f6")
    assert encode_request(Command.RESISTANCE) == bytes.fromhex("f54a3ff6")


def test_replies_match_the_real_bus_bytes() -> None:
    assert encode_cadence(0) == bytes.fromhex("f14103303030c5f6")
    assert encode_power(0) == bytes.fromhex("f144053030303030" + "2af6")
    # resistance payload "6510" (least significant first) is raw 156
    assert encode_resistance(156) == bytes.fromhex("f14a04363531300bf6")


def test_calibration_request_and_reply() -> None:
    assert encode_calibration_request(0) == bytes.fromhex("f700f7f6")
    assert encode_calibration_request(0x1E) == bytes((0xF7, 0x1E, 0x15, 0xF6))
    reply = encode_calibration_reply(967)
    assert reply[:3] == bytes((0xF1, 0xF7, 4))
    assert reply[3:7] == b"7690"
    assert reply[7] == checksum(reply[:7])
    assert reply[8] == 0xF6


def test_startup_request() -> None:
    assert encode_request(0x00, head=0xFE) == bytes((0xFE, 0x00, 0xFE, 0xF6))


def test_digits_are_least_significant_first_and_zero_padded() -> None:
    assert encode_digits(75, 3) == b"570"
    assert encode_digits(1505, 5) == b"50510"
    assert decode_digits(b"570") == 75
    assert decode_digits(b"50510") == 1505


@pytest.mark.parametrize("payload", [b"", b"12a", b"-12", b" 12", b"\xb0"])
def test_non_digit_payloads_decode_to_none(payload: bytes) -> None:
    assert decode_digits(payload) is None


def test_power_is_sent_in_deciwatts() -> None:
    assert encode_power(150.3)[3:8] == b"30510"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encode_cadence(1000), "does not fit"),
        (lambda: encode_cadence(-1), "unsigned"),
        (lambda: encode_power(-0.1), "power"),
        (lambda: encode_calibration_request(31), "0..30"),
        (lambda: encode_request(0x41, head=0x12), "request head"),
        (lambda: encode_request(256), "byte"),
        (lambda: encode_reply_payload(0x41, b"1" * 17), "exceeds"),
    ],
)
def test_encoders_refuse_values_the_bus_cannot_carry(call: object, message: str) -> None:
    with pytest.raises(PelotonEncodeError, match=message):
        call()  # type: ignore[operator]


@given(st.integers(0, 10**7 - 1), st.integers(1, 7))
def test_digits_round_trip(value: int, width: int) -> None:
    if len(str(value)) > width:
        with pytest.raises(PelotonEncodeError):
            encode_digits(value, width)
    else:
        encoded = encode_digits(value, width)
        assert len(encoded) == width
        assert decode_digits(encoded) == value


@given(st.binary(max_size=40))
def test_checksum_is_low_byte_of_sum(data: bytes) -> None:
    assert checksum(data) == sum(data) % 256
