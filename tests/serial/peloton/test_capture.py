"""A generated bus capture with garbage, truncated frames, flipped bits, dropped frames and unknown replies
injected: it must decode to exactly the right values and counts, however it is chunked."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.peloton import (
    Cadence,
    CalibrationComplete,
    CalibrationTable,
    Command,
    PelotonParser,
    Power,
    Resistance,
    encode_reply_payload,
)
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION, BikeSample, calibration_exchange, poll_exchange

HEADS = {0xF1, 0xF5, 0xF7, 0xFE}
NOT_HEAD = [b for b in range(256) if b not in HEADS]


@dataclass
class Capture:
    data: bytearray = field(default_factory=bytearray)
    values: list[object] = field(default_factory=list)
    frames_ok: int = 0
    garbage: int = 0
    truncated: int = 0
    bad_checksum: int = 0
    unknown: int = 0
    skipped_bytes: int = 0


def build_capture(seed: int, cycles: int = 300) -> Capture:
    rng = random.Random(seed)
    cap = Capture()
    for frame in calibration_exchange():
        cap.data += frame
        cap.frames_ok += 1
    table = CalibrationTable(DEFAULT_CALIBRATION)
    cap.values.append(CalibrationComplete(table))
    for _ in range(cycles):
        sample = BikeSample(rng.randint(0, 130), rng.randint(0, 15000) / 10, rng.randint(100, 1000))
        frames = list(poll_exchange(sample))
        expected = [Cadence(sample.cadence), Power(sample.power_w, round(sample.power_w * 10))]
        expected.append(Resistance(sample.resistance_raw, table.percent(sample.resistance_raw)))
        fault = rng.choices(["none", "garbage", "truncate", "flip", "drop", "unknown"], [60, 8, 8, 8, 8, 8])[
            0
        ]
        # Faults hit the reply of one command in the cycle; the frames around it stay intact.
        victim = rng.randrange(3)
        for i, frame in enumerate(frames):
            is_victim_reply = i == 2 * victim + 1
            if not is_victim_reply or fault in ("none", "garbage", "unknown"):
                cap.data += frame
                cap.frames_ok += 1
                if i % 2 == 1:
                    cap.values.append(expected[i // 2])
                if is_victim_reply and fault == "garbage":
                    junk = bytes(rng.choice(NOT_HEAD) for _ in range(rng.randint(1, 20)))
                    cap.data += junk
                    cap.garbage += 1
                    cap.skipped_bytes += len(junk)
                if is_victim_reply and fault == "unknown":
                    cap.data += encode_reply_payload(0x55, b"42")
                    cap.frames_ok += 1
                    cap.unknown += 1
                continue
            if fault == "truncate":
                cut = frame[: rng.randint(3, len(frame) - 1)]
                cap.data += cut
                cap.truncated += 1
                cap.skipped_bytes += len(cut)
            elif fault == "flip":
                b = bytearray(frame)
                pos = rng.choice([1, *range(3, len(b) - 1)])  # command, payload or checksum byte
                b[pos] ^= 1 << rng.randrange(8)
                cap.data += b
                cap.bad_checksum += 1
                cap.skipped_bytes += len(b)
            # "drop": the reply never made it onto the wire
    return cap


def decoded_values(events: list[object]) -> list[object]:
    return [e for e in events if isinstance(e, Cadence | Power | Resistance | CalibrationComplete)]


def check(cap: Capture, chunks: list[bytes]) -> None:
    p = PelotonParser()
    events: list[object] = []
    for c in chunks:
        events += p.feed(c)
    events += p.flush()
    s = p.summary()
    assert decoded_values(events) == cap.values
    assert s["frames_ok"] == cap.frames_ok
    assert s["frames_truncated"] == cap.truncated
    assert s["frames_bad_checksum"] == cap.bad_checksum
    assert s["frames_malformed"] == 0
    assert s["replies_unknown"] == cap.unknown
    assert s["bytes_skipped"] == cap.skipped_bytes
    assert s["bytes_total"] == len(cap.data)


def test_generated_capture_decodes_with_exact_counts() -> None:
    cap = build_capture(seed=7)
    # The mix really contains every fault, many times over.
    assert min(cap.garbage, cap.truncated, cap.bad_checksum, cap.unknown) >= 10
    check(cap, [bytes(cap.data)])


@given(st.integers(0, 2**32 - 1), st.integers(1, 97))
def test_generated_capture_counts_hold_for_any_seed_and_chunking(seed: int, chunk: int) -> None:
    cap = build_capture(seed, cycles=40)
    data = bytes(cap.data)
    check(cap, [data[i : i + chunk] for i in range(0, len(data), chunk)])


def test_command_enum_matches_poll_order() -> None:
    assert [f[1] for f in list(poll_exchange(BikeSample(1, 1, 1)))[::2]] == [
        Command.CADENCE,
        Command.POWER,
        Command.RESISTANCE,
    ]
