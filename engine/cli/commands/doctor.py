"""`ridesync doctor`: is this machine ready for real BLE straps? Says what is wrong and how to fix it.

Exit status 0 when ready, 1 when not. Simulated straps (`--hr sim`) need none of this.
"""

from __future__ import annotations

import argparse
import asyncio

from engine.cli.output import emit

_MARK = {"ok": "ok  ", "fail": "FAIL", "skipped": "--  "}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check BlueZ, D-Bus, the Bluetooth adapter, rfkill and permissions")
    p.add_argument("--json", action="store_true", help="one JSON object per check, then a summary")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from adapters.ble.doctor import ready, run_checks

    checks = asyncio.run(run_checks())
    ok = ready(checks)
    if args.json:
        for check in checks:
            emit(check.to_json())
        emit({"summary": {"ready": ok, "failed": [c.name for c in checks if c.ok is False]}})
        return 0 if ok else 1
    for check in checks:
        row = check.to_json()
        print(f"[{_MARK[row['status']]}] {check.name}: {check.detail}")
        if check.fix:
            print(f"       fix: {check.fix}")
    if ok:
        print("ready for real straps: try `ridesync scan`")
    else:
        print("NOT ready for real straps. Simulated straps still work: ridesync sensors --hr sim")
    return 0 if ok else 1
