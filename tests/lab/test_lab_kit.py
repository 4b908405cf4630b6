"""`ridesync lab` on the simulator: the whole kit, non-interactively, through the command line."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.lab import kit
from engine.lab.context import Lab, LabConfig
from engine.lab.guide import Guide
from engine.lab.report import KEY_MEASUREMENTS, SCENARIOS, ScenarioResult

# The kit's own hang guards are per scenario; this bounds the whole simulated run.
WHOLE_RUN_BUDGET_S = 60


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object], str]:
    rc = main(["lab", *argv])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out.strip() else {}, err


@pytest.mark.slow
def test_the_whole_kit_passes_on_the_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lab.json"
    argv = ["--hr", "sim:2", "--serial", "sim", "--yes", "--json", "--report", str(path)]
    rc, report, err = _run(argv, capsys)

    scenarios = report["scenarios"]
    assert isinstance(scenarios, dict)
    assert list(scenarios) == list(SCENARIOS), "every scenario ran, in order"
    failed = {sid: s["reason"] for sid, s in scenarios.items() if s["status"] != "passed"}
    assert failed == {}, err
    assert rc == 0 and report["ok"] is True
    assert report["summary"] == {"passed": len(SCENARIOS), "failed": 0, "skipped": 0}
    assert report["simulated"] == {"hr": True, "serial": True, "line": True}
    assert isinstance(report["elapsed_s"], float) and report["elapsed_s"] < WHOLE_RUN_BUDGET_S

    for sid, keys in KEY_MEASUREMENTS.items():
        measured = scenarios[sid]["measured"]
        missing = [k for k in keys if measured.get(k) is None]
        assert missing == [], f"{sid} lacks {missing}"
        assert all(c["ok"] for c in scenarios[sid]["checks"]), sid

    # What each key measurement means, on the simulator.
    assert [s["notifications"] > 0 for s in scenarios["two_straps"]["measured"]["straps"]] == [True, True]
    for sid in ("out_of_range", "power_cycle"):
        m = scenarios[sid]["measured"]
        assert 0 < m["time_to_lost_s"] < 10 and m["time_to_recover_s"] < 20
        assert m["first_seq_after"] == m["last_seq_before"] + 1
        assert m["other_strap"]["links_lost"] == 0 and m["other_strap"]["readings_meanwhile"] > 0
    stale = scenarios["kill_rerun"]["measured"]
    assert stale["advertising_after_kill"] is False and stale["stale_connection_after_kill"] is True
    assert stale["stale_connection_after_rerun"] is False
    assert scenarios["serial_unplug"]["measured"]["counters"]["port_losses"] == 1
    cal = scenarios["calibration"]["measured"]
    assert cal["pct_reported"] is True and isinstance(cal["calibration"], str)
    wrap = scenarios["line_clock_wrap"]["measured"]
    assert wrap["resyncs"] == 0 and wrap["cadence_max_error_pct"] <= 2
    assert [m["readings_after"] > 0 and m["readings_before"] > 0 for m in wrap["crossed"]] == [True, True]
    assert wrap["millis_overflow_firmware_max_error_pct"] > 50, "the check can fail"

    # The same report on disk, and the human's table on stderr.
    assert json.loads(path.read_text()) == report
    assert "7 scenarios, 7 passed, 0 failed, 0 skipped" in err
    assert "lab [sim] strap 1" in err and f"report: {path}" in err


def test_scenarios_without_their_device_are_skipped_with_what_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--serial", "sim", "--protocol", "line", "--only", "two_straps,kill_rerun,calibration"]
    rc, report, err = _run([*argv, "--yes", "--json", "--report", str(tmp_path / "r.json")], capsys)
    assert rc == 0 and report["ok"] is True
    scenarios = report["scenarios"]
    assert isinstance(scenarios, dict)
    assert {sid: s["status"] for sid, s in scenarios.items()} == {
        "two_straps": "skipped",
        "kill_rerun": "skipped",
        "calibration": "skipped",
    }
    assert "--hr" in scenarios["two_straps"]["reason"]
    assert "Peloton bikes only" in scenarios["calibration"]["reason"]
    assert "0 passed, 0 failed, 3 skipped" in err


def test_a_failed_check_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(lab: Lab, r: ScenarioResult) -> None:
        r.measured["pct_reported"] = False
        r.check(True, "resistance readings arrived")
        r.check(False, "resistance readings carry a percentage")

    async def crashes(lab: Lab, r: ScenarioResult) -> None:
        raise RuntimeError("adapter on fire")

    monkeypatch.setitem(kit.RUNNERS, "calibration", broken)
    monkeypatch.setitem(kit.RUNNERS, "serial_unplug", crashes)
    argv = ["--serial", "sim", "--only", "serial_unplug,calibration", "--yes", "--json"]
    rc, report, err = _run([*argv, "--report", str(tmp_path / "r.json")], capsys)
    assert rc == 1 and report["ok"] is False
    scenarios = report["scenarios"]
    assert isinstance(scenarios, dict)
    assert scenarios["calibration"]["status"] == "failed"
    assert scenarios["calibration"]["reason"] == "resistance readings carry a percentage"
    assert scenarios["serial_unplug"]["reason"] == "error: RuntimeError: adapter on fire"
    assert "0 passed, 2 failed" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--yes"], "nothing to test"),
        (["--serial", "sim", "--only", "nosuch"], "unknown scenario nosuch"),
        (["--hr", "sim:0"], "sim:N needs"),
        (["--serial", "sim", "--baud", "0"], "--baud must be positive"),
    ],
)
def test_bad_options_are_one_json_error(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["lab", *argv, "--report", str(tmp_path / "r.json")])
    _out, err = capsys.readouterr()
    assert rc == 2
    assert message in json.loads(err.strip().splitlines()[-1])["error"]
    assert not (tmp_path / "r.json").exists()


async def test_an_interactive_run_waits_for_enter() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as stdin:
        guide = Guide(io.StringIO(), interactive=True, stdin=stdin)
        waiting = asyncio.ensure_future(guide.ready("wear both straps"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        os.write(write_fd, b"\n")
        async with asyncio.timeout(5):
            await waiting
    os.close(write_fd)


def test_the_plan_follows_only_and_skip() -> None:
    assert kit.plan(LabConfig(serial="sim")) == list(SCENARIOS)
    assert kit.plan(LabConfig(only=("calibration", "two_straps"))) == ["two_straps", "calibration"]
    assert "kill_rerun" not in kit.plan(LabConfig(skip=("kill_rerun",)))


async def test_ctrl_c_still_gives_the_report_of_what_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    started = asyncio.Event()

    async def passes(lab: Lab, r: ScenarioResult) -> None:
        r.summary = "fine"

    async def hangs(lab: Lab, r: ScenarioResult) -> None:
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setitem(kit.RUNNERS, "serial_unplug", passes)
    monkeypatch.setitem(kit.RUNNERS, "calibration", hangs)
    config = LabConfig(serial="sim", only=("serial_unplug", "calibration", "line_clock_wrap"))
    running = asyncio.create_task(kit.run_lab(config, Guide(io.StringIO())))
    await started.wait()
    running.cancel()  # what asyncio.run does on Ctrl-C
    report = (await running).to_json()
    assert report["interrupted"] is True and report["ok"] is False
    assert {k: v["status"] for k, v in report["scenarios"].items()} == {
        "serial_unplug": "passed",
        "calibration": "failed",
        "line_clock_wrap": "skipped",
    }
    assert report["scenarios"]["line_clock_wrap"]["reason"] == "not run: the kit was interrupted"
