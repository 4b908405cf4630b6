"""`ridesync sensors --serial PORT` on a port that does not exist: it says which ports do exist and stops
after a bounded wait (PORT_WAIT_S), or with --wait keeps waiting until the port appears."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.serial.available import available_ports
from adapters.serial.sim.pty_port import PtyPort
from engine.cli import sensor_sources
from engine.cli.commands import sensors
from engine.cli.main import main


def test_missing_port_stops_with_the_ports_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sensor_sources, "PORT_WAIT_S", 0.3)
    monkeypatch.setattr("adapters.serial.available.available_ports", lambda: ["/dev/ttyUSB0 (FT232R)"])
    missing = str(tmp_path / "ttyUSB9")
    assert main(["sensors", "--serial", missing, "--protocol", "line"]) == 2
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    error = json.loads(line)["error"]
    assert f"serial port {missing} does not exist" in error
    assert "ports on this machine: /dev/ttyUSB0 (FT232R)" in error and "--wait" in error
    [waiting] = [json.loads(x) for x in out.splitlines()]
    assert (waiting["kind"], waiting["state"]) == ("state", "waiting")


def test_wait_keeps_waiting_until_the_port_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sensor_sources, "PORT_WAIT_S", 0.1)  # --wait outlasts the bound
    port = PtyPort(tmp_path / "pty")
    port.plug()
    target = tmp_path / "ttyUSB9"
    # The adapter is "plugged in" once the command says it waits, and later than the bound would have
    # ended a run without --wait.
    plug = threading.Timer(0.5, os.symlink, (os.path.realpath(tmp_path / "pty"), target))
    printer = sensors._printer

    def plugging_printer(as_json: bool) -> Callable[[dict[str, Any]], None]:
        show = printer(as_json)

        def wrapped(obj: dict[str, Any]) -> None:
            if obj.get("state") == "waiting":
                plug.start()
            show(obj)

        return wrapped

    monkeypatch.setattr(sensors, "_printer", plugging_printer)
    try:
        argv = ["sensors", "--serial", str(target), "--protocol", "line", "--wait", "--duration", "1"]
        assert main(argv) == 0
    finally:
        plug.cancel()
        port.close()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["state"] == "waiting" and "until it appears" in lines[0]["detail"]
    assert any(x.get("state") == "connecting" for x in lines)
    assert lines[-1]["kind"] == "summary"


def test_available_ports_lists_by_id_names(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R-if00-port0").symlink_to(tmp_path / "ttyUSB0")
    ports = available_ports(by_id)
    assert f"{by_id}/usb-FTDI_FT232R-if00-port0 -> {tmp_path}/ttyUSB0" in ports
