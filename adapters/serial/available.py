"""The serial ports this machine has, for a message about one it lacks: pyserial's
`serial.tools.list_ports` (device and description) plus the stable `/dev/serial/by-id` names."""

from __future__ import annotations

import os
from pathlib import Path

BY_ID_DIR = Path("/dev/serial/by-id")


def available_ports(by_id_dir: Path = BY_ID_DIR) -> list[str]:
    """One entry per port, `/dev/serial/by-id/NAME -> /dev/ttyUSB0` or `/dev/ttyS0 (description)`."""
    out: list[str] = []
    named: set[str] = set()
    try:
        links = sorted(by_id_dir.iterdir()) if by_id_dir.is_dir() else []
    except OSError:
        links = []
    for link in links:
        target = os.path.realpath(link)
        named.add(target)
        out.append(f"{link} -> {target}")
    try:
        from serial.tools import list_ports

        ports = sorted(list_ports.comports(), key=lambda p: p.device)
    except Exception:  # a listing that fails only leaves the message shorter
        ports = []
    for port in ports:
        if os.path.realpath(port.device) in named:
            continue
        described = port.description if port.description and port.description != "n/a" else ""
        out.append(f"{port.device} ({described})" if described else port.device)
    return out
