"""Opening real ports the way a lab machine fails: EACCES (not in dialout), and a by-id link that is
removed on unplug and recreated, pointing at a new device node, on replug."""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import serial

from adapters.serial.line_protocol import encode_ident, encode_record
from adapters.serial.line_source import LineSource
from adapters.serial.link import PortPermissionDenied
from adapters.serial.port_source import PortSource
from adapters.serial.sim.pty_port import PtyPort
from engine.cli.main import main
from engine.readings import SourceEvent, SourceState
from tests.support.serial import FAST, HANG_GUARD_S, Collector

Collect = Callable[[PortSource], Collector]


def deny(monkeypatch: pytest.MonkeyPatch, denied: set[str]) -> list[str]:
    """Make pyserial's open fail as it does for a user outside the device's group: SerialException
    carrying errno EACCES (tests run as root, where chmod would not stop the open)."""
    real = serial.serial_for_url
    tried: list[str] = []

    def open_or_deny(url: str, *args: Any, **kwargs: Any) -> Any:
        tried.append(url)
        if url in denied:
            raise serial.SerialException(
                errno.EACCES, f"could not open port {url}: [Errno 13] Permission denied: '{url}'"
            )
        return real(url, *args, **kwargs)

    monkeypatch.setattr(serial, "serial_for_url", open_or_deny)
    return tried


async def test_permission_denied_on_first_open_is_fatal_and_names_dialout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = PtyPort(tmp_path / "ttyUSB0")
    port.plug()
    try:
        deny(monkeypatch, {port.tty_name, port.path})
        source = LineSource(port.path, source_id="cad", **FAST)
        items = []
        with pytest.raises(PortPermissionDenied) as info:
            async with asyncio.timeout(HANG_GUARD_S):
                async for item in source.stream():
                    items.append(item)
        message = str(info.value)
        assert "\n" not in message
        assert "dialout" in message and port.path in message and "usermod" in message
        states = [getattr(i, "state", None) for i in items]
        assert states == [SourceState.CONNECTING, SourceState.FAILED]  # no backoff, no retry
        assert isinstance(items[-1], SourceEvent) and items[-1].detail == message
        assert source.counters["open_failures"] == 1
    finally:
        port.close()


async def test_permission_denied_after_a_replug_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collect: Collect
) -> None:
    """Right after a replug udev has not yet given the new node its group: EACCES is then transient."""
    port = PtyPort(tmp_path / "ttyACM0")
    port.plug()
    denied: set[str] = set()
    deny(monkeypatch, denied)
    try:
        source = LineSource(port.path, source_id="cad", **FAST)
        c = collect(source)
        await c.wait_for(lambda c: source.counters["opens"] == 1, "first open")
        port.unplug()
        await c.wait_state(SourceState.LOST)
        port.plug()
        denied.add(port.tty_name)
        await c.wait_for(lambda c: source.counters["open_failures"] >= 2, "denied reopens")
        assert SourceState.FAILED not in c.states()
        denied.clear()
        await c.wait_for(lambda c: source.counters["opens"] == 2, "reopened once udev is done")
    finally:
        port.close()


def test_cli_permission_denied_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = PtyPort(tmp_path / "ttyUSB0")
    port.plug()
    try:
        deny(monkeypatch, {port.tty_name, port.path})
        rc = main(["sensors", "--serial", port.path, "--protocol", "line", "--duration", "20"])
        err = capsys.readouterr().err
        assert rc == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "dialout" in lines[0] and "Traceback" not in err
    finally:
        port.close()


async def test_by_id_link_recreated_on_replug_is_resolved_again(tmp_path: Path, collect: Collect) -> None:
    """udev removes /dev/serial/by-id/usb-... on unplug and recreates it on replug, pointing at whatever
    node the kernel gave the device this time (ttyUSB0, then ttyUSB1): the source must follow it."""
    by_id = tmp_path / "serial" / "by-id" / "usb-ridesync_cadence_A1B2-if00-port0"
    by_id.parent.mkdir(parents=True)
    first = PtyPort(tmp_path / "ttyUSB0")
    first.plug()
    by_id.symlink_to(first.tty_name)
    second = PtyPort(tmp_path / "ttyUSB1")
    try:
        source = LineSource(str(by_id), source_id="cad", **FAST)
        c = collect(source)
        await c.wait_for(lambda c: source.counters["opens"] == 1, "first open")
        connecting = c.events[0]
        assert connecting.extra["device"] == first.tty_name
        await first.write(encode_ident("cad-1") + encode_record(0, 0, 0, 1024))
        await c.wait_state(SourceState.STREAMING)
        # Unplug: the node goes and udev removes the link.
        first.unplug()
        by_id.unlink()
        await c.wait_state(SourceState.LOST)
        n = len(c.events)
        await c.wait_for(lambda c: source.counters["open_failures"] >= 1, "open fails while unplugged")
        # Replug: a new node (the old one's number may be reused by anything else), a new link.
        second.plug()
        by_id.symlink_to(second.tty_name)
        await c.wait_for(lambda c: source.counters["opens"] == 2, "reopened through the new link")
        reopened = [e for e in c.events[n:] if e.state is SourceState.CONNECTING][-1]
        assert reopened.extra["device"] == second.tty_name
        await second.write(encode_record(1, 1, 800, 2048) + encode_record(2, 2, 1600, 3072))
        await c.wait_for(lambda c: len(c.readings) >= 1, "a reading through the new node")
    finally:
        first.close()
        second.close()


def test_ride_cli_permission_denied_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.auth.tokens import KeyRing

    token = KeyRing.load_or_create(tmp_path / "keys").issue("bike", "bike-1")
    port = PtyPort(tmp_path / "ttyUSB0")
    port.plug()
    try:
        deny(monkeypatch, {port.tty_name, port.path})
        argv = ["ride", "--backend", "http://127.0.0.1:9", "--token", token, "--data", str(tmp_path / "d")]
        rc = main(
            [*argv, "--serial", port.path, "--protocol", "line", "--duration", "30", "--sync-timeout", "1"]
        )
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        # (without --json the ride's progress goes to stderr too) the error is one JSON line, last
        assert "dialout" in json.loads(err.strip().splitlines()[-1])["error"]
    finally:
        port.close()
