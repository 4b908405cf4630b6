"""Fixtures for BLE tests: a simulated radio with short timeouts (helpers: tests/support/ble.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.ble.sim import Simulation
from tests.support.ble import SUPERVISION_TIMEOUT_S

__all__ = ["sim"]


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await Simulation.start(supervision_timeout_s=SUPERVISION_TIMEOUT_S)
    try:
        yield simulation
    finally:
        await simulation.close()
