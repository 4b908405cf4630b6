"""The lab kit (`ridesync lab`) against the bench's devices, from pytest.

    RIDESYNC_HR=AA:BB:CC:DD:EE:01,AA:BB:CC:DD:EE:02 RIDESYNC_SERIAL=/dev/serial/by-id/usb-... \\
        .venv/bin/python -m pytest hw_tests/test_lab_kit.py -s
    RIDESYNC_HR=sim RIDESYNC_SERIAL=sim ...      (a dry run of every scenario on the simulator)

The same command as `ridesync lab`, with its options from the environment: RIDESYNC_HR (two straps;
`sim` means two simulated ones), RIDESYNC_ADAPTER, RIDESYNC_SERIAL, RIDESYNC_SERIAL_PROTOCOL
(peloton|line), RIDESYNC_SERIAL_MODE (poll|listen), RIDESYNC_SERIAL_BAUD, RIDESYNC_CALIBRATION,
RIDESYNC_LINE, RIDESYNC_LINE_RUN_MIN, RIDESYNC_LINE_UPTIME_MIN, RIDESYNC_LAB_ONLY, RIDESYNC_LAB_YES=1
(never wait for Enter). With -s, the prompts reach you and Enter works; the report is written under
RIDESYNC_REPORT_DIR (default artifacts/hw) and the test fails when a scenario failed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.cli.main import main

ENV = os.environ
HR = ENV.get("RIDESYNC_HR", "")
SERIAL = ENV.get("RIDESYNC_SERIAL", "")
LINE = ENV.get("RIDESYNC_LINE", "")
REPORT_DIR = Path(ENV.get("RIDESYNC_REPORT_DIR", "artifacts/hw"))

pytestmark = [
    pytest.mark.skipif(
        not (HR or SERIAL or LINE),
        reason="no device chosen: set RIDESYNC_HR=<addr1>,<addr2> and/or RIDESYNC_SERIAL=<port> "
        "(RIDESYNC_LINE=<port> for a DIY cadence sensor), or =sim for a dry run on the simulator",
    ),
    pytest.mark.slow,
]

OPTIONS = {
    "RIDESYNC_ADAPTER": "--adapter",
    "RIDESYNC_SERIAL_PROTOCOL": "--protocol",
    "RIDESYNC_SERIAL_MODE": "--mode",
    "RIDESYNC_SERIAL_BAUD": "--baud",
    "RIDESYNC_CALIBRATION": "--calibration",
    "RIDESYNC_LINE_RUN_MIN": "--line-run-min",
    "RIDESYNC_LINE_UPTIME_MIN": "--line-uptime-min",
    "RIDESYNC_LAB_ONLY": "--only",
}


def lab_argv(report: Path) -> list[str]:
    argv = ["lab", "--report", str(report)]
    if HR:
        argv += ["--hr", "sim:2" if HR == "sim" else HR]
    if SERIAL:
        argv += ["--serial", SERIAL]
    if LINE:
        argv += ["--line", LINE]
    for var, flag in OPTIONS.items():
        if ENV.get(var):
            argv += [flag, ENV[var]]
    if ENV.get("RIDESYNC_LAB_YES") == "1":
        argv.append("--yes")
    return argv


def test_lab_kit() -> None:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / "lab-kit.json"
    rc = main(lab_argv(path))
    report = json.loads(path.read_text())
    failed = {sid: s["reason"] for sid, s in report["scenarios"].items() if s["status"] == "failed"}
    print(f"\nlab report: {path}")
    assert failed == {}, f"scenarios failed: {failed}"
    assert rc == 0
