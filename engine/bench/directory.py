"""`ridesync bench directory`: what one registration costs with N rides already in the ride directory, and
what the directory holds in Python memory.

The directory (engine/dashboard/directory.py) is built with N rides in C classes (imported from a
`rides.json`, as a data dir from before the SQLite directory would be), then R more rides are registered
one by one (each the upsert a bike connect makes) and looked up (`ride`, `class_rides`, `class_history`).
The baseline beside it is what a registration did when the directory was one JSON file: every ride ever
registered serialized and the whole file rewritten (temp file + rename), and every ride held as a Python
object; its memory is measured with tracemalloc the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from engine.bench._servers import ms
from engine.dashboard import directory
from engine.dashboard.directory import DIRECTORY_FILE, LEGACY_FILE, RideDirectory, RideEntry

_DASHBOARD = str(Path(directory.__file__).parent / "*")

NAME = "directory"
HELP = "ride directory: one registration's cost and Python memory at N stored rides, vs the old JSON file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rides", type=int, default=100_000, help="rides already stored (default 100000)")
    parser.add_argument("--classes", type=int, default=1000, help="classes they are in (default 1000)")
    parser.add_argument("--registrations", type=int, default=50, help="registrations timed (default 50)")


def _rows(n: int, classes: int) -> list[dict[str, object]]:
    # 25 bikes per class, several rides each: the shape of a studio's day after day.
    rows: list[dict[str, object]] = []
    for i in range(n):
        ride, cls, device = f"ride-{i:07d}", f"class-{i % classes:05d}", f"bike-{i % 25:02d}"
        rows.append({"ride_id": ride, "class": cls, "device": device, "name": f"Rider {i % 25}",
                     "registered": 1_700_000_000.0 + i})  # fmt: skip
    return rows


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"median_ms": ms(statistics.median(ordered)), "max_ms": ms(ordered[-1])}


def _sqlite(root: Path, rows: list[dict[str, object]], registrations: int) -> dict[str, Any]:
    (root / LEGACY_FILE).write_text(json.dumps({"rides": rows}, separators=(",", ":")), "utf-8")
    t0 = time.perf_counter()
    d = RideDirectory.in_dir(root)
    imported = time.perf_counter() - t0
    try:
        tracemalloc.start()
        register, lookup = [], []
        for i in range(registrations):
            t = time.perf_counter()
            d.register(f"class-{i % 7:05d}", f"bike-{i % 25:02d}", f"new-{i:05d}")
            register.append(time.perf_counter() - t)
            t = time.perf_counter()
            d.ride(f"ride-{i * 997 % len(rows):07d}")
            d.class_rides(f"class-{i % 7:05d}")
            d.class_history(f"class-{i % 7:05d}")
            lookup.append(time.perf_counter() - t)
        # What the directory's own code still holds (not this loop's lists of timings).
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, _DASHBOARD)])
        tracemalloc.stop()
        held = sum(stat.size for stat in snapshot.statistics("filename"))
        files = sum(p.stat().st_size for p in root.glob(f"{DIRECTORY_FILE}*"))
        return {"import_ms": ms(imported), "register": _summary(register),
                "ride+class_rides+class_history": _summary(lookup), "python_bytes_held": held,
                "file_bytes": files}  # fmt: skip
    finally:
        d.close()


def _json_baseline(root: Path, rows: list[dict[str, object]], registrations: int) -> dict[str, Any]:
    """The JSON directory's registration: every entry serialized, the file rewritten; entries in memory."""
    tracemalloc.start()
    entries: dict[str, RideEntry] = {}
    for r in rows:
        ride = str(r["ride_id"])
        registered = float(r["registered"])  # type: ignore[arg-type]
        entries[ride] = RideEntry(ride, str(r["class"]), str(r["device"]), str(r["name"]), registered)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    path, tmp = root / LEGACY_FILE, root / "rides.tmp"
    register = []
    for i in range(registrations):
        t = time.perf_counter()
        entries[f"new-{i:05d}"] = RideEntry(f"new-{i:05d}", f"class-{i % 7:05d}", f"bike-{i % 25:02d}")
        body = [e.to_json() for e in sorted(entries.values(), key=lambda e: e.registered)]
        tmp.write_text(json.dumps({"rides": body}, separators=(",", ":")), "utf-8")
        os.replace(tmp, path)
        register.append(time.perf_counter() - t)
    return {"register": _summary(register), "python_bytes_held": held, "file_bytes": path.stat().st_size}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = _rows(args.rides, args.classes)
    with tempfile.TemporaryDirectory(prefix="ridesync-bench-dir-") as a, tempfile.TemporaryDirectory() as b:
        sqlite = _sqlite(Path(a), rows, args.registrations)
        baseline = _json_baseline(Path(b), rows, args.registrations)
    ratio = baseline["register"]["median_ms"] / max(sqlite["register"]["median_ms"], 1e-3)
    out = {"rides": args.rides, "classes": args.classes, "registrations": args.registrations}
    return {**out, "sqlite": sqlite, "json_baseline": baseline, "register_median_ratio": round(ratio, 1)}
