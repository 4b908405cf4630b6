"""`ridesync doctor` off plain BlueZ: macOS and Windows (platform.system faked), BlueZ reached through a
D-Bus socket from a container that sees no bluetoothd process, and the serial checks."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.ble import doctor_hosts
from adapters.ble.doctor import run_checks
from adapters.ble.doctor_hosts import ble_checks
from adapters.serial.doctor import serial_checks
from engine.cli.main import main
from tests.ble.test_doctor_cli import by_name, fake_root


@pytest.mark.parametrize(
    ("system", "answer", "adapter_ok"),
    [
        ("Darwin", "Bluetooth Controller:\n  State: On\n", True),
        ("Darwin", "Bluetooth Controller:\n  State: Off\n", False),
        ("Darwin", None, None),
        ("Windows", "1\n", True),
        ("Windows", "0\n", False),
        ("Windows", None, None),
    ],
)
def test_macos_and_windows_say_what_is_checked_there(
    system: str,
    answer: str | None,
    adapter_ok: bool | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("platform.system", lambda: system)
    monkeypatch.setattr(doctor_hosts, "_run", lambda argv, timeout_s=15.0: answer)
    status = main(["doctor", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    checks = {r["check"]: r for r in rows[:-1]}
    assert "bluez installed" not in checks and "d-bus system bus" not in checks
    assert checks["platform"]["status"] == "ok"
    assert ("CoreBluetooth" if system == "Darwin" else "WinRT") in checks["platform"]["detail"]
    assert checks["bluetooth adapter"]["status"] == {True: "ok", False: "fail", None: "skipped"}[adapter_ok]
    permission = checks["bluetooth permission"]
    assert permission["status"] == "skipped" and permission["fix"]
    assert checks["serial ports"]["area"] == "serial" and system in checks["serial ports"]["detail"]
    for row in rows[:-1]:
        if row["status"] == "fail":
            assert row["fix"], row
    assert status == (0 if adapter_ok is not False else 1)


DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
async def host_bus(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Path]:
    """A root whose run/dbus/system_bus_socket is a real bus daemon, like the host's bus mounted into a
    container, with a fake org.bluez on it managing one powered adapter; no bluetoothd in its /proc."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon not installed (Debian: dbus-daemon)")
    from dbus_fast.aio import MessageBus
    from dbus_fast.constants import PropertyAccess
    from dbus_fast.service import ServiceInterface, dbus_property

    class Adapter(ServiceInterface):
        def __init__(self) -> None:
            super().__init__("org.bluez.Adapter1")

        @dbus_property(access=PropertyAccess.READ)
        def Powered(self) -> b:  # type: ignore[name-defined]  # noqa: F821
            return True

    # A unix socket's path must fit in 108 bytes, and pytest's tmp_path (longer still under xdist) need
    # not: the fake root lives in a short directory of its own.
    short = Path(tempfile.mkdtemp(prefix="rsbus-"))
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    root = fake_root(short, bluez=False, running=False, adapter=False, bus=True)
    socket = root / "run/dbus/system_bus_socket"
    config = tmp_path / "bus.conf"
    config.write_text(DBUS_CONFIG.format(socket=socket))
    daemon = await asyncio.create_subprocess_exec(
        *("dbus-daemon", "--nofork", "--nopidfile", f"--config-file={config}", "--print-address"),
        stdout=subprocess.PIPE,
    )
    try:
        assert daemon.stdout is not None
        async with asyncio.timeout(30):
            await daemon.stdout.readline()  # it prints its address once it listens
        bus = await MessageBus(bus_address=f"unix:path={socket}").connect()
        bus.export("/org/bluez/hci0", Adapter())
        await bus.request_name("org.bluez")
        try:
            yield root
        finally:
            bus.disconnect()
    finally:
        daemon.terminate()
        async with asyncio.timeout(30):
            await daemon.wait()


