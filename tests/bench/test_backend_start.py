"""`ridesync bench backend-start` runs and measures what it says: the lazy open holds no ride, the
baseline every ride, and both read the same ride back (numbers are reported, never asserted)."""

from __future__ import annotations

import argparse

from engine.bench import backend_start


def test_bench_backend_start_smoke() -> None:
    out = backend_start.run(argparse.Namespace(rides=4, samples=20, reps=1))
    assert out["lazy"]["rides_in_memory"] == 0
    assert out["load_all"]["rides_in_memory"] == 4
    lazy, load_all = out["runs"]["lazy"][0], out["runs"]["load_all"][0]
    assert lazy["first_view_samples"] == load_all["first_view_samples"] == 20
    assert out["db_bytes"] > 0
