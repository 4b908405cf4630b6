"""Sample batch schema 2 (engine/ride/compact.py): exact round trips, the same samples as schema 1, strict
decoding of hostile bytes (fuzzed), and its size on a realistic ride."""

from __future__ import annotations

import lzma
import zlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bench.ridegen import ride
from engine.ride import batches, compact
from engine.ride.compact import CompactDecodeError, decode_batch, encode_batch
from engine.ride.samples import Sample, SampleDecodeError, encode_blob

from .test_samples import samples as one_sample


@st.composite
def batch(draw: st.DrawFn, max_size: int = 40) -> list[Sample]:
    """Strictly increasing seqs, steady or jittery times, and metrics that come and go."""
    seqs = sorted(draw(st.sets(st.integers(0, 2**40), min_size=1, max_size=max_size)))
    steady = draw(st.booleans())
    t0 = draw(st.integers(1_600_000_000_00, 1_900_000_000_00))
    out = []
    for i, seq in enumerate(seqs):
        drawn = draw(one_sample(seq=seq))
        t = (t0 + 100 * i) / 100 if steady else drawn.t
        out.append(replace(drawn, seq=seq, t=t))
    return out


@given(batch())
def test_round_trip_gives_the_samples_schema_1_gives(items: list[Sample]) -> None:
    encoded = encode_batch(items)
    assert decode_batch(encoded) == [s.normalized() for s in items]
    assert batches.decode_batch(encoded) == batches.decode_batch(encode_blob(items))


@given(batch())
def test_encoding_is_canonical(items: list[Sample]) -> None:
    encoded = encode_batch(items)
    assert encode_batch(decode_batch(encoded)) == encoded


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_hostile_bytes_raise_only_the_typed_error(data: bytes) -> None:
    for candidate in (data, b"\x02\x00" + data, b"\x02\x01" + data):
        try:
            decoded = decode_batch(candidate)
        except CompactDecodeError:
            continue
        # Whatever is accepted is a valid batch: it encodes again, to samples that decode alike.
        assert decode_batch(encode_batch(decoded)) == decoded


