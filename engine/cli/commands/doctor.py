"""`ridesync doctor`: is this machine ready for real straps and serial bikes? Says what is wrong and how
to fix it.

Bluetooth: BlueZ on Linux (also reached from a container through the host's D-Bus), CoreBluetooth on
macOS, WinRT on Windows (adapters/ble/doctor.py, adapters/ble/doctor_hosts.py). Serial: the dialout or
uucp group, ModemManager and brltty, the /dev/serial/by-id names (adapters/serial/doctor.py).
Exit status 0 when nothing fails, 1 otherwise. Simulated devices (`--hr sim`, `--serial sim`) need none
of this.
"""

from __future__ import annotations

import argparse
import asyncio

from engine.cli.output import emit

_MARK = {"ok": "ok  ", "fail": "FAIL", "skipped": "--  "}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check Bluetooth (BlueZ, D-Bus, adapter, rfkill; macOS and Windows too) and serial ports",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per check, then a summary")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from adapters.ble.doctor import ready
    from adapters.ble.doctor_hosts import ble_checks
    from adapters.serial.doctor import serial_checks

    areas = {"bluetooth": asyncio.run(ble_checks()), "serial": serial_checks()}
    checks = [(area, c) for area, cs in areas.items() for c in cs]
    ok = all(ready(cs) for cs in areas.values())
    if args.json:
        for area, check in checks:
            emit({**check.to_json(), "area": area})
        emit(
            {
                "summary": {
                    "ready": ok,
                    "ready_for": {area: ready(cs) for area, cs in areas.items()},
                    "failed": [c.name for _, c in checks if c.ok is False],
                }
            }
        )
        return 0 if ok else 1
    for area, check in checks:
        row = check.to_json()
        print(f"[{_MARK[row['status']]}] {area}: {check.name}: {check.detail}")
        if check.fix:
            print(f"       fix: {check.fix}")
    if ready(areas["bluetooth"]):
        print("ready for real straps: try `ridesync scan`")
    else:
        print("NOT ready for real straps. Simulated straps still work: ridesync sensors --hr sim")
    if ready(areas["serial"]):
        print("ready for serial sensors: ridesync sensors --serial /dev/serial/by-id/...")
    else:
        print("NOT ready for serial sensors. Simulated ones still work: ridesync sensors --serial sim")
    return 0 if ok else 1
