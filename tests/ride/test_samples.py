"""The packed sample record: exact round trips, strict decoding of hostile bytes, and its size."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.ride.samples import (
    Sample,
    SampleDecodeError,
    decode_blob,
    decode_record,
    encode_blob,
    encode_record,
)

CONTACTS = st.sampled_from([None, "detected", "not_detected", "unsupported"])


@st.composite
def samples(draw: st.DrawFn, seq: int | None = None) -> Sample:
    return Sample(
        seq=draw(st.integers(0, 2**40)) if seq is None else seq,
        t=draw(st.integers(1_600_000_000_00, 1_900_000_000_00)) / 100,
        hr=draw(st.none() | st.integers(0, 0xFFFF)),
        rr=tuple(draw(st.lists(st.integers(0, 0xFFFF), max_size=8))),
        cadence=draw(st.none() | st.integers(0, 300)),
        power_dw=draw(st.none() | st.integers(0, 30000)),
        resistance=draw(st.none() | st.integers(0, 4095)),
        contact=draw(CONTACTS),
        stale=draw(st.booleans()),
        gap=draw(st.booleans()),
    )


@given(samples())
def test_record_round_trip(sample: Sample) -> None:
    assert decode_record(bytes(encode_record(sample, 0))) == sample


@given(st.lists(samples(), min_size=1, max_size=20))
def test_blob_round_trip(batch: list[Sample]) -> None:
    assert decode_blob(encode_blob(batch)) == batch


@given(st.binary(max_size=64))
def test_hostile_bytes_raise_only_the_typed_error(data: bytes) -> None:
    for fn in (decode_record, decode_blob):
        with contextlib.suppress(SampleDecodeError):
            fn(data)


@given(samples(), st.data())
def test_every_truncation_and_trailing_byte_is_rejected(sample: Sample, data: st.DataObject) -> None:
    record = bytes(encode_record(sample, 0))
    cut = data.draw(st.integers(0, len(record) - 1))
    with pytest.raises(SampleDecodeError):
        decode_record(record[:cut])
    with pytest.raises(SampleDecodeError):
        decode_record(record + b"\x00")


def test_overlong_varint_and_unknown_bits_are_rejected() -> None:
    with pytest.raises(SampleDecodeError):
        decode_record(bytes([0x00, 0x81, 0x00, 0x00]))  # seq 1 encoded in two bytes
    with pytest.raises(SampleDecodeError):
        decode_record(bytes([0x80, 0xF0, 0x01, 0x00]))  # unknown extension bits
    with pytest.raises(SampleDecodeError):
        decode_blob(bytes([2, 0, 0, 1, 0]))  # unknown blob version


def test_typical_ride_sample_is_about_ten_bytes() -> None:
    t0 = 1_700_000_000.0
    batch = [
        Sample(seq=1000 + i, t=t0 + i, hr=150, contact="detected", cadence=85, power_dw=1875, resistance=42)
        for i in range(10)
    ]
    per_sample = (len(encode_blob(batch)) - 7) / len(batch)
    assert per_sample <= 11
    assert decode_blob(encode_blob(batch)) == batch


def test_out_of_range_values_are_refused_at_encode_time() -> None:
    with pytest.raises(ValueError):
        encode_record(Sample(seq=-1, t=0.0), 0)
    with pytest.raises(ValueError):
        encode_record(Sample(seq=1, t=0.0, rr=tuple(range(40))), 0)
    with pytest.raises(ValueError):
        encode_record(Sample(seq=1, t=0.0, contact="maybe"), 0)
