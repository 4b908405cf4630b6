"""Real processes on loopback: `ridesync serve`, `ridesync ride`, `ridesync app`, and the fault proxy
(in the test's own event loop) between them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.campaign.procs import RIDESYNC, Proc, ServeProcess, spawn
from tests.support.backend_server import make_server, server

__all__ = ["RIDESYNC", "Proc", "make_server", "server", "spawn"]

HANG_GUARD_S = 120


# The real-process helpers live in engine/campaign/procs.py (the campaigns start the same processes).
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
