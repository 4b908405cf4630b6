"""Real processes on loopback: `ridesync serve`, `ridesync ride`, `ridesync app`. The process helpers live
in engine/campaign/procs.py (the campaigns start the same processes); the `backend` fixture is imported by
the conftest.py of each test package that needs a real `ridesync serve`."""

from __future__ import annotations

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
