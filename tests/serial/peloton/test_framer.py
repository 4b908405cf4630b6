"""The Peloton framer: resynchronisation after garbage, truncation and bad checksums, and fuzzing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.peloton import (
    BadChecksum,
    Command,
    FramerEvent,
    MalformedFrame,
    PelotonFramer,
    ReplyFrame,
    RequestFrame,
    SkippedBytes,
    TruncatedFrame,
    encode_cadence,
    encode_power,
    encode_reply_payload,
    encode_request,
    encode_resistance,
)
from adapters.serial.peloton.synth import BikeSample, ride_frames

CAD = encode_cadence(80)
POW = encode_power(150)
REQ = encode_request(Command.CADENCE)


def run(*chunks: bytes) -> tuple[list[FramerEvent], PelotonFramer]:
    f = PelotonFramer()
    out: list[FramerEvent] = []
    for c in chunks:
        out += f.feed(c)
    out += f.flush()
    return out, f


def frames(events: list[FramerEvent]) -> list[bytes]:
    return [e.raw for e in events if isinstance(e, RequestFrame | ReplyFrame)]


def test_request_and_reply_frames() -> None:
    out, f = run(REQ + CAD)
    assert out == [RequestFrame(0xF5, 0x41, REQ), ReplyFrame(0x41, b"080", CAD)]
    assert (f.counters.requests_ok, f.counters.replies_ok, f.counters.bytes_skipped) == (1, 1, 0)


def test_frames_split_at_every_byte() -> None:
    data = REQ + CAD + POW
    f = PelotonFramer()
    out: list[FramerEvent] = []
    for i in range(len(data)):
        out += f.feed(data[i : i + 1])
    assert frames(out) == [REQ, CAD, POW]
    assert f.buffered == 0


def test_incomplete_frame_waits_for_more_bytes() -> None:
    f = PelotonFramer()
    assert f.feed(CAD[:5]) == []
    assert f.buffered == 5
    assert frames(f.feed(CAD[5:])) == [CAD]


def test_garbage_before_a_frame_is_skipped_as_one_event() -> None:
    out, f = run(b"\x00\x13\x37\xf6\x30" + CAD)
    assert out == [SkippedBytes(b"\x00\x13\x37\xf6\x30"), ReplyFrame(0x41, b"080", CAD)]
    assert f.counters.bytes_skipped == 5


def test_head_byte_with_impossible_length_is_garbage() -> None:
    out, f = run(b"\xf1\x41\xff" + CAD)
    assert out == [SkippedBytes(b"\xf1\x41\xff"), ReplyFrame(0x41, b"080", CAD)]
    assert f.counters.frames_truncated == 0


def test_truncated_reply_followed_by_a_frame() -> None:
    out, f = run(POW[:6] + REQ + CAD)
    assert out[0] == TruncatedFrame(POW[:6])
    assert frames(out) == [REQ, CAD]
    assert f.counters.frames_truncated == 1
    assert f.counters.bytes_skipped == 6


def test_truncated_request_followed_by_a_frame() -> None:
    out, _f = run(REQ[:2] + CAD)
    assert out == [TruncatedFrame(REQ[:2]), ReplyFrame(0x41, b"080", CAD)]


def test_truncated_frame_at_end_of_input_is_reported_on_flush() -> None:
    f = PelotonFramer()
    assert f.feed(CAD + POW[:4]) == [ReplyFrame(0x41, b"080", CAD)]
    assert f.flush() == [TruncatedFrame(POW[:4])]
    assert f.counters.frames_truncated == 1
    assert f.buffered == 0


def test_bad_checksum_is_reported_with_both_values() -> None:
    bad = bytearray(CAD)
    bad[4] ^= 0x01  # one flipped bit in the payload
    out, f = run(bytes(bad) + POW)
    assert out[0] == BadChecksum(bytes(bad), expected=(CAD[-2] + 1) % 256, actual=CAD[-2])
    assert frames(out) == [POW]
    assert f.counters.frames_bad_checksum == 1
    assert f.counters.bytes_skipped == len(CAD)


def test_missing_terminator_is_malformed() -> None:
    bad = bytearray(CAD)
    bad[-1] = 0x00
    out, f = run(bytes(bad) + POW)
    assert out[0] == MalformedFrame(bytes(bad))
    assert frames(out) == [POW]
    assert f.counters.frames_malformed == 1


def test_garbage_that_looks_like_a_frame_header_does_not_swallow_the_next_frame() -> None:
    # F1 41 02 + the request makes a 7-byte candidate with F6 in terminator position: still not a frame.
    out, f = run(b"\xf1\x41\x02" + REQ + CAD)
    assert frames(out) == [REQ, CAD]
    assert f.counters.frames_truncated == 1


def test_verdicts_do_not_depend_on_chunking() -> None:
    # The F1 at the end of the first chunk might start a frame; the framer must wait, not guess.
    data = REQ[:3] + b"\xf1\x41\xff" + CAD
    whole, f1 = run(data)
    split, f2 = run(data[:4], data[4:])
    assert whole == split
    assert f1.counters == f2.counters


def _accounted(f: PelotonFramer, frame_bytes: int) -> bool:
    c = f.counters
    return c.bytes_total == frame_bytes + c.bytes_skipped + f.buffered


@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=20))
def test_fuzz_random_bytes_never_raise_and_every_byte_is_accounted(data: bytes, cuts: list[int]) -> None:
    f = PelotonFramer()
    out: list[FramerEvent] = []
    pos = 0
    for n in cuts:
        out += f.feed(data[pos : pos + n])
        pos += n
    out += f.feed(data[pos:])
    out += f.flush()
    assert f.buffered == 0
    assert _accounted(f, sum(len(raw) for raw in frames(out)))
    assert f.counters.frames_ok == len(frames(out))


VALID = st.sampled_from(
    [REQ, CAD, POW, encode_resistance(612), encode_request(0x07, head=0xF7), encode_reply_payload(0xFB, b"1")]
)


@given(st.binary(max_size=64), st.lists(VALID, min_size=1, max_size=6), st.integers(1, 64))
def test_valid_frames_after_garbage_are_never_lost(garbage: bytes, good: list[bytes], chunk: int) -> None:
    data = garbage + b"".join(good)
    f = PelotonFramer()
    out: list[FramerEvent] = []
    for i in range(0, len(data), chunk):
        out += f.feed(data[i : i + chunk])
    out += f.flush()
    assert frames(out)[-len(good) :] == good


@st.composite
def mutated_stream(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A valid conversation with some frames mutated (bit flips, cuts, insertions, deletions).

    Returns the bytes and the frames left untouched, which must all come out of the framer.
    """
    samples = [BikeSample(draw(st.integers(0, 999)), draw(st.integers(0, 9999)) / 10, 500) for _ in range(3)]
    all_frames = list(ride_frames(samples, table=None))
    out = bytearray()
    untouched: list[bytes] = []
    for frame in all_frames:
        op = draw(st.sampled_from(["keep", "keep", "keep", "flip", "cut", "insert", "delete"]))
        if op == "keep":
            out += frame
            untouched.append(frame)
            continue
        b = bytearray(frame)
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=4))
        else:
            del b[i]
        out += b
    return bytes(out), untouched


@given(mutated_stream())
def test_fuzz_mutated_frames_lose_only_the_mutated_ones(case: tuple[bytes, list[bytes]]) -> None:
    data, untouched = case
    out, f = run(data)
    got = frames(out)
    # Every untouched frame comes out, in order (a mutation may by chance still be a valid frame).
    it = iter(got)
    assert all(any(g == u for g in it) for u in untouched)
    assert _accounted(f, sum(len(g) for g in got))
