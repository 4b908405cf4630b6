"""Opening the sensors a command line names: the one place `--hr` and `--serial` become sources.

`ridesync sensors` and `ridesync ride` both use it; it lives in the composition root because it is where
the adapters are wired in (the engine itself never imports them).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from engine.readings import SensorSource


@contextlib.asynccontextmanager
async def open_sensor_sources(
    *, hr: str | None, serial: str | None, protocol: str, mode: str, speed: float
) -> AsyncIterator[list[SensorSource]]:
    """The strap sources for `hr` and the serial sources for `serial`, with any simulators they start
    running until the context exits."""
    async with contextlib.AsyncExitStack() as stack:
        sources: list[SensorSource] = []
        if hr:
            from adapters.ble.factory import open_hr_sources

            sources += await stack.enter_async_context(open_hr_sources(hr, speed=speed))
        if serial:
            from adapters.serial.factory import open_serial_sources

            sources += await stack.enter_async_context(
                open_serial_sources(serial, protocol=protocol, mode=mode, speed=speed)
            )
        yield sources
