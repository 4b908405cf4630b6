"""Decode throughput of the serial parsers, each next to a naive baseline decoding the same bytes.

- Peloton: our framer + decoder against a per-byte state machine (what a first microcontroller-style
  port looks like), both on a generated ride capture with 2% of the replies corrupted.
- Line protocol: our streaming parser + cadence calculator against split-on-newline + per-line parse.
Both baselines are checked to find the same number of values, so the ratio compares equal work.
"""

from __future__ import annotations

import argparse
import binascii
import random
from typing import Any

from engine.bench._timing import best_rate

NAME = "parsers-serial"
HELP = "decode throughput of the Peloton framer and the DIY line parser, with naive baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=int, default=600, help="simulated ride length to decode (default 600)"
    )
    parser.add_argument("--repeats", type=int, default=5)


def _peloton_capture(seconds: int) -> tuple[bytes, int]:
    from adapters.serial.peloton.synth import BikeSample, ride_frames

    rng = random.Random(1)
    # The head unit polls one command every 100 ms: a cycle of three every 300 ms.
    samples = [
        BikeSample(rng.randint(60, 110), rng.randint(500, 3000) / 10, 600) for _ in range(seconds * 10 // 3)
    ]
    out = bytearray()
    frames = 0
    for frame in ride_frames(samples):
        if frame[0] == 0xF1 and rng.random() < 0.02:
            b = bytearray(frame)
            b[3] ^= 0x01
            out += b
            continue
        out += frame
        frames += 1
    return bytes(out), frames


def _naive_peloton(data: bytes) -> int:
    """Per-byte state machine: the obvious port of PeloMon-style C to Python."""
    values = 0
    state = 0
    frame = bytearray()
    need = 0
    for b in data:
        if state == 0:
            if b in (0xF5, 0xF7, 0xFE):
                frame = bytearray((b,))
                need = 4
                state = 2
            elif b == 0xF1:
                frame = bytearray((b,))
                state = 1
            continue
        frame.append(b)
        if state == 1 and len(frame) == 3:
            need = frame[2] + 5
            state = 2
        if state == 2 and len(frame) == need:
            state = 0
            ok = frame[-1] == 0xF6 and sum(frame[:-2]) & 0xFF == frame[-2]
            if ok and frame[0] == 0xF1 and frame[1] in (0x41, 0x44, 0x4A) and frame[3:-2].isdigit():
                int(bytes(frame[3:-2])[::-1])
                values += 1
    return values


def _peloton(data: bytes, chunk: int) -> int:
    from adapters.serial.peloton import Cadence, PelotonParser, Power, Resistance

    p = PelotonParser()
    values = 0
    for i in range(0, len(data), chunk):
        for ev in p.feed(data[i : i + chunk]):
            if isinstance(ev, Cadence | Power | Resistance):
                values += 1
    return values


def _line_capture(seconds: int) -> bytes:
    from adapters.serial.line_protocol import encode_record

    out = bytearray()
    for s in range(seconds * 4):  # a record every 250 ms
        revs = s * 90 // 240
        out += encode_record(s % 256, revs % 65536, (revs * 60 * 1024 // 90) % 65536, (s * 256) % 65536)
    return bytes(out)


def _naive_line(data: bytes) -> int:
    n = 0
    for line in data.split(b"\n"):
        if not line.startswith(b"$") or b"*" not in line:
            continue
        body, _, crc = line[1:].partition(b"*")
        if int(crc, 16) != binascii.crc_hqx(body, 0):
            continue
        fields = body.split(b",")
        if fields[0] == b"C" and len(fields) == 5:
            [int(f) for f in fields[1:]]
            n += 1
    return n


def _line(data: bytes, chunk: int) -> int:
    from adapters.serial.cadence import CrankCadence
    from adapters.serial.line_protocol import CrankRecord, LineParser

    p = LineParser()
    cad = CrankCadence()
    n = 0
    for i in range(0, len(data), chunk):
        for ev in p.feed(data[i : i + chunk]):
            if isinstance(ev, CrankRecord):
                cad.on_record(ev)
                n += 1
    return n


def _measure(fn: Any, data: bytes, repeats: int) -> dict[str, float]:
    units = fn(data)
    rate, best_s = best_rate(lambda: fn(data), repeats)
    return {"bytes_per_s": round(len(data) / best_s), "values_per_s": round(rate), "values": units}


def run(args: argparse.Namespace) -> dict[str, Any]:
    peloton_data, _ = _peloton_capture(args.seconds)
    line_data = _line_capture(args.seconds)
    # 4096-byte reads are what the serial adapters get from a busy port; whole-file is the decode CLI.
    results: dict[str, Any] = {"capture_bytes": {"peloton": len(peloton_data), "line": len(line_data)}}
    base_p = _measure(_naive_peloton, peloton_data, args.repeats)
    ours_p = _measure(lambda d: _peloton(d, 4096), peloton_data, args.repeats)
    ours_p_small = _measure(lambda d: _peloton(d, 16), peloton_data, args.repeats)
    if not base_p["values"] == ours_p["values"] == ours_p_small["values"]:
        raise RuntimeError(f"peloton decoders disagree: {base_p['values']} vs {ours_p['values']}")
    base_l = _measure(_naive_line, line_data, args.repeats)
    ours_l = _measure(lambda d: _line(d, 4096), line_data, args.repeats)
    ours_l_small = _measure(lambda d: _line(d, 16), line_data, args.repeats)
    if not base_l["values"] == ours_l["values"] == ours_l_small["values"]:
        raise RuntimeError(f"line decoders disagree: {base_l['values']} vs {ours_l['values']}")
    results["peloton"] = {
        "framer_4k_reads": ours_p,
        "framer_16b_reads": ours_p_small,
        "baseline_per_byte_state_machine": base_p,
        "ratio_vs_baseline": round(ours_p["bytes_per_s"] / base_p["bytes_per_s"], 2),
    }
    results["line"] = {
        "parser_and_cadence_4k_reads": ours_l,
        "parser_and_cadence_16b_reads": ours_l_small,
        "baseline_split_lines": base_l,
        "ratio_vs_baseline": round(ours_l["bytes_per_s"] / base_l["bytes_per_s"], 2),
    }
    # Real buses for scale: Peloton at 19200 baud is <= 1920 bytes/s per line.
    results["peloton"]["headroom_vs_19200_baud_line"] = round(ours_p_small["bytes_per_s"] / 1920)
    return results
