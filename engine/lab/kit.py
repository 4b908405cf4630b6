"""Running the lab kit: every scenario in order, one report.

    report = await run_lab(LabConfig(hr="sim:2", serial="sim", line="sim"), Guide())

The heart-rate sources are opened once for the whole run (on the simulator that is one virtual radio
with its straps playing throughout); each scenario streams them while it runs and stops them after, so
on a bench nothing of the kit holds a strap while a scenario needs it free (the killed separate run).
Serial devices are opened per scenario. A scenario that raises is a failed scenario, not a failed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.lab import ble, serial
from engine.lab.context import SIM_SUPERVISION_TIMEOUT_S, Lab, LabConfig
from engine.lab.guide import Guide
from engine.lab.report import SCENARIOS, LabReport, ScenarioResult, Status

Scenario = Callable[[Lab, ScenarioResult], Awaitable[None]]

RUNNERS: dict[str, Scenario] = {
    "two_straps": ble.two_straps,
    "out_of_range": ble.out_of_range,
    "power_cycle": ble.power_cycle,
    "kill_rerun": ble.kill_rerun,
    "serial_unplug": serial.serial_unplug,
    "calibration": serial.calibration,
    "line_clock_wrap": serial.line_clock_wrap,
}
assert list(RUNNERS) == list(SCENARIOS)


class LabConfigError(ValueError):
    """Options that name no runnable lab (the message says what to give)."""


def plan(config: LabConfig) -> list[str]:
    unknown = sorted(set(config.only) - set(RUNNERS)) + sorted(set(config.skip) - set(RUNNERS))
    if unknown:
        raise LabConfigError(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(RUNNERS)}")
    return [s for s in RUNNERS if (not config.only or s in config.only) and s not in config.skip]


def _devices(config: LabConfig, lab: Lab) -> dict[str, Any]:
    straps = [getattr(s, "selector", s.source_id) for s in (lab.hr or [])]
    return {
        "hr": {"spec": config.hr, "straps": straps, "adapters": config.adapters} if config.hr else None,
        "serial": (
            {
                "spec": config.serial,
                "protocol": config.protocol,
                "mode": config.mode if config.protocol == "peloton" else None,
                "baud": config.baud,
                "calibration_file": config.calibration,
            }
            if config.serial
            else None
        ),
        "line": {"spec": config.line_spec} if config.line_spec else None,
    }


async def run_lab(config: LabConfig, guide: Guide) -> LabReport:
    if not (config.hr or config.serial or config.line):
        raise LabConfigError("nothing to test: give --hr, --serial and/or --line (sim for the simulator)")
    if config.speed <= 0:
        raise LabConfigError("--speed must be positive")
    ids = plan(config)
    lab = Lab(config, guide)
    async with contextlib.AsyncExitStack() as stack:
        if config.hr:
            from adapters.ble.factory import open_hr_sources, parse_adapters

            lab.hr = await stack.enter_async_context(
                open_hr_sources(
                    config.hr,
                    speed=config.speed,
                    adapters=parse_adapters(config.adapters),
                    supervision_timeout_s=SIM_SUPERVISION_TIMEOUT_S if config.hr_simulated else None,
                )
            )
        report = LabReport(
            devices=_devices(config, lab),
            simulated={
                "hr": config.hr_simulated,
                "serial": config.serial_simulated,
                "line": config.line_simulated,
            },
        )
        guide.say(f"{len(ids)} scenario(s): {', '.join(ids)}")
        for n, sid in enumerate(ids, start=1):
            result = ScenarioResult(sid)
            guide.say(f"scenario {n}/{len(ids)} {sid}: {result.title}")
            started = time.monotonic()
            simulated = _simulated_for(sid, config)
            budget = lab.timing(simulated).scenario_s
            try:
                async with asyncio.timeout(budget):
                    await RUNNERS[sid](lab, result)
            except TimeoutError:
                result.fail(f"did not finish within {budget:g} s")
            except asyncio.CancelledError:
                # Ctrl-C: stop here, but still hand back the report of what ran (asyncio.run returns
                # it, since the cancellation was answered).
                result.fail("interrupted (Ctrl-C)")
                report.interrupted = True
            except Exception as exc:  # one scenario's crash is that scenario's failure
                result.fail(f"error: {type(exc).__name__}: {exc}")
            result.elapsed_s = time.monotonic() - started
            report.results.append(result)
            verdict = result.summary if result.status is Status.PASSED else result.reason
            guide.say(f"  {result.status.value}: {verdict}")
            if report.interrupted:
                for rest in ids[n:]:
                    skipped = ScenarioResult(rest)
                    skipped.skip("not run: the kit was interrupted")
                    report.results.append(skipped)
                break
        report.finished = time.time()
    return report


def _simulated_for(sid: str, config: LabConfig) -> bool:
    if sid in ("two_straps", "out_of_range", "power_cycle", "kill_rerun"):
        return config.hr_simulated
    if sid == "line_clock_wrap":
        return config.line_simulated
    return config.serial_simulated
