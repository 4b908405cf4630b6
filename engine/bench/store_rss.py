"""`ridesync bench store`, memory: RSS per open ride, each case in a fresh interpreter so freed memory of
earlier phases does not hide the growth.

- `bench_rss`: one bike document per layout (batch schema 1/2, folds every 10 s or hourly) and the list of
  maps: what holding the Automerge document costs.
- `bench_backend_rss`: a backend replica holding whole rides (merged and persisted, then viewed), as a
  server does: the document plus what the store keeps once the ride's view was resolved. Beside it, the
  same with every device document's decoded samples kept, as the store did before it kept only views.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from engine.store.samplelog import DEFAULT_FOLD_INTERVAL_S

# Layouts of a bike document compared throughout: (batch schema, fold interval in seconds).
LAYOUTS = {
    "schema1_10s": (1, DEFAULT_FOLD_INTERVAL_S),
    "schema2_10s": (2, DEFAULT_FOLD_INTERVAL_S),
    "schema2_hourly": (2, 3600.0),
}


def bench_rss(rides: int, hours: float) -> dict[str, Any]:
    """Each layout in a fresh interpreter, so freed memory of earlier phases does not hide the growth: the
    RSS an open ride's bike document costs a backend that holds it.

    The list-of-maps rides are ~30x larger, so fewer of them already stand well above allocator noise."""
    samples = int(hours * 3600)
    out: dict[str, Any] = {"samples_per_ride": samples}
    counts = {label: rides for label in LAYOUTS} | {"list_of_maps_10s": max(rides // 5, 3)}
    for label, count in counts.items():
        proc = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, label, str(count), str(samples)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        out[f"{label}_rides"] = count
        out[f"{label}_rss_bytes_per_open_ride"] = int(proc.stdout.split()[-1])
    base = max(out["schema1_10s_rss_bytes_per_open_ride"], 1)
    for label in ("schema2_10s", "schema2_hourly", "list_of_maps_10s"):
        out[f"ratio_{label}_vs_schema1_10s"] = round(out[f"{label}_rss_bytes_per_open_ride"] / base, 3)
    return out


_RSS_CHILD = """
import gc, sys
from engine.bench.ridegen import bench_store_sample as sample
from engine.bench.store import LAYOUTS, build_maps, build_packed, rss_bytes
from engine.store.replica import DEFAULT_FOLD_INTERVAL_S
label, rides, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if label in LAYOUTS:
    batch_schema, interval = LAYOUTS[label]
    build = lambda: build_packed(samples, interval, batch_schema)
else:
    build = lambda: build_maps(samples, DEFAULT_FOLD_INTERVAL_S)
sample(samples - 1)  # the benchmark's ride itself is made before measuring
build()  # warm up imports and allocator pools
gc.collect()
before = rss_bytes()
docs = [build() for _ in range(rides)]
gc.collect()
print((rss_bytes() - before) // rides)
"""


def bench_backend_rss(rides: int, hours: float) -> dict[str, Any]:
    samples = int(hours * 3600)
    out: dict[str, Any] = {"samples_per_ride": samples, "rides": rides}
    cases = [
        ("schema1_10s", "samples_kept"),
        ("schema1_10s", "view_kept"),
        ("schema2_10s", "view_kept"),
        ("schema2_hourly", "view_kept"),
    ]
    for layout, keep in cases:
        proc = subprocess.run(
            [sys.executable, "-c", _BACKEND_CHILD, layout, keep, str(rides), str(samples)],
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
        out[f"{layout}_{keep}_rss_bytes_per_open_ride"] = int(proc.stdout.split()[-1])
    before = max(out["schema1_10s_samples_kept_rss_bytes_per_open_ride"], 1)
    for layout, keep in cases[1:]:
        name = f"{layout}_{keep}"
        out[f"ratio_{name}_vs_schema1_10s_samples_kept"] = round(
            out[f"{name}_rss_bytes_per_open_ride"] / before, 3
        )
    return out


_BACKEND_CHILD = """
import sys, tempfile
from pathlib import Path
from engine.bench.ridegen import bench_store_sample as sample
from engine.bench.store import LAYOUTS, build_packed, rss_per_ride
from engine.ride.schema import DocKind, DocRef, Role
from engine.store import ReplicaStore
layout, keep, rides, samples = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
batch_schema, interval = LAYOUTS[layout]
sample(samples - 1)  # the benchmark's ride itself is made before measuring
backend = ReplicaStore(Path(tempfile.mkdtemp()), device_id="backend", role=Role.BACKEND)
kept = []

def open_ride(name):
    ref = DocRef(name, DocKind.BIKE, "bike-b")
    doc = build_packed(samples, interval, batch_schema)
    backend.ensure_doc(ref)
    backend.merge_remote(ref.doc_id, doc)
    del doc
    backend.view(name)
    if keep == "samples_kept":
        kept.append(backend.ride_docs(name))

print(rss_per_ride(open_ride, rides))
"""
