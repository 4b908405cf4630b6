"""SerialLink on a real pty: a cable pulled under a write is a port loss, not an event-loop error."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from adapters.serial.link import PortLost, QueueItem, SerialLink
from adapters.serial.sim.pty_port import PtyPort
from tests.support.serial import HANG_GUARD_S

POLL_CADENCE = bytes.fromhex("f54136f6")


async def test_write_to_an_unplugged_port_is_one_clean_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    handled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: handled.append(context))
    port = PtyPort(tmp_path / "bike")
    port.plug()
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    link = await SerialLink.open(port.path, queue, baudrate=19200)
    try:
        link.write(POLL_CADENCE)
        async with asyncio.timeout(HANG_GUARD_S):
            assert await port.read() == POLL_CADENCE
        caplog.set_level(logging.DEBUG)
        # The cable goes before the adapter has read anything from it: its next poll hits EIO on write.
        port.unplug()
        link.write(POLL_CADENCE)
        async with asyncio.timeout(HANG_GUARD_S):
            lost = await queue.get()
        assert isinstance(lost, PortLost), lost
        assert "write failed" in lost.reason
        assert lost.port == port.path
        # Nothing went to the loop's exception handler (pyserial-asyncio-fast's "Fatal write error"),
        # no error-level record and no traceback: the loss is reported once, as a state of the link.
        assert handled == []
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert [r.getMessage() for r in caplog.records if r.name == "adapters.serial.link"][-1] == (
            "serial port lost"
        )
        with pytest.raises(PortLost):
            link.write(POLL_CADENCE)  # the transport is closing: the caller hears about it too
        assert queue.empty()
    finally:
        link.close()
        port.close()
        loop.set_exception_handler(previous)
