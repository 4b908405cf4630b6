"""Is this machine ready for real straps? Checks BlueZ and the adapter, and says what to fix.

Each check reads the system through a root directory and a bus address the caller can point elsewhere
(tests use a fake sysfs tree), and returns a `Check` with a verdict and, when it fails, the fix.
The order matters: later checks are skipped with a reason when an earlier one already explains them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_BUS_SOCKETS = ("run/dbus/system_bus_socket", "var/run/dbus/system_bus_socket")
BLUETOOTHD_PATHS = ("usr/libexec/bluetooth/bluetoothd", "usr/lib/bluetooth/bluetoothd", "usr/sbin/bluetoothd")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool | None  # None: skipped, because an earlier failure already explains it
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        status = "skipped" if self.ok is None else ("ok" if self.ok else "fail")
        return {"check": self.name, "status": status, "detail": self.detail, "fix": self.fix}


def _system_bus_path(root: Path, env: dict[str, str]) -> Path | None:
    address = env.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    if address.startswith("unix:path="):
        candidate = Path(address.removeprefix("unix:path=").split(",")[0])
        return candidate if root == Path("/") else root / candidate.relative_to("/")
    for rel in SYSTEM_BUS_SOCKETS:
        p = root / rel
        if p.exists():
            return p
    return None


def check_bluetoothd_installed(root: Path) -> Check:
    found = [str(root / p) for p in BLUETOOTHD_PATHS if (root / p).exists()]
    if root == Path("/") and (which := shutil.which("bluetoothd")):
        found.append(which)
    if found:
        return Check("bluez installed", True, f"bluetoothd at {found[0]}")
    return Check(
        "bluez installed",
        False,
        "BlueZ is not installed: no bluetoothd on this machine",
        "install BlueZ: sudo apt-get install bluez (then: sudo systemctl enable --now bluetooth)",
    )


def check_bluetoothd_running(root: Path) -> Check:
    proc = root / "proc"
    for entry in proc.glob("[0-9]*") if proc.is_dir() else ():
        try:
            if (entry / "comm").read_text().strip() == "bluetoothd":
                return Check("bluetoothd running", True, f"pid {entry.name}")
        except OSError:
            continue
    return Check(
        "bluetoothd running",
        False,
        "the BlueZ daemon (bluetoothd) is not running",
        "sudo systemctl start bluetooth (in a container: run bluetoothd, or use --hr sim)",
    )


def check_system_bus(root: Path, env: dict[str, str]) -> tuple[Check, Path | None]:
    path = _system_bus_path(root, env)
    if path is None:
        return (
            Check(
                "d-bus system bus",
                False,
                "no D-Bus system bus socket (/run/dbus/system_bus_socket); bleak talks to BlueZ over it",
                "start the system bus: sudo systemctl start dbus (in a container, bind-mount /run/dbus)",
            ),
            None,
        )
    try:
        is_socket = stat.S_ISSOCK(path.stat().st_mode)
    except OSError as exc:
        return Check("d-bus system bus", False, f"{path}: {exc.strerror}", "check the dbus service"), None
    if not is_socket:
        return Check("d-bus system bus", False, f"{path} is not a socket", "restart dbus"), None
    return Check("d-bus system bus", True, str(path)), path


def check_adapters(root: Path) -> tuple[Check, list[str]]:
    sysfs = root / "sys/class/bluetooth"
    names = sorted(p.name for p in sysfs.iterdir() if p.name.startswith("hci")) if sysfs.is_dir() else []
    if names:
        return Check("bluetooth adapter", True, ", ".join(names)), names
    return (
        Check(
            "bluetooth adapter",
            False,
            "no Bluetooth adapter in /sys/class/bluetooth",
            "plug in a USB Bluetooth 4.0+ adapter (or pass one through to this VM/container); check dmesg",
        ),
        [],
    )


def check_rfkill(root: Path) -> Check:
    blocked: list[str] = []
    rfkill = root / "sys/class/rfkill"
    for dev in sorted(rfkill.iterdir()) if rfkill.is_dir() else []:
        try:
            if (dev / "type").read_text().strip() != "bluetooth":
                continue
            soft = (dev / "soft").read_text().strip() == "1"
            hard = (dev / "hard").read_text().strip() == "1"
        except OSError:
            continue
        if hard:
            blocked.append(f"{dev.name} hard-blocked")
        elif soft:
            blocked.append(f"{dev.name} soft-blocked")
    if not blocked:
        return Check("rfkill", True, "bluetooth radios not blocked")
    hard = any("hard" in b for b in blocked)
    return Check(
        "rfkill",
        False,
        ", ".join(blocked),
        "turn the hardware radio switch on (airplane mode key)" if hard else "sudo rfkill unblock bluetooth",
    )


async def probe_bluez(bus_path: Path, timeout_s: float = 3.0) -> Check:
    """Ask BlueZ for its objects over D-Bus: proves the daemon answers and we may talk to it."""
    from dbus_fast import BusType, Message, MessageType
    from dbus_fast.aio import MessageBus

    try:
        async with asyncio.timeout(timeout_s):
            bus = await MessageBus(bus_address=f"unix:path={bus_path}", bus_type=BusType.SYSTEM).connect()
            try:
                reply = await bus.call(
                    Message(
                        destination="org.bluez",
                        path="/",
                        interface="org.freedesktop.DBus.ObjectManager",
                        member="GetManagedObjects",
                    )
                )
            finally:
                bus.disconnect()
    except TimeoutError:
        return Check(
            "bluez access", False, f"no answer on the system bus within {timeout_s:g} s", "restart dbus"
        )
    except OSError as exc:
        return Check(
            "bluez access",
            False,
            f"cannot connect to the system bus: {exc}",
            "run as a user allowed on the system bus",
        )
    if reply.message_type == MessageType.ERROR:
        name = reply.error_name or "error"
        if "AccessDenied" in name:
            fix = "add yourself to the bluetooth group: sudo usermod -aG bluetooth $USER (then log in again)"
        elif "ServiceUnknown" in name or "NameHasNoOwner" in name:
            fix = "start BlueZ: sudo systemctl start bluetooth"
        else:
            fix = "check `journalctl -u bluetooth`"
        return Check("bluez access", False, f"BlueZ did not answer: {name}", fix)
    objects: dict[str, dict[str, Any]] = reply.body[0]
    adapters = {p: i["org.bluez.Adapter1"] for p, i in objects.items() if "org.bluez.Adapter1" in i}
    if not adapters:
        return Check("bluez access", False, "BlueZ answers but manages no adapter", "plug in an adapter")
    off = [p for p, props in adapters.items() if not props.get("Powered") or not props["Powered"].value]
    if off:
        return Check(
            "bluez access",
            False,
            f"adapter(s) powered off: {', '.join(off)}",
            "bluetoothctl power on",
        )
    return Check("bluez access", True, f"BlueZ manages {', '.join(sorted(adapters))}, powered")


def bluetoothd_version(root: Path) -> str | None:
    """`bluetoothd --version` of the installed daemon (e.g. "5.66"), or None if it cannot be run."""
    import subprocess

    candidates = [root / p for p in BLUETOOTHD_PATHS if (root / p).exists()]
    if root == Path("/") and (which := shutil.which("bluetoothd")):
        candidates.append(Path(which))
    for path in candidates:
        try:
            proc = subprocess.run(
                [str(path), "--version"], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip().split()[-1]
    return None


def check_bluez_version(version: str | None) -> Check:
    """bleak 3.1 refuses every connection on BlueZ older than 5.55 ("Bleak requires BlueZ >= 5.55")."""
    name = "bluez version"
    if version is None:
        return Check(name, None, "could not run bluetoothd --version")
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return Check(name, None, f"unrecognised BlueZ version {version!r}")
    if parts >= (5, 55):
        return Check(name, True, f"BlueZ {version} (bleak needs >= 5.55)")
    return Check(
        name,
        False,
        f"BlueZ {version} is older than 5.55: bleak refuses every connection",
        "upgrade the bluez package (Debian 11, Ubuntu 22.04 and later ship >= 5.55), "
        "then sudo systemctl restart bluetooth",
    )


async def run_checks(
    root: Path = Path("/"), env: dict[str, str] | None = None, bus_timeout_s: float = 3.0
) -> list[Check]:
    env = dict(os.environ) if env is None else env
    checks = [check_bluetoothd_installed(root), check_bluetoothd_running(root)]
    checks.append(
        check_bluez_version(bluetoothd_version(root))
        if checks[0].ok
        else Check("bluez version", None, "BlueZ is not installed")
    )
    bus_check, bus_path = check_system_bus(root, env)
    checks.append(bus_check)
    adapter_check, _ = check_adapters(root)
    checks.append(adapter_check)
    checks.append(check_rfkill(root) if adapter_check.ok else Check("rfkill", None, "no adapter to check"))
    if bus_path is not None and checks[1].ok:
        checks.append(await probe_bluez(bus_path, bus_timeout_s))
    else:
        checks.append(Check("bluez access", None, "needs the system bus and a running bluetoothd"))
    return checks


def ready(checks: list[Check]) -> bool:
    return all(c.ok is not False for c in checks)
