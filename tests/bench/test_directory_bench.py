"""`ridesync bench directory` runs and measures what it says: N rides imported, R registered beside the JSON
baseline that rewrites them all (numbers are reported, never asserted)."""

from __future__ import annotations

import argparse

from engine.bench import directory


def test_bench_directory_smoke() -> None:
    out = directory.run(argparse.Namespace(rides=300, classes=7, registrations=5))
    assert (out["rides"], out["registrations"]) == (300, 5)
    assert out["sqlite"]["file_bytes"] > 0 and out["sqlite"]["register"]["max_ms"] >= 0
    # Every ride of the baseline is in its file; the SQLite side holds none of them as Python objects.
    assert out["json_baseline"]["file_bytes"] > 300 * 50
    assert out["json_baseline"]["python_bytes_held"] > out["sqlite"]["python_bytes_held"]
