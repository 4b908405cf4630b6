"""Lab test against a real serial sensor: a Peloton bike bus (listen or poll) or a DIY cadence sensor.

    RIDESYNC_SERIAL=/dev/ttyUSB0 .venv/bin/python -m pytest hw_tests/test_serial_hw.py -s
    RIDESYNC_SERIAL=/dev/ttyUSB0,/dev/ttyUSB1 ...    (listen mode, one port per line of the bus)
    RIDESYNC_SERIAL=sim ...                          (dry run of this procedure on the pty simulator)

RIDESYNC_SERIAL_MODE: listen (default: tap a bike with its tablet attached, sends nothing) or poll (no
tablet: ridesync is the head unit). RIDESYNC_SERIAL_PROTOCOL: peloton (default) or line.
Optional: RIDESYNC_SERIAL_SECONDS (default 30), RIDESYNC_REPORT_DIR (default artifacts/hw),
RIDESYNC_SERIAL_BAUD (default: 19200 Peloton, 115200 line sensor; for a simulated sensor its speed too),
RIDESYNC_CALIBRATION (a table file), RIDESYNC_BIKE_ID (the key its table is stored under in
RIDESYNC_DATA, default ./ridesync-data), RIDESYNC_SERIAL_TABLET_BOOTS=1 (simulated tap: the tablet boots).
Pedal during the run. It uses the product's own path (`open_serial_sources`) and prints a lab report
(frames ok/bad, rates, value ranges), also written as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.serial.factory import open_serial_sources
from adapters.serial.port_source import PortSource
from engine.readings import Kind, Reading, SourceEvent

PORT = os.environ.get("RIDESYNC_SERIAL", "")
MODE = os.environ.get("RIDESYNC_SERIAL_MODE", "listen")
PROTOCOL = os.environ.get("RIDESYNC_SERIAL_PROTOCOL", "peloton")
SECONDS = float(os.environ.get("RIDESYNC_SERIAL_SECONDS", "30"))
REPORT_DIR = Path(os.environ.get("RIDESYNC_REPORT_DIR", "artifacts/hw"))
BAUD = int(os.environ["RIDESYNC_SERIAL_BAUD"]) if os.environ.get("RIDESYNC_SERIAL_BAUD") else None
CALIBRATION = os.environ.get("RIDESYNC_CALIBRATION") or None
BIKE_ID = os.environ.get("RIDESYNC_BIKE_ID") or None
TABLET_BOOTS = os.environ.get("RIDESYNC_SERIAL_TABLET_BOOTS", "") == "1"

pytestmark = [
    pytest.mark.skipif(
        not PORT,
        reason="no serial port chosen: set RIDESYNC_SERIAL=/dev/ttyUSB0 (two ports comma-separated for a "
        "listen tap), RIDESYNC_SERIAL_MODE=listen|poll, RIDESYNC_SERIAL_PROTOCOL=peloton|line; "
        "or RIDESYNC_SERIAL=sim for a dry run on the simulator",
    ),
    pytest.mark.slow,
]

PLAUSIBLE = {Kind.CADENCE: (0.0, 250.0), Kind.POWER: (0.0, 3000.0), Kind.RESISTANCE: (0.0, 9999.0)}


async def _stream_for(source: PortSource, seconds: float) -> tuple[list[Reading], list[SourceEvent]]:
    readings: list[Reading] = []
    events: list[SourceEvent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with aclosing(source.stream()) as stream:
        try:
            async with asyncio.timeout(seconds):
                async for item in stream:
                    if isinstance(item, Reading):
                        readings.append(item)
                    else:
                        events.append(item)
                        print(f"  state {item.state.value} {item.detail}")
        except TimeoutError:
            pass
    assert loop.time() >= deadline - 0.5
    return readings, events


def _report(
    source: PortSource, readings: list[Reading], events: list[SourceEvent], seconds: float
) -> dict[str, Any]:
    per_kind: dict[str, Any] = {}
    for kind in sorted({r.kind for r in readings}, key=lambda k: k.value):
        values = [r.value for r in readings if r.kind is kind and r.value is not None]
        pcts = [r.pct for r in readings if r.kind is kind and r.pct is not None]
        entry: dict[str, Any] = {
            "count": len(values),
            "per_s": round(len(values) / seconds, 2),
            "min": min(values, default=None),
            "max": max(values, default=None),
        }
        if pcts:
            entry["pct_min"], entry["pct_max"] = min(pcts), max(pcts)
        per_kind[kind.value] = entry
    summary = source.summary()
    ok = summary.get("frames_ok", summary.get("lines_ok", 0))
    bad = sum(summary.get(k, 0) for k in ("frames_bad_checksum", "frames_truncated", "frames_malformed"))
    bad += sum(summary.get(k, 0) for k in ("lines_bad_checksum", "lines_malformed", "lines_too_long"))
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "port": PORT,
        "mode": MODE,
        "protocol": PROTOCOL,
        "seconds": seconds,
        "baud": source.baudrate,
        # which table gave resistance its percent: seen, stored:<file>, file:<path>, or null
        "calibration": sorted(
            {str(r.extra.get("calibration")) for r in readings if r.kind is Kind.RESISTANCE}
        ),
        "frames_ok": ok,
        "frames_bad": bad,
        "bad_ratio": round(bad / (ok + bad), 4) if ok + bad else None,
        "bytes_skipped": summary.get("bytes_skipped"),
        "readings": per_kind,
        "states": [e.state.value for e in events],
        "counters": summary,
    }


def _write(report: dict[str, Any]) -> Path:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"serial-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2))
    return path


async def test_stream_and_lab_report() -> None:
    speed = 1.0
    from engine.datadir import default_data_dir

    async with open_serial_sources(
        PORT,
        protocol=PROTOCOL,
        mode=MODE,
        speed=speed,
        baud=BAUD,
        calibration_file=CALIBRATION,
        bike_id=BIKE_ID,
        data_dir=None if PORT.startswith("sim") and "RIDESYNC_DATA" not in os.environ else default_data_dir(),
        tablet_boots=TABLET_BOOTS,
    ) as sources:
        (source,) = sources
        print(f"\nlab run: {PORT} protocol={PROTOCOL} mode={MODE} for {SECONDS:g} s — pedal now")
        t0 = time.monotonic()
        readings, events = await _stream_for(source, SECONDS)
        report = _report(source, readings, events, time.monotonic() - t0)
    path = _write(report)
    print(json.dumps({k: v for k, v in report.items() if k != "counters"}, indent=2))
    print(f"report written to {path}")

    expected = {Kind.CADENCE} if PROTOCOL == "line" else {Kind.CADENCE, Kind.POWER, Kind.RESISTANCE}
    seen = {r.kind for r in readings}
    assert expected <= seen, (
        f"no {sorted(k.value for k in expected - seen)} readings: is the sensor wired and on?"
    )
    for r in readings:
        lo, hi = PLAUSIBLE[r.kind]
        assert r.value is not None and lo <= r.value <= hi, f"implausible {r.kind.value} {r.value}"
    assert report["bad_ratio"] is not None and report["bad_ratio"] < 0.05, (
        f"over 5% bad frames at {report['baud']} baud: check wiring and RIDESYNC_SERIAL_BAUD"
    )
    seqs = [r.seq for r in readings]
    assert seqs == sorted(set(seqs)), "readings out of order or duplicated"
