"""Fixtures for the demo and dashboard tests: an in-process demo on simulated sensors, real Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.cli.commands.demo import simulated_rig
from engine.demo.browser import CHROMIUM, browser_missing
from engine.demo.session import DemoConfig, DemoSession, running_demo


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
    missing = browser_missing()
    if missing is not None:
        pytest.skip(missing)
    return CHROMIUM
