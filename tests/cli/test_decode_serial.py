"""`ridesync decode peloton` and `ridesync decode line`: JSON lines out, JSON errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.serial.line_protocol import encode_ident, encode_record
from adapters.serial.peloton import encode_reply_payload
from adapters.serial.peloton.synth import BikeSample, ride_frames
from engine.cli.main import main

RIDESYNC = Path(sys.executable).parent / "ridesync"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, [json.loads(line) for line in captured.out.splitlines()], captured.err


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    samples = [BikeSample(85, 201.5, 600), BikeSample(90, 250.0, 700)]
    data = b"\x00\x01garbage" + b"".join(ride_frames(samples)) + encode_reply_payload(0x55, b"1")
    data += b"\xf1\x41\x03\x30"  # truncated at the end
    path = tmp_path / "bus.bin"
    path.write_bytes(data)
    return path


def test_decode_peloton_prints_values_and_summary(capsys: pytest.CaptureFixture[str], capture: Path) -> None:
    rc, lines, _ = run_cli(capsys, "decode", "peloton", str(capture))
    assert rc == 0
    calibration = [x for x in lines if x.get("kind") == "calibration"]
    assert len(calibration) == 31
    values = [x for x in lines if x.get("kind") in ("cadence", "power", "resistance")]
    assert values == [
        {"kind": "cadence", "value": 85, "unit": "rpm"},
        {"kind": "power", "value": 201.5, "unit": "W"},
        {"kind": "resistance", "value": 600, "unit": "raw", "pct": 29.41},  # 100/30 * (8 + 42/51),
        {"kind": "cadence", "value": 90, "unit": "rpm"},
        {"kind": "power", "value": 250.0, "unit": "W"},
        {"kind": "resistance", "value": 700, "unit": "raw", "pct": 37.78},  # 100/30 * (11 + 13/39),
    ]
    assert {"kind": "unknown_reply", "command": "0x55", "payload": "31"} in lines
    summary = lines[-1]["summary"]
    assert summary["frames_ok"] == 62 + 12 + 1
    assert summary["bytes_skipped"] == 9 + 4
    assert summary["frames_truncated"] == 1
    assert summary["replies_unknown"] == 1
    assert summary["frames_bad_checksum"] == 0


def test_decode_peloton_errors_flag_lists_discards(capsys: pytest.CaptureFixture[str], capture: Path) -> None:
    _, lines, _ = run_cli(capsys, "decode", "peloton", "--errors", str(capture))
    discards = [x for x in lines if x.get("kind") == "discard"]
    assert discards == [
        {"kind": "discard", "reason": "garbage", "raw": b"\x00\x01garbage".hex()},
        {"kind": "discard", "reason": "truncated", "raw": "f1410330"},
    ]


def test_decode_peloton_with_no_frame_at_all_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(b"\x00" * 100)
    rc, lines, _ = run_cli(capsys, "decode", "peloton", str(path))
    assert rc == 1
    assert lines == [{"summary": lines[-1]["summary"]}]
    assert lines[-1]["summary"]["bytes_skipped"] == 100


def test_empty_capture_is_not_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    rc, lines, _ = run_cli(capsys, "decode", "peloton", str(path))
    assert rc == 0
    assert lines[-1]["summary"]["bytes_total"] == 0


@pytest.mark.parametrize("protocol", ["peloton", "line"])
def test_unreadable_file_is_a_json_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, protocol: str
) -> None:
    for path in (tmp_path / "missing.bin", tmp_path):
        rc, lines, err = run_cli(capsys, "decode", protocol, str(path))
        assert rc == 2
        assert lines == []
        error = json.loads(err)
        assert "cannot read" in error["error"]


def test_decode_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = encode_ident("reed-01") + b"noise\n"
    for i in range(4):  # 60 rpm: a crank event every 1024 ticks
        data += encode_record(i, i, i * 1024, i * 1024 + 10)
    data += b"$C,9,9,9,9*0000\n"  # bad checksum
    path = tmp_path / "line.txt"
    path.write_bytes(data)
    rc, lines, _ = run_cli(capsys, "decode", "line", str(path))
    assert rc == 0
    assert lines[0] == {"kind": "device", "device_id": "reed-01", "version": 1}
    cadence = [x for x in lines if x.get("kind") == "cadence"]
    assert [x["value"] for x in cadence] == [60.0, 60.0, 60.0]
    assert cadence[0] == {
        "kind": "cadence",
        "value": 60.0,
        "unit": "rpm",
        "stopped": False,
        "held": False,
        "revs": 1,
        "seq": 1,
    }
    summary = lines[-1]["summary"]
    assert (summary["lines_ok"], summary["lines_malformed"], summary["lines_bad_checksum"]) == (5, 1, 1)


def test_decode_line_from_stdin_via_console_script(tmp_path: Path) -> None:
    data = b"".join(encode_record(i, i * 2, i * 1024, i * 1024) for i in range(3))
    proc = subprocess.run(
        [str(RIDESYNC), "decode", "line", "-"], input=data, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["value"] for x in lines if x.get("kind") == "cadence"] == [120.0, 120.0]


def test_console_script_decode_peloton(capture: Path) -> None:
    proc = subprocess.run(
        [str(RIDESYNC), "decode", "peloton", str(capture)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert lines[-1]["summary"]["frames_ok"] == 75
    missing = subprocess.run(
        [str(RIDESYNC), "decode", "peloton", str(capture) + ".nope"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert b"Traceback" not in missing.stderr
    assert "cannot read" in json.loads(missing.stderr)["error"]
