"""Heart Rate Measurement decode throughput, next to a floor that does no validation at all.

The floor reads only the heart-rate field with `int.from_bytes`, which is the least any consumer could
do; the ratio shows what the full, validating parse (contact, energy, RR, error reporting) costs.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from adapters.ble.hrm import encode_hrm, parse_hrm
from engine.bench._timing import best_rate
from engine.readings import Contact

NAME = "hrm"
HELP = "Heart Rate Measurement parser throughput (payloads/s, bytes/s) beside an unvalidated floor"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--payloads", type=int, default=200_000, help="payloads per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the fastest is reported")


def _corpus(n: int) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for _ in range(n):
        out.append(
            encode_hrm(
                rng.randint(40, 220),
                contact=rng.choice(list(Contact)),
                energy_kj=rng.choice([None, rng.randint(0, 5000)]),
                rr_raw=[rng.randint(250, 1500) for _ in range(rng.randint(0, 3))],
            )
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    corpus = _corpus(args.payloads)
    total_bytes = sum(map(len, corpus))

    def full() -> int:
        for p in corpus:
            parse_hrm(p)
        return len(corpus)

    def floor() -> int:
        for p in corpus:
            int.from_bytes(p[1:3], "little") if p[0] & 1 else p[1]
        return len(corpus)

    full_rate, full_s = best_rate(full, args.repeats)
    floor_rate, floor_s = best_rate(floor, args.repeats)
    mean_len = total_bytes / len(corpus)
    return {
        "payloads": len(corpus),
        "mean_payload_bytes": round(mean_len, 2),
        "parse_hrm": {"payloads_per_s": round(full_rate), "bytes_per_s": round(full_rate * mean_len)},
        "baseline_hr_field_only": {
            "payloads_per_s": round(floor_rate),
            "bytes_per_s": round(floor_rate * mean_len),
        },
        "ratio_parse_to_baseline_time": round(full_s / floor_s, 2),
    }
