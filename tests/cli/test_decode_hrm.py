"""`ridesync decode hrm`: JSON lines out, errors as JSON, exit status 1 on any invalid payload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]]]:
    rc = main(["decode", "hrm", *args])
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines()]


def test_design_examples(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = run(capsys, "00 48", "16 41 b1 03", "1f2c01d204c800cd00")
    assert rc == 0
    assert [(d["hr"], d["contact"], d["energy_kj"], d["rr_s"]) for d in lines] == [
        (72, "unsupported", None, []),
        (65, "detected", None, [945 / 1024]),
        (300, "detected", 1234, [200 / 1024, 205 / 1024]),
    ]


def test_invalid_payloads_are_json_errors_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = run(capsys, "0048", "10 48", "not-hex!")
    assert rc == 1
    assert lines[0]["hr"] == 72
    assert lines[1]["field"] == "rr_interval" and lines[1]["input"] == "1048"
    assert lines[2] == {"error": "not hexadecimal", "input": "not-hex!"}


def test_damaged_payloads_stay_errors_naming_the_defect_and_the_heart_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The live source keeps these readings; the offline decoder stays strict but says what it read."""
    rc, lines = run(capsys, "10 48", "16 41 b1 03 07", "01")
    assert rc == 1
    assert [(d["field"], d.get("hr")) for d in lines] == [
        ("rr_interval", 72),
        ("rr_interval", 65),
        ("heart_rate", None),
    ]
    assert str(lines[0]["error"]).endswith("no RR interval follows (payload 10 48); heart rate read: 72 bpm")
    assert "not a whole number of uint16 intervals" in str(lines[1]["error"])


def test_console_script_reads_stdin() -> None:
    exe = Path(sys.executable).with_name("ridesync")
    proc = subprocess.run(
        [str(exe), "decode", "hrm"],
        input="0048\n\n1641b103\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["hr"] for x in proc.stdout.splitlines()] == [72, 65]
    assert proc.stderr == ""
