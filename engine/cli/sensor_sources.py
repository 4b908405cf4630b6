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


def fatal_sensor_error(exc: BaseException) -> str | None:
    """The one-line message of a sensor error no retry can fix (e.g. no permission on a serial port),
    found inside the exception groups a TaskGroup wraps it in; None for anything else."""
    from adapters.serial.link import SerialFatal

    if isinstance(exc, SerialFatal):
        return str(exc)
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (message := fatal_sensor_error(inner)) is not None:
                return message
    return None