@settings(max_examples=300)
@given(batch(max_size=12), st.data())
def test_mutated_batches_raise_the_typed_error_or_decode_validly(
    items: list[Sample], data: st.DataObject
) -> None:
    # Small batches are always stored raw, so the compressed forms of the same body are mutated too.
    form = data.draw(st.sampled_from(["encoder", "deflate", "lzma"]))
    encoded = bytearray(encode_batch(items) if form == "encoder" else _compressed_as(form, items))
    action = data.draw(st.sampled_from(["flip", "truncate", "append", "insert"]))
    pos = data.draw(st.integers(0, len(encoded) - 1))
    if action == "flip":
        encoded[pos] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del encoded[pos:]
    elif action == "append":
        encoded += data.draw(st.binary(min_size=1, max_size=4))
    else:
        encoded[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = decode_batch(bytes(encoded))
    except CompactDecodeError:
        return
    assert decode_batch(encode_batch(decoded)) == decoded


def _compressed_as(form: str, items: list[Sample]) -> bytes:
    body = compact.encode_body(items)
    if form == "deflate":
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compact._compressed(1, body, packer.compress(body) + packer.flush())
    return compact._compressed(
        2, body, lzma.compress(body, format=lzma.FORMAT_RAW, filters=compact._LZMA_FILTERS)
    )


def _plain(body: bytes) -> bytes:
    return bytes([compact.BATCH_VERSION, 0]) + body


def test_truncation_and_trailing_bytes_are_rejected() -> None:
    encoded = encode_batch([Sample(seq=5, t=10.0, hr=100)])
    assert encoded[1] == 0  # too small to deflate
    for cut in range(len(encoded)):
        with pytest.raises(CompactDecodeError):
            decode_batch(encoded[:cut])
    with pytest.raises(CompactDecodeError):
        decode_batch(encoded + b"\x00")


def test_non_canonical_and_out_of_range_bodies_are_rejected() -> None:
    # n=2, seq 0, one seq run (delta 1 x1), t 0, one t run, contact runs 0x1 then 0x1 (repeat: refused)
    with pytest.raises(CompactDecodeError, match="non-canonical"):
        decode_batch(_plain(bytes([2, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1])))
    with pytest.raises(CompactDecodeError, match="strictly increase"):
        decode_batch(_plain(bytes([2, 0, 0, 1, 0, 0, 1])))  # seq delta 0
    with pytest.raises(CompactDecodeError, match="does not fit"):
        decode_batch(_plain(bytes([2, 0, 1, 2])))  # a run longer than the batch
    with pytest.raises(CompactDecodeError, match="samples"):
        decode_batch(_plain(bytes([0])))  # an empty batch
    with pytest.raises(CompactDecodeError, match="flags"):
        decode_batch(bytes([2, 0x80, 1]))
    # One sample whose hr column says +70000: beyond 16 bits.
    hr = bytearray([1, 0, 0, 0, 1, 0, 1])  # n, seq, t, contact run (0 x1), marks run (0 x1)
    hr += bytes([0x03]) + bytes([0xC0, 0xA2, 0x08])  # present run of 1, zigzag(70000)
    with pytest.raises(CompactDecodeError, match="out of range"):
        decode_batch(_plain(bytes(hr)))


@pytest.mark.parametrize("flag", [1, 2])
def test_a_compression_bomb_or_a_lying_length_is_refused(flag: int) -> None:
    body = compact.encode_body([Sample(seq=i, t=float(i), hr=100 + i % 7) for i in range(400)])
    if flag == 1:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        stream = packer.compress(body) + packer.flush()
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
        huge = bomb.compress(bytes(50_000_000)) + bomb.flush()
    else:
        stream = lzma.compress(body, format=lzma.FORMAT_RAW, filters=compact._LZMA_FILTERS)
        huge = lzma.compress(bytes(50_000_000), format=lzma.FORMAT_RAW, filters=compact._LZMA_FILTERS)
    good = compact._compressed(flag, body, stream)
    assert decode_batch(good) == decode_batch(_plain(body))
    with pytest.raises(CompactDecodeError, match="announces"):
        decode_batch(bytes([2, flag]) + bytes([0x80, 0xE1, 0xEB, 0x17]) + huge)  # claims 50 MB
    lying = compact._compressed(flag, body + b"\x00", stream)  # announces one byte more than it holds
    with pytest.raises(CompactDecodeError, match="exactly"):
        decode_batch(lying)
    with pytest.raises(CompactDecodeError):
        decode_batch(good + b"\x00")
    with pytest.raises(CompactDecodeError, match="flags"):
        decode_batch(bytes([2, 3]) + good[2:])  # both compressions at once


def test_the_encoder_picks_the_shortest_form() -> None:
    small = encode_batch([Sample(seq=1, t=1.0)])
    assert small[1] == 0
    hour = encode_batch(ride(3600))
    assert hour[1] == 2
    assert len(hour) < len(encode_blob(ride(3600))) / 4


def test_bodies_under_the_raw_limit_are_stored_raw_even_when_deflate_is_shorter() -> None:
    # A steady ride's 2-minute fold: well under the limit, and deflate alone would shrink it.
    items = ride(120, "raw-rule")
    body = compact.encode_body(items)
    assert len(body) < compact.RAW_BELOW_BODY_BYTES
    assert len(_compressed_as("deflate", items)) < len(body)
    assert encode_batch(items) == _plain(body)
    # From the limit on, the shortest form: a 5-minute fold's body compresses.
    longer = ride(300, "raw-rule")
    assert len(compact.encode_body(longer)) >= compact.RAW_BELOW_BODY_BYTES
    assert encode_batch(longer)[1] in (1, 2)
    assert decode_batch(encode_batch(longer)) == longer


def test_raw_small_batches_save_smaller_than_batches_compressed_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why the rule: a document of 10 s folds deflates its value column across batches on save(), which
    a batch compressed on its own defeats."""
    from engine.crdt import CrdtDoc, new_actor_id
    from engine.ride import documents
    from engine.ride.model import DeviceDoc
    from engine.ride.schema import DocKind, DocRef

    half_hour = ride(1800, "raw-rule")

    def saved() -> int:
        doc = CrdtDoc.new(new_actor_id("bike-b"))
        documents.init_doc(doc, DocRef("r", DocKind.BIKE, "bike-b"))
        for lo in range(0, len(half_hour), 10):
            documents.add_samples(doc, half_hour[lo : lo + 10], batch_schema=2)
        decoded = documents.decode(doc, DocRef("r", DocKind.BIKE, "bike-b"))
        assert isinstance(decoded, DeviceDoc) and decoded.samples == tuple(half_hour)
        return len(doc.save())

    with_rule = saved()
    monkeypatch.setattr(compact, "RAW_BELOW_BODY_BYTES", 0)  # every batch compressed if that is shorter
    one_by_one = saved()
    assert with_rule < one_by_one * 0.9


def test_schema_dispatch_and_unknown_schemas() -> None:
    items = [Sample(seq=i, t=100.0 + i, hr=120) for i in range(3)]
    assert batches.decode_batch(batches.encode_batch(items, 1)) == items
    assert batches.decode_batch(batches.encode_batch(items, 2)) == items
    for bad in (b"", b"\x03\x00", b"\x00"):
        with pytest.raises(SampleDecodeError):
            batches.decode_batch(bad)
    with pytest.raises(ValueError):
        batches.encode_batch(items, 3)
    with pytest.raises(ValueError):
        encode_batch([items[1], items[0]])  # not sorted


def test_a_realistic_half_hour_is_several_times_smaller_than_schema_1() -> None:
    half_hour = ride(1800)
    new, old = encode_batch(half_hour), encode_blob(half_hour)
    assert decode_batch(new) == half_hour
    assert len(new) * 4 < len(old)
    assert len(new) / len(half_hour) < 3.0  # bytes per sample
