"""The DIY cadence line protocol: parser, encoder, streaming, fuzzing."""

from __future__ import annotations

import binascii
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.line_protocol import (
    MAX_LINE,
    CrankRecord,
    Ident,
    LineEncodeError,
    LineError,
    LineErrorReason,
    LineEvent,
    LineParser,
    LineProtocolError,
    UnknownLine,
    encode_ident,
    encode_record,
    parse_line,
)


def test_documented_examples_byte_for_byte() -> None:
    # The examples in LINE_PROTOCOL.md.
    assert encode_ident("reed-01") == b"$I,reed-01,1*4994\n"
    assert encode_record(0, 0, 0, 512) == b"$C,0,0,0,512*6195\n"
    assert encode_record(1, 1, 819, 1024) == b"$C,1,1,819,1024*8144\n"
    assert f"{binascii.crc_hqx(b'123456789', 0):04X}" == "31C3"


def test_parse_record_and_ident() -> None:
    assert parse_line(b"$C,1,1,819,1024*8144\r\n") == CrankRecord(1, 1, 819, 1024)
    assert parse_line(b"$I,reed-01,1*4994") == Ident("reed-01", 1)
    assert parse_line(b"$c,1,1,819,1024*8144".replace(b"$c", b"$C").lower().upper()) == CrankRecord(
        1, 1, 819, 1024
    )


def test_lowercase_crc_is_accepted() -> None:
    line = encode_record(9, 65535, 65535, 0).replace(b"*", b"*").rstrip(b"\n")
    body, crc = line.split(b"*")
    assert parse_line(body + b"*" + crc.lower()) == CrankRecord(9, 65535, 65535, 0)


def test_unknown_type_with_valid_crc() -> None:
    body = b"B,87"
    line = b"$" + body + b"*%04X" % binascii.crc_hqx(body, 0)
    assert parse_line(line) == UnknownLine("B", line)


def _signed(body: bytes) -> bytes:
    return b"$" + body + b"*%04X" % binascii.crc_hqx(body, 0)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"C,1,1,819,1024*8144", LineErrorReason.MALFORMED),  # no '$'
        (b"$C,1,1,819,1024", LineErrorReason.MALFORMED),  # no checksum
        (b"$C,1,1,819,1024*814", LineErrorReason.MALFORMED),  # short checksum
        (b"$C,1,1,819,1024*8145", LineErrorReason.BAD_CHECKSUM),
        (b"$C,1,1,818,1024*8144", LineErrorReason.BAD_CHECKSUM),  # a flipped bit in a field
        (b"$" + b"C" * 70 + b"*0000", LineErrorReason.TOO_LONG),
        (_signed(b"C,1,2,3"), LineErrorReason.MALFORMED),
        (_signed(b"C,256,2,3,4"), LineErrorReason.OUT_OF_RANGE),
        (_signed(b"C,1,65536,3,4"), LineErrorReason.OUT_OF_RANGE),
        (_signed(b"C,1,-2,3,4"), LineErrorReason.MALFORMED),
        (_signed(b"I,reed,2"), LineErrorReason.UNSUPPORTED_VERSION),
        (_signed(b"I,bad id,1"), LineErrorReason.MALFORMED),
        (b"$C,1,1,\xff819,1024*8144", LineErrorReason.MALFORMED),
    ],
)
def test_bad_lines_raise_a_typed_error(line: bytes, reason: LineErrorReason) -> None:
    with pytest.raises(LineProtocolError) as exc:
        parse_line(line)
    assert exc.value.reason is reason


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_record(256, 0, 0, 0),
        lambda: encode_record(0, 65536, 0, 0),
        lambda: encode_record(0, 0, -1, 0),
        lambda: encode_ident("x" * 17),
        lambda: encode_ident("a,b"),
        lambda: encode_ident("ok", version=1000),
    ],
)
def test_encoder_refuses_out_of_range(call: object) -> None:
    with pytest.raises(LineEncodeError):
        call()  # type: ignore[operator]


