"""Running the product sync client (engine/device/connection.py) for the length of a `with` block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from engine.device.connection import DeviceSync


@contextlib.asynccontextmanager
async def running(sync: DeviceSync) -> AsyncIterator[DeviceSync]:
    """`sync.run()` as a task while the block runs; cancelled and awaited when it ends."""
    task = asyncio.create_task(sync.run())
    try:
        yield sync
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
