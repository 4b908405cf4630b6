"""Human-mode output: readable lines for every object `ride`, `app`, `sensors` and `demo` print, never a
Python dict's repr or a raw aiohttp exception (`ClientConnectorError ... ssl:default`)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from engine.auth.tokens import KeyRing
from engine.cli.main import main
from engine.cli.output import human, ride_summary_text

T = 1_796_600_000.0
OBJECTS: list[tuple[dict[str, Any], str]] = [
    (
        {"event": "sync", "ride_id": "r1", "state": "syncing", "reason": "syncing 1,800 samples"},
        "[r1] syncing",
    ),
    (
        {
            "event": "ride",
            "ride_id": "r1",
            "device": "bike-1",
            "resumed": False,
            "next_seq": 0,
            "ended": False,
            "recovery": {"raw_replayed": 0, "problems": []},
        },
        "[r1] recording on bike-1",
    ),
    (
        {
            "event": "ride",
            "ride_id": "r1",
            "device": "bike-1",
            "resumed": True,
            "next_seq": 60,
            "ended": False,
            "recovery": {"raw_replayed": 3, "problems": ["torn tail"]},
        },
        "resuming on bike-1 at sample 60; 3 raw samples recovered",
    ),
    ({"event": "ride_ended", "ride_id": "r1", "samples": 1800}, "[r1] ended after 1,800 samples"),
    (
        {
            "event": "end_posted",
            "ride_id": "r1",
            "ok": True,
            "status": 200,
            "attempts": 1,
            "error": "",
            "response": {"ended": True},
        },
        "end posted to the backend (HTTP 200, 1 attempt)",
    ),
    (
        {
            "event": "end_posted",
            "ride_id": "r1",
            "ok": False,
            "status": None,
            "attempts": 4,
            "error": "gave up",
            "response": {},
        },
        "[r1] end not posted: gave up",
    ),
    ({"event": "listening", "url": "http://h:1", "dashboard_url": "http://h:1/"}, "dashboard http://h:1/"),
    (
        {
            "event": "summary",
            "elapsed_s": 5.0,
            "streaming": 1,
            "riders": 2,
            "hr": {"b1": 142, "b2": None},
            "hr_state": {"b1": "live", "b2": "stale"},
            "reconnects": 0,
        },
        "HR b1:142 b2:--",
    ),
    (
        {
            "t": T,
            "source": "ble-hr:AA",
            "seq": 1,
            "kind": "heart_rate",
            "value": 142,
            "unit": "bpm",
            "contact": "not_detected",
            "rr_s": [0.42],
            "energy_kj": None,
        },
        "ble-hr:AA heart rate 142 bpm (contact not detected)",
    ),
    (
        {"t": T, "source": "bike0", "seq": 2, "kind": "resistance", "value": 80, "unit": "raw", "pct": 31.5},
        "bike0 resistance 80 raw (31.5%)",
    ),
    (
        {"t": T, "source": "bike0", "kind": "state", "state": "lost", "detail": "unplugged"},
        "bike0 lost: unplugged",
    ),
    (
        {
            "t": T,
            "source": "ble-bike:C4",
            "kind": "state",
            "state": "streaming",
            "detail": "connected and subscribed",
            "service": "ftms",
            "device_info": {"manufacturer": "Wahoo Fitness", "model": "KICKR CORE", "firmware": "4.2.1"},
        },
        "ble-bike:C4 streaming: connected and subscribed (FTMS: Wahoo Fitness KICKR CORE, firmware 4.2.1)",
    ),
    (
        {"t": T, "source": "ble-bike:C4", "seq": 9, "kind": "speed", "value": 30.42, "unit": "km/h"},
        "ble-bike:C4 speed 30.42 km/h",
    ),
    ({"t": T, "kind": "summary", "sources": 2, "elapsed_s": 3.0}, "2 sources, stopped after 3 s"),
    (
        {"event": "chaos", "fault": "strap_range", "nested": {"a": 1}},
        'chaos: fault=strap_range, nested={"a":1}',
    ),
]


@pytest.mark.parametrize(("obj", "expected"), OBJECTS)
def test_every_event_kind_reads_as_a_line(obj: dict[str, Any], expected: str) -> None:
    line = human(obj)
    assert expected in line
    assert "\n" not in line and "{'" not in line


def test_ride_summary_text_names_state_phase_and_totals() -> None:
    text = ride_summary_text(
        {
            "ride_id": "r1", "sync_state": "reconciled", "sync_reason": "", "phase": "finalized",
            "samples": {"bike-1": 1800}, "end_events_counted": 1,
            "totals": {"duration_s": 1800.0, "avg_hr": 141.6, "max_hr": 171, "output_kj": 245.5},
        }
    )  # fmt: skip
    assert text == (
        "ride r1: reconciled; phase finalized; samples bike-1 1800; 1800 s, avg HR 142, max HR 171, "
        "245.5 kJ; end events counted 1"
    )


def test_ride_without_json_prints_readable_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Against a closed port: every progress line readable, the reason in words, the summary last."""
    token = KeyRing.load_or_create(tmp_path / "keys").issue("bike", "bike-1")
    argv = ["ride", "--backend", "http://127.0.0.1:9", "--token", token, "--serial", "sim", "--ride-id", "r1"]
    argv += ["--duration", "2", "--speed", "10", "--sync-timeout", "1", "--retry-cap", "0.5"]
    assert main([*argv, "--data", str(tmp_path / "bike")]) == 1
    out, err = capsys.readouterr()
    for line in err.splitlines():
        assert line.startswith("[r1] "), line
        assert "{'" not in line and "ClientConnectorError" not in line and "ssl:default" not in line, line
    assert "cannot connect to 127.0.0.1:9: connection refused" in err
    assert "[r1] recording on bike-1" in err and "[r1] ended after 2 samples" in err
    assert out.splitlines()[-1].startswith("ride r1: failed: ")
    assert "ClientConnectorError" not in out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sensors_on_a_terminal_prints_readable_lines_and_json_when_piped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sensors", "--serial", "sim", "--protocol", "line", "--duration", "1", "--speed", "5"]
    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    assert main(argv) == 0
    lines = screen.getvalue().splitlines()
    assert lines and not any(line.startswith("{") for line in lines), lines
    assert any(" streaming" in line for line in lines)
    assert lines[-1].startswith("1 source, stopped after ")
    monkeypatch.undo()
    assert main(argv) == 0
    piped = capsys.readouterr().out.splitlines()
    assert all(json.loads(line) for line in piped)
    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    assert main([*argv, "--json"]) == 0
    assert all(json.loads(line) for line in screen.getvalue().splitlines())
