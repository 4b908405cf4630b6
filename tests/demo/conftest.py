"""Fixtures for the demo and dashboard tests: an in-process demo on simulated sensors, real Chromium."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.cli.commands.demo import simulated_rig
from engine.demo.session import DemoConfig, DemoSession, running_demo

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, started the way it works in containers and CI (no sandbox, no GPU, no phoning home).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HANG_GUARD_S = 60.0


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[DemoSession]:
    # Joining the class 9 minutes in puts riders in different zones right away (intervals, not warm-up).
    config = DemoConfig(
        riders=6, speed=8.0, port=0, data_dir=tmp_path / "data", leaderboard_s=1.0, start_at_s=540
    )
    async with running_demo(config, simulated_rig) as session:
        yield session


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip("Debian's Chromium is not installed: apt-get install chromium (package `chromium`)")
    return CHROMIUM
