"""`ridesync decode ftms|cps|csc`: one JSON line per payload with exactly the documented keys (null when
absent), errors as JSON naming the field, exit status 1 on any invalid payload, stdin when no argument."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main

FTMS_KEYS = [
    "speed_kmh",
    "avg_speed_kmh",
    "cadence_rpm",
    "avg_cadence_rpm",
    "distance_m",
    "resistance",
    "power_w",
    "avg_power_w",
    "energy_kcal",
    "energy_kcal_per_h",
    "energy_kcal_per_min",
    "hr",
    "met",
    "elapsed_s",
    "remaining_s",
]
CPS_KEYS = [
    "power_w",
    "balance_pct",
    "torque_nm",
    "wheel_revs",
    "wheel_time_s",
    "crank_revs",
    "crank_time_s",
    "energy_kj",
]
CSC_KEYS = ["wheel_revs", "wheel_time_s", "crank_revs", "crank_time_s"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]]]:
    rc = main(["decode", *args])
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines()]


def test_ftms_every_field_and_none(capsys: pytest.CaptureFixture[str]) -> None:
    full = "fe1f34123930a2009c000102030580ff7f0080e80310270fb40affff0000"
    rc, lines = run(capsys, "ftms", full, "01 00", "4402:a00f:6e00:9600:78")
    assert rc == 0
    assert [list(d) for d in lines] == [FTMS_KEYS] * 3
    assert lines[0] == {
        "speed_kmh": 46.6,
        "avg_speed_kmh": 123.45,
        "cadence_rpm": 81.0,
        "avg_cadence_rpm": 78.0,
        "distance_m": 0x030201,
        "resistance": -32763,
        "power_w": 32767,
        "avg_power_w": -32768,
        "energy_kcal": 1000,
        "energy_kcal_per_h": 10000,
        "energy_kcal_per_min": 15,
        "hr": 180,
        "met": 1.0,
        "elapsed_s": 65535,
        "remaining_s": 0,
    }
    assert lines[1] == dict.fromkeys(FTMS_KEYS)
    assert {k: v for k, v in lines[2].items() if v is not None} == {
        "speed_kmh": 40.0,
        "cadence_rpm": 55.0,
        "power_w": 150,
        "hr": 120,
    }


def test_ftms_energy_not_available_is_null(capsys: pytest.CaptureFixture[str]) -> None:
    rc, [line] = run(capsys, "ftms", "0101 2c01 ffff ff")
    assert rc == 0
    assert (line["energy_kcal"], line["energy_kcal_per_h"], line["energy_kcal_per_min"]) == (300, None, None)


def test_cps(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = run(capsys, "cps", "3508 2c01 65 2100 01000000 0004 0300 0008 e803", "0000 9cff")
    assert rc == 0
    assert [list(d) for d in lines] == [CPS_KEYS] * 2
    assert lines[0] == {
        "power_w": 300,
        "balance_pct": 50.5,
        "torque_nm": 33 / 32,
        "wheel_revs": 1,
        "wheel_time_s": 0.5,
        "crank_revs": 3,
        "crank_time_s": 2.0,
        "energy_kj": 1000,
    }
    assert lines[1] == {**dict.fromkeys(CPS_KEYS), "power_w": -100}


def test_csc(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = run(capsys, "csc", "03 05000000 0006 0700 0002", "02 2c01 0008", "00")
    assert rc == 0
    assert [list(d) for d in lines] == [CSC_KEYS] * 3
    assert lines[0] == {"wheel_revs": 5, "wheel_time_s": 1.5, "crank_revs": 7, "crank_time_s": 0.5}
    assert lines[1] == {"wheel_revs": None, "wheel_time_s": None, "crank_revs": 300, "crank_time_s": 2.0}
    assert lines[2] == dict.fromkeys(CSC_KEYS)


@pytest.mark.parametrize(
    ("profile", "payloads", "fields"),
    [
        ("ftms", ["0120", "0102", "010000"], ["flags", "heart_rate", "length"]),
        ("cps", ["c000fa00", "0000", "0000fa0000"], ["flags", "instantaneous_power", "length"]),
        ("csc", ["04", "01e8030000", "0000"], ["flags", "last_wheel_event_time", "length"]),
    ],
)
def test_invalid_payloads_are_json_errors_and_exit_1(
    capsys: pytest.CaptureFixture[str], profile: str, payloads: list[str], fields: list[str]
) -> None:
    rc, lines = run(capsys, profile, *payloads, "not-hex!")
    assert rc == 1
    assert [d.get("field") for d in lines] == [*fields, None]
    assert [d.get("input") for d in lines] == [*payloads, "not-hex!"]
    assert all(str(d["error"]) for d in lines)
    assert lines[-1] == {"error": "not hexadecimal", "input": "not-hex!"}


def test_one_bad_payload_does_not_stop_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = run(capsys, "csc", "04", "00")
    assert rc == 1
    assert lines[0]["field"] == "flags" and lines[1] == dict.fromkeys(CSC_KEYS)


def test_console_script_reads_stdin() -> None:
    exe = Path(sys.executable).with_name("ridesync")
    proc = subprocess.run(
        [str(exe), "decode", "cps"],
        input="0000fa00\n\n2000 fa00 0a00 0004\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["power_w"] for x in proc.stdout.splitlines()] == [250, 250]
    assert proc.stderr == ""
