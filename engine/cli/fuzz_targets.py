"""The adapters' parsers as fuzz targets for `ridesync campaign fuzz` (the composition root wires adapters
in; engine/campaign never imports them), and the atheris entry point the long fuzz campaign runs, one
process per target: `python -m engine.cli.fuzz_targets TARGET RUNS SEED CORPUS_DIR`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.campaign.fuzz import ENGINE_TARGETS, FuzzTarget


def _hrm_parse(data: bytes) -> object:
    from adapters.ble.hrm import parse_hrm

    return parse_hrm(data)


def _peloton_parse(data: bytes) -> object:
    from adapters.serial.peloton.parser import PelotonParser

    parser = PelotonParser()
    half = len(data) // 2
    return parser.feed(data[:half]) + parser.feed(data[half:]) + parser.flush()


def _line_parse(data: bytes) -> object:
    from adapters.serial.line_protocol import LineParser, parse_line

    events = LineParser().feed(data)
    first = data.split(b"\n", 1)[0]
    return events, parse_line(first)


def _canonical(parse: Callable[[bytes], Any], encode: Callable[[Any], bytes]) -> Callable[[bytes], object]:
    """A fitness-profile parser as a target: whatever it accepts must re-encode to the same bytes (these
    layouts have exactly one encoding per value), else that is a finding too."""

    def target(data: bytes) -> object:
        m = parse(data)
        if encode(m) != data:
            raise AssertionError(f"decoded {m!r} re-encodes differently")
        return m

    return target


def _fitness_targets() -> tuple[FuzzTarget, ...]:
    from adapters.ble import cps, csc, ftms
    from adapters.ble.gatt_fields import FitnessPayloadError

    ftms_seeds = (
        bytes.fromhex("4402a00f6e00960078"),
        bytes.fromhex("fe1f34123930a2009c000102030580ff7f0080e80310270fb40affff0000"),
        bytes.fromhex("0101ffffffffff"),
    )
    cps_seeds = (
        bytes.fromhex("2000fa000a000004"),
        bytes.fromhex("7f0f9cffc8ffffffffffffffffffff01000080ff7f6810015a000e013412"),
        bytes.fromhex("35082c0165210001000000000403000008e803"),
    )
    csc_seeds = (bytes.fromhex("030a000000000405000008"), bytes.fromhex("022c010008"))
    return (
        FuzzTarget("ble-ftms", _canonical(ftms.parse_indoor_bike_data, ftms.encode_indoor_bike_data),
                   (FitnessPayloadError,), ftms_seeds),
        FuzzTarget("ble-cps", _canonical(cps.parse_cps, cps.encode_cps), (FitnessPayloadError,), cps_seeds),
        FuzzTarget("ble-csc", _canonical(csc.parse_csc, csc.encode_csc), (FitnessPayloadError,), csc_seeds),
    )  # fmt: skip


def adapter_targets() -> tuple[FuzzTarget, ...]:
    from adapters.ble.hrm import HrmError, encode_hrm
    from adapters.serial.line_protocol import LineProtocolError, encode_ident, encode_record
    from adapters.serial.peloton.synth import BikeSample, ride_frames

    hrm_seeds = (
        encode_hrm(65, rr_raw=(945,)),
        encode_hrm(300, energy_kj=1234, rr_raw=(200, 205)),
        bytes.fromhex("1641b103"),
        bytes.fromhex("1f2c01d204c800cd00"),
    )
    bike = [BikeSample(cadence=80 + i, power_w=150.0 + i, resistance_raw=300 + i) for i in range(3)]
    peloton_seeds = (b"".join(ride_frames(bike)), b"".join(ride_frames(bike[:1], table=None)))
    line_seeds = (
        encode_ident("diy-1") + encode_record(1, 10, 1024, 2048) + encode_record(2, 11, 2048, 3072),
        encode_record(255, 65535, 65535, 65535),
    )
    return (
        FuzzTarget("ble-hrm", _hrm_parse, (HrmError,), hrm_seeds),
        FuzzTarget("serial-peloton-framer", _peloton_parse, (), peloton_seeds),
        # The streaming LineParser reports bad lines as events; parse_line raises its own error.
        FuzzTarget("serial-line-protocol", _line_parse, (LineProtocolError,), line_seeds),
        *_fitness_targets(),
    )


def _atheris_main(name: str, runs: int, seed: int, corpus: Path) -> None:
    import atheris

    targets = {t.name: t for t in (*adapter_targets(), *ENGINE_TARGETS)}
    target = targets[name]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(*target.allowed):
            target.parse(data)

    # The seeds start the corpus; libFuzzer adds what finds new coverage to the same dir (the caller's,
    # removed by the caller: libFuzzer ends this process with exit(), past any cleanup here).
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(target.seeds):
        (corpus / f"seed-{i}").write_bytes(data)
    flags = [f"-runs={runs}", f"-seed={seed or 1}", "-max_len=4096", "-print_final_stats=1"]
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *flags, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
