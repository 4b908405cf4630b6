"""`ridesync doctor`'s serial checks: may this user open USB serial ports, does anything grab them, which
are plugged in. Each check reads the system through a root directory a test can point at a fake tree.

- group: on Linux a USB serial node (ttyUSB*, ttyACM*) belongs to the group `dialout` (Debian, Ubuntu,
  Fedora) or `uucp` (Arch); a user outside it gets EACCES, and ridesync stops at once saying so.
- ModemManager probes every new ttyACM/ttyUSB for a modem, sending AT commands and holding the port for
  seconds; brltty (Ubuntu) claims common USB serial chips (CH340, CP210x) for braille displays, so the
  node vanishes right after it appears.
- `/dev/serial/by-id/` names each adapter by its USB vendor, model and serial number: a path that
  survives replugging and reboots, unlike ttyUSB0. They are listed for the user to copy.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from adapters.ble.doctor import Check

SERIAL_GROUPS = ("dialout", "uucp")
GRABBERS = {
    "ModemManager": (
        "ModemManager is running: it probes new ttyUSB/ttyACM ports with AT commands and holds them",
        'sudo systemctl disable --now ModemManager (or a udev rule setting ENV{ID_MM_DEVICE_IGNORE}="1" '
        "for your adapter)",
    ),
    "brltty": (
        "brltty is running: it claims USB serial chips (CH340, CP210x) for braille displays, so the port "
        "disappears right after it is plugged in",
        "sudo systemctl mask --now brltty-udev.service brltty.service (or sudo apt remove brltty if no "
        "braille display is used)",
    ),
}


def _groups(root: Path) -> dict[str, tuple[int, list[str]]]:
    """name -> (gid, members) from the tree's /etc/group."""
    out: dict[str, tuple[int, list[str]]] = {}
    try:
        text = (root / "etc/group").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit():
            out[parts[0]] = (int(parts[2]), [m for m in parts[3].split(",") if m])
    return out


def _nodes(root: Path) -> list[Path]:
    dev = root / "dev"
    return sorted(p for pattern in ("ttyUSB*", "ttyACM*") for p in dev.glob(pattern))


def check_group(root: Path, *, uid: int, gids: set[int], user: str) -> Check:
    if uid == 0:
        return Check("serial group", True, "running as root: every port may be opened")
    groups = _groups(root)
    by_gid = {gid: name for name, (gid, _members) in groups.items()}
    owners: set[str] = set()
    for node in _nodes(root):
        try:
            owners.add(by_gid.get(node.stat().st_gid, str(node.stat().st_gid)))
        except OSError:
            continue
    wanted = sorted(owners) or [g for g in SERIAL_GROUPS if g in groups] or ["dialout"]
    have = [g for g in wanted if g in groups and groups[g][0] in gids]
    if have:
        return Check("serial group", True, f"member of {', '.join(have)}")
    group = wanted[0]
    listed = group in groups and user in groups[group][1]
    detail = (
        f"{user} is in the {group} group, but not in this login session"
        if listed
        else f"{user} is not in the {group} group that owns serial ports: opening one fails with EACCES"
    )
    fix = f"sudo usermod -aG {group} $USER, then log out and back in"
    return Check("serial group", False, detail, "log out and back in" if listed else fix)


def check_grabbers(root: Path) -> Check:
    proc = root / "proc"
    running: set[str] = set()
    for entry in proc.glob("[0-9]*") if proc.is_dir() else ():
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name in GRABBERS:
            running.add(name)
    if not running:
        return Check("serial port grabbers", True, "neither ModemManager nor brltty is running")
    names = sorted(running)
    return Check(
        "serial port grabbers",
        False,
        "; ".join(GRABBERS[n][0] for n in names),
        "; ".join(GRABBERS[n][1] for n in names),
    )


def check_ports(root: Path) -> Check:
    by_id = root / "dev/serial/by-id"
    links = sorted(by_id.iterdir()) if by_id.is_dir() else []
    if links:
        shown = []
        for link in links:
            target = os.path.realpath(link)
            if root != Path("/"):
                target = "/" + os.path.relpath(target, root)
            shown.append(f"/dev/serial/by-id/{link.name} -> {target}")
        return Check("serial ports", True, "; ".join(shown))
    nodes = [f"/dev/{p.name}" for p in _nodes(root)]
    if nodes:
        return Check(
            "serial ports",
            True,
            f"{', '.join(nodes)} (no /dev/serial/by-id names: udev is not running here, so use these)",
        )
    return Check(
        "serial ports",
        None,
        "no USB serial device plugged in (nothing in /dev/serial/by-id); plug the adapter in, then "
        "`dmesg | tail` should name a ttyUSB or ttyACM",
    )


def serial_checks(
    root: Path = Path("/"),
    *,
    system: str | None = None,
    uid: int | None = None,
    gids: set[int] | None = None,
    user: str | None = None,
) -> list[Check]:
    system = platform.system() if system is None else system
    if system != "Linux":
        where = "/dev/cu.usbserial-* or /dev/cu.usbmodem*" if system == "Darwin" else "COM3, COM4, ..."
        return [
            Check(
                "serial ports",
                None,
                f"{system}: no group or ModemManager checks apply; ports are named like {where}",
            )
        ]
    uid = os.getuid() if uid is None else uid
    gids = {os.getgid(), *os.getgroups()} if gids is None else gids
    user = user or os.environ.get("USER") or str(uid)
    return [check_group(root, uid=uid, gids=gids, user=user), check_grabbers(root), check_ports(root)]
