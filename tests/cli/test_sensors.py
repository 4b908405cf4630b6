"""`ridesync sensors` end to end: a simulated strap on the virtual radio and a simulated bike on a pty,
read through the real bleak and pyserial paths, printed as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

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
