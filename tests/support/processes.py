"""Real processes on loopback: `ridesync serve`, `ridesync ride`, `ridesync app`. The process helpers live
in engine/campaign/procs.py (the campaigns start the same processes); the `backend` fixture is imported by
the conftest.py of each test package that needs a real `ridesync serve`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.campaign.procs import RIDESYNC, Proc, ServeProcess, spawn

__all__ = ["HANG_GUARD_S", "RIDESYNC", "Backend", "Proc", "backend", "spawn"]

HANG_GUARD_S = 120

Backend = ServeProcess


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    logs = tmp_path / "logs"
    logs.mkdir()
    b = Backend(data=tmp_path / "server", logs=logs)
    await b.start()  # creates the keys first, so tokens issued here verify
    try:
        yield b
    finally:
        await b.stop()


def ridesync_children() -> list[int]:
    """The `ridesync` processes this process started that are still running (zombies excluded)."""
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and state != "Z" and RIDESYNC[-1].encode() in cmdline:
            found.append(int(entry.name))
    return found