async def test_container_with_the_hosts_dbus_probes_bluez_without_a_bluetoothd_process(
    host_bus: Path,
) -> None:
    plain = by_name(await run_checks(host_bus, env={}, bus_timeout_s=3))
    assert plain["bluez access"].ok is None  # BlueZ-only doctor: gives up without a visible bluetoothd
    c = by_name(await ble_checks(system="Linux", root=host_bus, env={}, bus_timeout_s=3))
    assert c["bluez access"].ok is True, c["bluez access"]
    assert "/org/bluez/hci0" in c["bluez access"].detail
    assert c["bluetoothd running"].ok is True and "org.bluez answers" in c["bluetoothd running"].detail
    assert c["bluez installed"].ok is True
    assert c["bluetooth adapter"].ok is True
    assert all(check.ok is not False for check in c.values())


async def test_a_bus_without_bluez_still_fails_with_a_fix(tmp_path: Path) -> None:
    root = fake_root(tmp_path, bluez=False, running=False, adapter=False)
    c = by_name(await ble_checks(system="Linux", root=root, env={}, bus_timeout_s=1))
    assert c["bluez access"].ok is None and c["bluez access"].detail == "needs the D-Bus system bus"
    assert c["bluetoothd running"].ok is False and c["bluetoothd running"].fix


# ---- serial --------------------------------------------------------------------------------------------


def serial_root(tmp_path: Path, *, procs: tuple[str, ...] = (), by_id: bool = False) -> Path:
    root = tmp_path / "sroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text(f"root:x:0:\ndialout:x:{os.getgid()}:alice\nuucp:x:10:\n")
    (root / "dev").mkdir()
    node = root / "dev/ttyUSB0"
    node.touch()  # owned by our gid, named dialout in the fake /etc/group
    for i, name in enumerate(procs):
        (root / f"proc/{100 + i}").mkdir(parents=True)
        (root / f"proc/{100 + i}/comm").write_text(name + "\n")
    if by_id:
        (root / "dev/serial/by-id").mkdir(parents=True)
        (root / "dev/serial/by-id/usb-FTDI_FT232R_A10K1234-if00-port0").symlink_to(node)
    return root


def test_serial_group_missing_says_usermod_dialout(tmp_path: Path) -> None:
    root = serial_root(tmp_path)
    checks = {c.name: c for c in serial_checks(root, system="Linux", uid=1000, gids={1000}, user="bob")}
    group = checks["serial group"]
    assert group.ok is False and "dialout" in group.detail
    assert group.fix == "sudo usermod -aG dialout $USER, then log out and back in"
    # in /etc/group already, but this session started before: only a new login helps
    listed = serial_checks(root, system="Linux", uid=1000, gids={1000}, user="alice")[0]
    assert listed.ok is False and listed.fix == "log out and back in"
    member = serial_checks(root, system="Linux", uid=1000, gids={1000, os.getgid()}, user="alice")[0]
    assert member.ok is True and member.detail == "member of dialout"


@pytest.mark.parametrize("grabber", ["ModemManager", "brltty"])
def test_modemmanager_and_brltty_are_named_with_their_fix(tmp_path: Path, grabber: str) -> None:
    root = serial_root(tmp_path, procs=("init", grabber))
    check = {c.name: c for c in serial_checks(root, system="Linux", uid=0)}["serial port grabbers"]
    assert check.ok is False and grabber in check.detail and "systemctl" in check.fix


def test_by_id_paths_are_listed(tmp_path: Path) -> None:
    root = serial_root(tmp_path, by_id=True)
    ports = {c.name: c for c in serial_checks(root, system="Linux", uid=0)}["serial ports"]
    assert ports.ok is True
    assert ports.detail == "/dev/serial/by-id/usb-FTDI_FT232R_A10K1234-if00-port0 -> /dev/ttyUSB0"
    bare = {c.name: c for c in serial_checks(serial_root(tmp_path / "b"), system="Linux", uid=0)}
    assert bare["serial ports"].ok is True and "/dev/ttyUSB0" in bare["serial ports"].detail


def test_doctor_json_on_this_machine_has_a_fix_for_every_failure(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["doctor", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["area"] for r in rows[:-1]} == {"bluetooth", "serial"}
    assert {"serial group", "serial port grabbers", "serial ports"} <= {r["check"] for r in rows[:-1]}
    failed = [r for r in rows[:-1] if r["status"] == "fail"]
    assert all(r["fix"] for r in failed)
    summary = rows[-1]["summary"]
    assert summary["failed"] == [r["check"] for r in failed]
    assert status == (0 if summary["ready"] else 1)
