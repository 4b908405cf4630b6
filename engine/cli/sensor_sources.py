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
    *,
    hr: str | None,
    serial: str | None,
    protocol: str,
    mode: str,
    speed: float,
    adapters: str | None = None,
    sim_out_of_range: str | None = None,
) -> AsyncIterator[list[SensorSource]]:
    """The strap sources for `hr` and the serial sources for `serial`, with any simulators they start
    running until the context exits. `adapters` is `--adapter hci0,hci1`; `sim_out_of_range` is
    `--sim-out-of-range STRAP:SECONDS@START` (both: adapters/ble/README.md)."""
    async with contextlib.AsyncExitStack() as stack:
        sources: list[SensorSource] = []
        if hr:
            from adapters.ble.factory import open_hr_sources, parse_adapters
            from adapters.ble.sim.range_walk import RangeWalk

            walk = RangeWalk.parse(sim_out_of_range) if sim_out_of_range else None
            sources += await stack.enter_async_context(
                open_hr_sources(hr, speed=speed, adapters=parse_adapters(adapters), out_of_range=walk)
            )
        if serial:
            from adapters.serial.factory import open_serial_sources

            sources += await stack.enter_async_context(
                open_serial_sources(serial, protocol=protocol, mode=mode, speed=speed)
            )
        yield sources
