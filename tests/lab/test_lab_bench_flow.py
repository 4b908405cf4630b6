"""The kit's bench flow (prompts for a human, effects watched on a real port path), with a robot doing
what each prompt asks: the pty simulator stands behind a path the kit takes for a real device."""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.serial.peloton.synth import BikeSample
from adapters.serial.sim.line_sensor import LineSensor
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort
from adapters.serial.sim.sensor_clock import MILLIS_OVERFLOW_MS
from engine.lab import ble, context
from engine.lab.context import Lab, LabConfig, Timing
from engine.lab.guide import Guide
from engine.lab.kit import run_lab

# The bench's waits, shortened: the robot is quicker than a person.
QUICK_BENCH = Timing(
    connect_s=15.0,
    settle_s=0.5,
    stream_s=1.0,
    lose_s=10.0,
    recover_s=20.0,
    absent_s=0.0,
    probe_s=1.0,
    calibration_s=1.0,
    scenario_s=60.0,
)


class Robot(Guide):
    """Does what a prompt asks, as the person at the bench would."""

    def __init__(self, actions: dict[str, Callable[[], None]]) -> None:
        super().__init__(io.StringIO(), interactive=False)
        self.actions = actions
        self.prompts: list[str] = []

    def prompt(self, text: str, wait_s: float) -> None:
        super().prompt(text, wait_s)
        self.prompts.append(text)
        for start, action in self.actions.items():
            if text.startswith(start):
                asyncio.get_running_loop().call_later(0.2, action)


@pytest.mark.slow
async def test_a_line_sensor_on_a_bench_port_unplugged_and_run_across_the_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "BENCH", QUICK_BENCH)
    port = PtyPort(tmp_path / "ttyACM0")
    port.plug()
    profile = RideProfile(tuple(BikeSample(80, 0.0, 0) for _ in range(600)))
    sensor = LineSensor(port, profile=profile, speed=1.0, clock_start_ms=MILLIS_OVERFLOW_MS - 10_000)
    robot = Robot({"unplug": port.unplug, "plug": port.plug})
    config = LabConfig(
        serial=port.path,
        protocol="line",
        line_run_min=0.05,
        line_uptime_min=(MILLIS_OVERFLOW_MS - 1000) / 60_000,
        only=("serial_unplug", "calibration", "line_clock_wrap"),
    )
    running = asyncio.create_task(sensor.run())
    try:
        report = (await run_lab(config, robot)).to_json()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        port.close()

    scenarios = report["scenarios"]
    assert {k: v["status"] for k, v in scenarios.items()} == {
        "serial_unplug": "passed",
        "calibration": "skipped",
        "line_clock_wrap": "passed",
    }, {k: v["reason"] for k, v in scenarios.items()}
    assert report["simulated"] == {"hr": False, "serial": False, "line": False}
    unplug = scenarios["serial_unplug"]["measured"]
    assert unplug["timed_from"] == "prompt" and unplug["time_to_recover_s"] > 0
    assert robot.prompts[0].startswith(f"unplug the USB serial adapter ({port.path})")
    assert robot.prompts[1].startswith("plug the USB serial adapter back in")
    wrap = scenarios["line_clock_wrap"]["measured"]
    assert wrap["crossed"] == [{"mark": "millis()*1024 overflows uint32", "at": "69:54.304"}]
    assert wrap["resyncs"] == 0 and wrap["dips"] == 0 and wrap["cadence_readings"] >= 2


async def test_a_real_line_sensor_without_a_long_run_is_skipped_with_how_to() -> None:
    config = LabConfig(line="/dev/ttyACM9", only=("line_clock_wrap",))
    report = (await run_lab(config, Guide(io.StringIO()))).to_json()
    wrap = report["scenarios"]["line_clock_wrap"]
    assert wrap["status"] == "skipped"
    assert "--line-run-min 72" in wrap["reason"]
    config.line_run_min = 5
    report = (await run_lab(config, Guide(io.StringIO()))).to_json()
    assert "not its 70th" in report["scenarios"]["line_clock_wrap"]["reason"]


@pytest.mark.slow
async def test_the_separate_run_is_killed_while_it_streams() -> None:
    """The bench's killed run is a real `ridesync sensors` process; `--hr sim` lets it stream here."""
    strap: Any = SimpleNamespace(selector="sim")
    lab = Lab(LabConfig(), Guide(io.StringIO()))
    out = await ble._run_and_kill(lab, strap, QUICK_BENCH)
    assert out["killed_while_streaming"] is True, out
    assert out["first_run_exit"] == -signal.SIGKILL
    assert out["first_run"] == "ridesync sensors --hr sim"


async def test_a_separate_run_that_cannot_stream_says_why() -> None:
    strap: Any = SimpleNamespace(selector="sim:0")
    lab = Lab(LabConfig(), Guide(io.StringIO()))
    out = await ble._run_and_kill(lab, strap, QUICK_BENCH)
    assert out["killed_while_streaming"] is False
    assert "sim:N needs" in out["first_run_error"] and out["first_run_exit"] == 2
