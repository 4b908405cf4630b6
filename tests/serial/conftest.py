"""Fixtures for serial integration tests: real pyserial on real ptys, sources run in owned tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from adapters.serial.port_source import PortSource
from adapters.serial.sim.pty_port import PtyPort
from tests.support.serial import Collector

__all__ = ["collect", "pty_factory", "tasks"]


@pytest.fixture
async def collect() -> AsyncIterator[Callable[[PortSource], Collector]]:
    started: list[Collector] = []

    def make(source: PortSource) -> Collector:
        c = Collector(source)
        c.start()
        started.append(c)
        return c

    yield make
    for c in started:
        await c.stop()


@pytest.fixture
def pty_factory(tmp_path: Path) -> Iterator[Callable[[str], PtyPort]]:
    made: list[PtyPort] = []

    def make(name: str = "dev") -> PtyPort:
        port = PtyPort(tmp_path / name)
        port.plug()
        made.append(port)
        return port

    yield make
    for port in made:
        port.close()


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Background tasks (simulators) a test starts; cancelled and awaited at the end."""
    owned: list[asyncio.Task[None]] = []
    yield owned
    for t in owned:
        t.cancel()
    await asyncio.gather(*owned, return_exceptions=True)
