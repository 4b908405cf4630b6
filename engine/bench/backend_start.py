"""`ridesync bench backend-start`: opening the backend's store over N stored rides, and what it holds.

The backend's replica loads each ride at its first use (engine/store/README.md, "Loading"). The
baseline beside it does what every start did before: the same open, then every ride loaded
(`ReplicaCore._load_all`, the bike's and app's path). Each is timed in a fresh interpreter (so neither
sees the other's memory) on the same storage, alternately: open time and the process's RSS after it,
then the time to read one ride (its view), which the lazy open pays at that ride's first use.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine.ride.samples import Sample
from engine.ride.schema import Role
from engine.store import ReplicaStore

NAME = "backend-start"
HELP = "open the backend's store over N stored rides: lazy (each ride at first use) vs loading all"

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from engine.ride.schema import Role
from engine.store import ReplicaStore

mode, directory, ride = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

def rss_mib():
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

base = rss_mib()
t0 = time.perf_counter()
store = ReplicaStore(directory, device_id="backend", role=Role.BACKEND)
if mode == "load_all":
    store._load_all()  # what the backend's open did before it loaded rides lazily
opened = time.perf_counter() - t0
after_open = rss_mib()
in_memory = len(store.loaded_rides())
t1 = time.perf_counter()
samples = sum(store.view(ride).samples.values())
first_use = time.perf_counter() - t1
print(json.dumps({
    "open_s": opened,
    "rides_in_memory": in_memory,
    "rss_open_mib": after_open - base,
    "first_view_s": first_use,
    "first_view_samples": samples,
}))
store.close()
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rides", type=int, default=300, help="stored rides (default 300)")
    parser.add_argument("--samples", type=int, default=600, help="samples per ride (default 600: 10 min)")
    parser.add_argument("--reps", type=int, default=3, help="alternating runs of each mode (default 3)")


def build(directory: Path, rides: int, samples: int) -> None:
    """`rides` finished rides on a backend's store, as bikes that fold every 10 s would sync them."""
    t0 = 1_795_000_000.0
    with (
        ReplicaStore(directory / "backend", device_id="backend", role=Role.BACKEND) as backend,
        ReplicaStore(directory / "bike", device_id="bike-1", role=Role.BIKE) as bike,
    ):
        for n in range(rides):
            ride = f"ride-{n:05d}"
            bike.start_ride(ride, t=t0)
            for fold in range(0, samples, 10):
                seqs = range(fold, min(fold + 10, samples))
                bike.append_samples(ride, [Sample(seq=i, t=t0 + i, hr=120 + i % 40) for i in seqs])
                bike.fold(ride)
            bike.end_ride(ride, t=t0 + samples, duration_s=float(samples))
            for ref in bike.ride_refs(ride):
                backend.ensure_doc(ref)
                backend.merge_remote(ref.doc_id, bike.doc(ref.doc_id))
            backend.bind_ride_owner(ride, "bike-1")
            backend.finalize(ride)
            bike.release_ride(ride)  # the bike's copy is not what is measured: keep the builder small
            backend.release_ride(ride)


def _child(mode: str, directory: Path, ride: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(directory), ride],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {proc.stderr[-800:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ridesync-bench-start-") as tmp:
        root = Path(tmp)
        build(root, args.rides, args.samples)
        directory = root / "backend"
        runs: dict[str, list[dict[str, Any]]] = {"lazy": [], "load_all": []}
        for _ in range(args.reps):
            for mode, results in runs.items():
                results.append(_child(mode, directory, "ride-00000"))
        db_bytes = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())

    def median(mode: str, key: str) -> float:
        values = sorted(float(r[key]) for r in runs[mode])
        return values[len(values) // 2]

    out: dict[str, Any] = {"rides": args.rides, "samples_per_ride": args.samples, "db_bytes": db_bytes}
    for mode in runs:
        out[mode] = {
            "open_s": round(median(mode, "open_s"), 4),
            "rss_open_mib": round(median(mode, "rss_open_mib"), 1),
            "rides_in_memory": runs[mode][0]["rides_in_memory"],
            "first_view_s": round(median(mode, "first_view_s"), 4),
        }
    out["open_speedup"] = round(out["load_all"]["open_s"] / max(out["lazy"]["open_s"], 1e-9), 1)
    out["runs"] = runs
    return out
