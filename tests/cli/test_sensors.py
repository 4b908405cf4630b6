"""`ridesync sensors` end to end: a simulated strap on the virtual radio and a simulated bike on a pty,
read through the real bleak and pyserial paths, printed as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

RIDESYNC = str(Path(sys.executable).with_name("ridesync"))


@pytest.mark.slow
def test_sim_strap_and_bike_stream_json_lines() -> None:
    proc = subprocess.run(
        [RIDESYNC, "sensors", "--hr", "sim:2", "--serial", "sim", "--duration", "6", "--speed", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1]["kind"] == "summary" and lines[-1]["sources"] == 3
    readings = [d for d in lines if d["kind"] not in {"state", "summary"}]
    kinds_by_source: dict[str, set[str]] = defaultdict(set)
    seqs: dict[str, list[int]] = defaultdict(list)
    for d in readings:
        assert {"t", "source", "seq", "kind", "value", "unit"} <= d.keys()
        kinds_by_source[d["source"]].add(d["kind"])
        seqs[d["source"]].append(d["seq"])
    hr_sources = [s for s, k in kinds_by_source.items() if "heart_rate" in k]
    assert len(hr_sources) == 2
    assert any({"cadence", "power"} <= k for k in kinds_by_source.values())
    for source, seq in seqs.items():
        assert seq == sorted(set(seq)), f"{source}: sequence numbers not strictly increasing"
    states = {(d["source"], d["state"]) for d in lines if d["kind"] == "state"}
    assert all((s, "streaming") in states for s in kinds_by_source)


def test_bad_spec_is_a_json_error() -> None:
    proc = subprocess.run(
        [RIDESYNC, "sensors", "--serial", "sim:0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "error" in json.loads(proc.stderr.strip().splitlines()[-1])
    assert "Traceback" not in proc.stderr


def test_nothing_to_read_is_a_json_error() -> None:
    proc = subprocess.run([RIDESYNC, "sensors"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert json.loads(proc.stderr)["error"].startswith("give --hr")


def _run_sensors(*args: str, timeout: float = 180) -> tuple[list[dict[str, Any]], str]:
    proc = subprocess.run(
        [RIDESYNC, "sensors", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def _states(lines: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for d in lines:
        if d["kind"] == "state":
            out[str(d["source"])].append(str(d["state"]))
    return out


@pytest.mark.slow
def test_six_straps_and_four_bikes_stream_and_only_the_strap_walked_away_goes_lost() -> None:
    """Six straps share one adapter's single discovery (BlueZ refuses a second one); strap 2 walks out
    of range for longer than the supervision timeout, goes lost, and streams again; nothing else does."""
    lines, _ = _run_sensors(
        "--hr", "sim:6", "--serial", "sim:4", "--duration", "25", "--speed", "5",
        "--sim-out-of-range", "2:6@2", "--json",
    )  # fmt: skip
    assert lines[-1]["kind"] == "summary" and lines[-1]["sources"] == 10
    states = _states(lines)
    assert len(states) == 10
    walked = "ble-hr:F0:52:53:48:00:02"
    for source, seen in states.items():
        if source == walked:
            assert seen[:2] == ["connecting", "streaming"]
            assert "lost" in seen
            assert "streaming" in seen[seen.index("lost") :], seen
        else:
            assert seen == ["connecting", "streaming"], (source, seen)
    heart: dict[str, int] = defaultdict(int)
    for d in lines:
        if d["kind"] in {"heart_rate", "cadence"}:
            heart[d["source"]] += 1
    assert len(heart) == 10 and min(heart.values()) > 0
    lost_at = next(d["t"] for d in lines if d.get("state") == "lost")
    assert any(d["source"] == walked and d["kind"] == "heart_rate" and d["t"] > lost_at for d in lines)


@pytest.mark.slow
def test_twelve_straps_over_two_simulated_adapters_all_stream() -> None:
    lines, _ = _run_sensors("--hr", "sim:12@2", "--duration", "10", "--speed", "5", "--json")
    streaming = [d for d in lines if d.get("state") == "streaming"]
    assert len({d["source"] for d in streaming}) == 12
    assert sorted(d["adapter"] for d in streaming) == ["sim0"] * 6 + ["sim1"] * 6
    rates = {d["source"] for d in lines if d["kind"] == "heart_rate"}
    assert len(rates) == 12


def test_budget_overrun_is_one_line_naming_the_fix() -> None:
    proc = subprocess.run(
        [RIDESYNC, "sensors", "--hr", "sim:8", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert json.loads(proc.stderr)["error"] == (
        "8 simulated straps need 2 adapters (7 connection slots each), 1 given: use --hr sim:8@2"
    )


@pytest.mark.skipif(
    Path("/run/dbus/system_bus_socket").exists(), reason="this machine has a system bus (maybe BlueZ)"
)
def test_no_bluetooth_is_one_line_not_a_traceback() -> None:
    proc = subprocess.run(
        [RIDESYNC, "sensors", "--hr", "AA:BB:CC:DD:EE:FF", "--duration", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stderr)["error"].startswith("Bluetooth unavailable")


@pytest.mark.slow
def test_three_simulated_ble_bikes_stream_cadence_and_power_through_bleak() -> None:
    """`--bike sim:3`: an FTMS trainer, a CPS power meter and a CSC cadence pod on the virtual radio, read
    through bleak; the streaming state names the service and carries Device Information. The pod has no
    power meter (CSC carries none), so its lines are cadence and speed only."""
    lines, _ = _run_sensors("--bike", "sim:3", "--duration", "4", "--speed", "5", "--json")
    assert lines[-1]["kind"] == "summary" and lines[-1]["sources"] == 3
    streaming = {d["source"]: d for d in lines if d.get("state") == "streaming"}
    assert sorted(d["service"] for d in streaming.values()) == ["cps", "csc", "ftms"]
    for d in streaming.values():
        assert d["device_info"]["manufacturer"] == "ridesync" and d["device_info"]["firmware"]
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seqs: dict[str, list[int]] = defaultdict(list)
    for d in lines:
        if d["kind"] not in {"state", "summary"}:
            values[d["source"]][d["kind"]].append(d["value"])
            seqs[d["source"]].append(d["seq"])
    by_service = {streaming[s]["service"]: v for s, v in values.items()}
    for service in ("ftms", "cps", "csc"):
        cadence = by_service[service]["cadence"]
        assert len(cadence) >= 3 and all(40 <= c <= 130 for c in cadence), (service, cadence)
    for service in ("ftms", "cps"):
        assert all(50 <= p <= 400 for p in by_service[service]["power"]) and by_service[service]["power"]
    assert "power" not in by_service["csc"]
    assert by_service["ftms"]["resistance"] and by_service["csc"]["speed"]
    for source, seq in seqs.items():
        assert seq == list(range(1, len(seq) + 1)), source


def test_straps_and_bikes_over_one_simulated_adapter_is_one_line_naming_the_limit() -> None:
    proc = subprocess.run(
        [RIDESYNC, "sensors", "--hr", "sim:5", "--bike", "sim:3", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stderr)["error"] == (
        "3 simulated bike(s) and 5 device(s) already on adapter sim0 need 8 connection slots, it has 7: "
        "use fewer"
    )
