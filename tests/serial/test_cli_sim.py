"""`ridesync sim`, `ridesync record` and `ridesync decode` together, as a lab would chain them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.cli.main import main

RIDESYNC = str(Path(sys.executable).parent / "ridesync")


def start(*argv: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    proc = subprocess.Popen([RIDESYNC, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first, proc.stderr.read() if proc.stderr else b""
    return proc, json.loads(first)


def finish(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return [json.loads(x) for x in out.splitlines()]


def decode(capsys: pytest.CaptureFixture[str], path: Path) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["decode", "peloton", str(path)]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    return summary


@pytest.mark.slow
def test_sim_listen_then_record_then_replay_then_record_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc, hello = start("sim", "bike", "--pty", "--mode", "listen", "--speed", "10", "--duration", "3")
    assert hello["mode"] == "listen" and Path(hello["pty"]).is_symlink()
    first = tmp_path / "first.bin"
    assert main(["record", hello["pty"], str(first), "--duration", "1"]) == 0
    recorded = json.loads(capsys.readouterr().out)["summary"]
    assert recorded["bytes"] > 0 and recorded["port_lost"] is None
    lines = finish(proc)
    assert lines[-1]["summary"]["values_sent"] > 0
    summary = decode(capsys, first)
    assert summary["frames_ok"] > 10
    assert (tmp_path / "first.bin.timing").exists()

    link = tmp_path / "replay-port"
    proc, hello = start(
        "sim",
        "replay",
        str(first),
        "--pty",
        "--link",
        str(link),
        "--speed",
        "4",
        "--start-delay",
        "0.5",
        "--duration",
        "3",
    )
    assert hello["pty"] == str(link)
    second = tmp_path / "second.bin"
    assert main(["record", str(link), str(second), "--duration", "2"]) == 0
    finish(proc)
    assert second.read_bytes() == first.read_bytes()


def test_sim_bike_poll_mode_answers_a_head_unit(tmp_path: Path) -> None:
    import serial

    from adapters.serial.peloton import (
        Command,
        PelotonParser,
        Resistance,
        encode_calibration_request,
        encode_request,
    )

    csv = tmp_path / "ride.csv"
    csv.write_text("77,123.4,650\n" * 10)
    proc, hello = start("sim", "bike", "--pty", "--profile", str(csv), "--duration", "3")
    with serial.Serial(hello["pty"], 19200, timeout=1) as port:
        # the simulated bike answers nothing before the head unit's boot handshake
        port.write(encode_request(Command.RESISTANCE))
        assert port.read(9) == b""
        port.write(encode_request(0, head=0xFE) + encode_request(Command.BIKE_ID))
        assert len(port.read(8 + 12)) == 20  # F1 FE with 3 digits, F1 FB with 7
        port.write(encode_calibration_request(0) + encode_request(Command.RESISTANCE))
        data = port.read(9 + 9)  # two replies with 4-digit payloads
    events = PelotonParser().feed(data)
    assert Resistance(650, None) in events
    assert finish(proc)[-1]["summary"]["values_sent"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "bike", "--pty", "--faults", "melt=1"], "--faults"),
        (["sim", "bike", "--pty", "--speed", "0"], "--speed"),
        (["sim", "bike", "--pty", "--profile", "/nonexistent.csv"], "cannot read"),
        (["sim", "replay", "/nonexistent.bin", "--pty"], "cannot read"),
        (["record", "/dev/nonexistent-port", "/tmp/x.bin", "--duration", "1"], "cannot open"),
    ],
)
def test_errors_are_json_with_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc: int | str | None
    try:
        rc = main(argv)
    except SystemExit as exc:  # a value argparse refuses is its usage error, also exit 2
        rc = exc.code
        err = capsys.readouterr().err
    else:
        err = json.loads(capsys.readouterr().err)["error"]
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_record_reports_a_lost_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc, hello = start("sim", "bike", "--pty", "--mode", "listen", "--speed", "5", "--duration", "1")
    rc = main(["record", hello["pty"], str(tmp_path / "cap.bin"), "--duration", "20"])
    finish(proc)
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert rc == 1
    assert summary["port_lost"]
    assert summary["bytes"] > 0


def test_sigterm_stops_a_background_sim_cleanly() -> None:
    import signal

    proc, hello = start("sim", "bike", "--pty", "--mode", "listen", "--speed", "5")
    assert Path(hello["pty"]).exists()
    proc.send_signal(signal.SIGTERM)
    lines = finish(proc)
    assert "summary" in lines[-1]
    assert not Path(hello["pty"]).exists()  # the temporary pty path is cleaned up


def test_sim_line_sensor_at_its_baud_reads_clean_and_garbage_at_another() -> None:
    import serial

    from adapters.serial.line_protocol import CrankRecord, LineEvent, LineParser

    proc, hello = start("sim", "bike", "--pty", "--protocol", "line", "--baud", "9600", "--speed", "20")
    try:
        assert hello["baud"] == 9600
        for rate, clean in ((9600, True), (115200, False)):
            with serial.Serial(hello["pty"], rate, timeout=0.5) as port:
                parser = LineParser()
                events: list[LineEvent] = []
                while len(events) < 4 and not (not clean and parser.counters.bytes_total > 200):
                    events += parser.feed(port.read(256))
            records = [e for e in events if isinstance(e, CrankRecord)]
            assert bool(records) is clean, (rate, parser.counters)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