def feed_all(parser: LineParser, data: bytes, chunk: int) -> list[LineEvent]:
    out: list[LineEvent] = []
    for i in range(0, len(data), chunk):
        out += parser.feed(data[i : i + chunk])
    return out + parser.flush()


def test_stream_resyncs_after_garbage_and_overlong_lines() -> None:
    data = (
        b"boot banner v0.3\r\n\r\n"
        + encode_ident("reed-01")
        + b"x" * 200
        + b"\n"
        + encode_record(0, 5, 100, 200)
        + b"$C,1,6,1"  # cut off by a reset
        + encode_record(2, 7, 300, 400)
    )
    for chunk in (1, 7, len(data)):
        p = LineParser()
        out = feed_all(p, data, chunk)
        good = [e for e in out if not isinstance(e, LineError)]
        assert good == [Ident("reed-01", 1), CrankRecord(0, 5, 100, 200), CrankRecord(2, 7, 300, 400)]
        c = p.counters
        assert (c.lines_ok, c.lines_malformed, c.lines_too_long) == (3, 2, 1), chunk


def test_last_line_without_newline_is_judged_on_flush() -> None:
    p = LineParser()
    assert p.feed(encode_record(3, 1, 2, 3).rstrip(b"\n")) == []
    assert p.flush() == [CrankRecord(3, 1, 2, 3)]


RECORDS = st.builds(
    CrankRecord, st.integers(0, 255), st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535)
)


@given(
    st.lists(
        st.one_of(
            RECORDS, st.builds(Ident, st.from_regex(r"[A-Za-z0-9_.-]{1,16}", fullmatch=True), st.just(1))
        )
    ),
    st.integers(1, 50),
)
def test_encode_parse_round_trip(items: list[CrankRecord | Ident], chunk: int) -> None:
    data = b"".join(
        encode_record(i.seq, i.revs, i.event_time, i.sensor_time)
        if isinstance(i, CrankRecord)
        else encode_ident(i.device_id, i.version)
        for i in items
    )
    p = LineParser()
    assert feed_all(p, data, chunk) == items


@given(st.binary(max_size=400), st.integers(1, 80))
def test_fuzz_random_bytes_never_raise(data: bytes, chunk: int) -> None:
    p = LineParser()
    out = feed_all(p, data, chunk)
    assert all(isinstance(e, CrankRecord | Ident | UnknownLine | LineError) for e in out)


@given(st.binary(max_size=200))
def test_parse_line_raises_only_its_typed_error(data: bytes) -> None:
    with contextlib.suppress(LineProtocolError):
        parse_line(data)


@given(RECORDS, st.data())
def test_any_single_bit_flip_is_detected(rec: CrankRecord, data: st.DataObject) -> None:
    line = bytearray(encode_record(rec.seq, rec.revs, rec.event_time, rec.sensor_time).rstrip(b"\n"))
    pos = data.draw(st.integers(0, len(line) - 1))
    line[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        parsed = parse_line(bytes(line))
    except LineProtocolError:
        return
    # The only survivable flip is a case change of a hex CRC digit, which leaves the value intact.
    assert parsed == rec


def test_line_after_an_overlong_line_without_newline_survives() -> None:
    rec = encode_record(1, 2, 3, 4)
    for chunk in (1, 70, 100):
        p = LineParser()
        out = feed_all(p, b"z" * 100 + rec, chunk)
        assert out[-1] == CrankRecord(1, 2, 3, 4), chunk
        assert p.counters.lines_too_long == 1


@given(st.lists(RECORDS, min_size=1, max_size=5), st.binary(max_size=200), st.integers(1, 90))
def test_valid_line_after_garbage_is_never_lost(recs: list[CrankRecord], garbage: bytes, chunk: int) -> None:
    data = garbage + b"".join(encode_record(r.seq, r.revs, r.event_time, r.sensor_time) for r in recs)
    p = LineParser()
    out = feed_all(p, data, chunk)
    assert [e for e in out if isinstance(e, CrankRecord)][-len(recs) :] == recs


def test_max_line_constant_covers_the_longest_valid_line() -> None:
    assert len(encode_record(255, 65535, 65535, 65535).rstrip(b"\n")) <= MAX_LINE
