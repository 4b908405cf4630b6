"""`ridesync doctor` beyond a plain BlueZ host: macOS, Windows, and BlueZ reached from a container.

- Linux: the BlueZ checks of `doctor.py`, then, when no bluetoothd process is visible (a container with
  the host's D-Bus socket mounted has the host's BlueZ but not its processes), org.bluez is still probed
  on the system bus; if it answers, the BlueZ checks that only looked at this machine's files and
  processes are marked ok with the reason.
- macOS (CoreBluetooth) and Windows (WinRT): BlueZ does not apply. Say what matters there and check what
  can be checked from a command line: the adapter (and whether it is on), and the Bluetooth permission
  as far as the platform lets a program see it.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from adapters.ble.doctor import Check, check_system_bus, probe_bluez, run_checks


async def linux_checks(root: Path, env: dict[str, str], bus_timeout_s: float = 3.0) -> list[Check]:
    checks = await run_checks(root, env, bus_timeout_s)
    names = [c.name for c in checks]
    if "bluez access" not in names:
        return checks
    access = checks[names.index("bluez access")]
    if access.ok is not None:
        return checks
    bus_check, bus_path = check_system_bus(root, env)
    if not bus_check.ok or bus_path is None:
        i = names.index("bluez access")
        return [*checks[:i], Check("bluez access", None, "needs the D-Bus system bus"), *checks[i + 1 :]]
    # No bluetoothd here, but a system bus: in a container it is the host's, and so is BlueZ.
    probe = await probe_bluez(bus_path, bus_timeout_s)
    out = [probe if c.name == "bluez access" else c for c in checks]
    if probe.ok or "powered off" in probe.detail or "no adapter" in probe.detail:
        # org.bluez answered: BlueZ runs, just not where this machine's files and /proc can see it.
        seen_via = f"org.bluez answers on the system bus at {bus_path} (the host's BlueZ, from a container?)"
        for name in ("bluez installed", "bluetoothd running"):
            if name in names and out[names.index(name)].ok is False:
                out[names.index(name)] = Check(name, True, f"not visible here, but {seen_via}")
        if "bluetooth adapter" in names and probe.ok and out[names.index("bluetooth adapter")].ok is False:
            out[names.index("bluetooth adapter")] = Check(
                "bluetooth adapter", True, f"none in this /sys, but BlueZ reports: {probe.detail}"
            )
            rfkill = names.index("rfkill") if "rfkill" in names else -1
            if rfkill >= 0 and out[rfkill].ok is None:
                out[rfkill] = replace(out[rfkill], detail="the adapter is the host's: check rfkill there")
    return out


def _run(argv: list[str], timeout_s: float = 15.0) -> str | None:
    """A command's stdout, or None if it is missing, fails or takes too long."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def macos_checks() -> list[Check]:
    checks = [Check("platform", True, "macOS: bleak uses CoreBluetooth; the BlueZ checks do not apply")]
    report = _run(["system_profiler", "SPBluetoothDataType"])
    if report is None:
        checks.append(Check("bluetooth adapter", None, "could not ask system_profiler SPBluetoothDataType"))
    else:
        lowered = report.lower()
        if "state: off" in lowered or "bluetooth power: off" in lowered:
            checks.append(
                Check(
                    "bluetooth adapter",
                    False,
                    "Bluetooth is off",
                    "turn Bluetooth on: Control Center or System Settings > Bluetooth",
                )
            )
        elif "state: on" in lowered or "bluetooth power: on" in lowered:
            checks.append(Check("bluetooth adapter", True, "Bluetooth controller present and on"))
        else:
            checks.append(Check("bluetooth adapter", None, "system_profiler did not say whether it is on"))
    checks.append(
        Check(
            "bluetooth permission",
            None,
            "not visible from here: macOS asks once per app (the terminal, or the IDE that runs ridesync); "
            "if it was denied, scans find nothing and report no error",
            "System Settings > Privacy & Security > Bluetooth: allow your terminal app, then restart it",
        )
    )
    return checks


def windows_checks() -> list[Check]:
    checks = [Check("platform", True, "Windows: bleak uses WinRT; the BlueZ checks do not apply")]
    count = _run(
        [
            "powershell",
            "-NoProfile",
            "-Command",
            "@(Get-PnpDevice -Class Bluetooth -PresentOnly -Status OK -ErrorAction SilentlyContinue).Count",
        ]
    )
    if count is None or not count.strip().isdigit():
        checks.append(Check("bluetooth adapter", None, "could not ask PowerShell's Get-PnpDevice"))
    elif int(count.strip()) == 0:
        checks.append(
            Check(
                "bluetooth adapter",
                False,
                "no working Bluetooth device in Device Manager",
                "plug in a Bluetooth 4.0+ adapter, or enable it in Device Manager",
            )
        )
    else:
        checks.append(Check("bluetooth adapter", True, f"{count.strip()} Bluetooth device(s) working"))
    checks.append(
        Check(
            "bluetooth permission",
            None,
            "not visible from here: desktop programs need no per-app permission, but Bluetooth must be "
            "on and, on Windows 11, allowed for apps (Privacy & security > Radios)",
            "Settings > Bluetooth & devices: turn Bluetooth on",
        )
    )
    return checks


async def ble_checks(
    *,
    system: str | None = None,
    root: Path = Path("/"),
    env: dict[str, str] | None = None,
    bus_timeout_s: float = 3.0,
) -> list[Check]:
    """The Bluetooth checks for this platform (`system`: platform.system(), or a test's stand-in)."""
    import os

    system = platform.system() if system is None else system
    if system == "Darwin":
        return macos_checks()
    if system == "Windows":
        return windows_checks()
    return await linux_checks(root, dict(os.environ) if env is None else env, bus_timeout_s)
