"""`ridesync bench sync`: the device sync client against `ridesync serve`, next to the naive baseline.

- **Offline reconcile** (engine/bench/sync_offline.py): the cost curve of a bike that recorded 5 min,
  30 min, 4 h and 8 h offline and then connects and syncs, as it does now (schema 2 batches, lazy offline
  folding) and as it did (schema 1, 10 s folds): wall time until the backend has acknowledged every
  document (`reconciled`) and until it finalized the ended ride, bytes on the wire (both directions,
  after permessage-deflate, counted by a fault-free relay), CPU to fold and to resolve, backend RSS per
  reconciled ride. Baseline: upload the whole saved documents in one HTTP POST to a server that loads
  and stores them durably. **Live**: 30 min synced fold by fold (10 s), schema 2 next to schema 1.
- **Fleet**: N bikes (default 500) riding at once, multiplexed in a few processes, each appending one
  sample per second and folding every 10 s: acknowledgement latency (fold → the backend acknowledged
  heads that include it; every fold an acknowledgement covers counts, the oldest included) p50/p99, and
  `/healthz` latency polled every 100 ms meanwhile. Two shapes: **spread** (joins spread over 80% of a
  warm-up, folds after it measured) and **burst** (a class starting: every bike joins within
  `--burst-join-s`, everything measured from the first join, including each bike's join: connect →
  its first acknowledgement; their folds then land within the same few seconds every 10 s). Baseline:
  the same bikes POST their whole saved document at every fold.
- **Backend RSS per open ride**: the serve process's RSS growth with the fleet connected, per ride, next
  to the baseline server's.

Every process opens its bikes' stores before a common start instant, so client setup is not counted.
Each fleet result carries the 1-minute load average before and during the run, and `server_side`: the
backend's own histograms from `/metrics` (time per sync message, time a reply waited for the group
commit, the writer's group and fsync times and group sizes), which separate the backend's work from
queueing for a CPU. Everything runs on loopback on this machine, clients and servers sharing its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.bench._servers import cpu_of, naive_server, rss_of, serve
from engine.bench._servers import ms as _ms
from engine.bench.ridegen import RideSignal
from engine.bench.sync_offline import bench_incremental, bench_live, bench_offline
from engine.metrics_scrape import scrape

NAME = "sync"
HELP = "offline reconcile time/bytes vs whole-document upload; ack latency with 500 bikes; backend RSS/ride"
T0 = 1_764_000_000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bikes", type=int, default=500, help="bikes riding at once in the fleet test")
    parser.add_argument("--processes", type=int, default=4, help="processes the fleet is multiplexed in")
    parser.add_argument("--fleet-seconds", type=float, default=60.0, help="how long the fleet rides")
    parser.add_argument(
        "--warmup",
        type=float,
        default=25.0,
        help="fleet: bikes join over 80%% of this; folds before it are not measured",
    )
    parser.add_argument("--repeats", type=int, default=3, help="offline reconciles timed per size (best)")
    parser.add_argument(
        "--offline-minutes",
        default="5,30,240,480",
        help="offline lengths reconciled, in minutes (comma-separated)",
    )
    parser.add_argument("--skip-fleet", action="store_true", help="only the offline figures")
    parser.add_argument("--burst-join-s", type=float, default=3.0, help="burst: every bike joins within this")
    parser.add_argument("--burst-seconds", type=float, default=30.0, help="burst: how long the fleet rides")
    parser.add_argument("--skip-spread", action="store_true", help="fleet: only the burst shape")
    parser.add_argument("--skip-burst", action="store_true", help="fleet: only the spread shape")
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="instead: the fleet on SQLite/1 node, PostgreSQL/1 node and PostgreSQL/N nodes (sync_nodes.py)",
    )
    parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="with --nodes: this postgresql:// database (default: a throwaway cluster)",
    )


# ---- helpers ---------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- fleet ---------------------------------------------------------------------------------------------


async def fleet_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One process's share of the fleet. mode "sync": DeviceSync per bike; "naive": POST whole documents."""
    import aiohttp

    from engine.device.connection import DeviceSync
    from engine.ride.schema import DocKind, Role
    from engine.store import ReplicaStore

    mode, url, duration = spec["mode"], spec["url"], float(spec["seconds"])
    root = Path(spec["dir"])
    latencies: list[float] = []
    joins: list[float] = []
    connects: list[float] = []
    counters = {"folds": 0, "acks": 0, "errors": 0, "joined": 0}
    stores: list[Any] = []
    # Every process opens its bikes' stores first; the ride starts for all of them at `start_at` (wall
    # clock, shared by the processes), so store setup is not mistaken for the backend's latency.
    start_in = max(0.0, float(spec["start_at"]) - time.time())
    counters["late_start_ms"] = 0
    start = time.monotonic() + start_in
    warm_until = start + float(spec["warmup"])
    join_s = float(spec["join_s"])
    stop_at = start + duration
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def connected(sync: Any, t0: float) -> None:
        """Upgrade + join/peer: the part of a join before any document syncs."""
        await sync.connected.wait()
        connects.append(time.monotonic() - t0)

    async def bike(index: int, token: str, device: str) -> None:
        rng = random.Random(device)
        signal = RideSignal(device)
        ride_id = f"fleet-{mode}-{device}"
        store = ReplicaStore(root / device, device_id=device, role=Role.BIKE)
        stores.append(store)
        store.start_ride(ride_id)
        own = next(r.doc_id for r in store.ride_refs(ride_id) if r.kind is DocKind.BIKE)
        pending: list[float] = []
        joined_at: list[float] = []

        def on_ack(doc_hex: str) -> None:
            if doc_hex != own:
                return
            now = time.monotonic()
            if joined_at:
                joins.append(now - joined_at.pop())
            if pending:
                counters["acks"] += 1
                # The acknowledged heads cover every fold made so far: each one's latency counts.
                latencies.extend(now - t0 for t0 in pending if t0 >= warm_until)
                pending.clear()

        sync = DeviceSync(store, url, token, on_ack=on_ack) if mode == "sync" else None
        # Bikes start spread over the join window; each folds on its own 10 s phase from then on.
        await asyncio.sleep(max(0.0, start - time.monotonic()) + rng.uniform(0, join_s))
        async with asyncio.TaskGroup() as tg:
            if sync is not None:
                if time.monotonic() >= warm_until:
                    joined_at.append(time.monotonic())
                    tg.create_task(connected(sync, joined_at[0]))
                sync.track(ride_id)
                runner = tg.create_task(sync.run())
            seq = 0
            next_t = time.monotonic()
            while time.monotonic() < stop_at:
                store.append_sample(ride_id, signal.sample(seq))
                seq += 1
                if store.maybe_fold(ride_id):
                    counters["folds"] += 1
                    t0 = time.monotonic()
                    if sync is not None:
                        pending.append(t0)
                        sync.notify(ride_id)
                    else:
                        try:
                            body = store.doc(own).save()
                            async with http.post(f"{url}/naive/{own}", data=body) as resp:
                                await resp.read()
                                ok = resp.status == 200
                        except (aiohttp.ClientError, OSError):
                            ok = False
                        if ok and t0 >= warm_until:
                            latencies.append(time.monotonic() - t0)
                        counters["acks" if ok else "errors"] += 1
                next_t += 1.0
                await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            if sync is not None:
                counters["joined"] += 1 if sync.connects else 0
                runner.cancel()

    async def check_start() -> None:
        await asyncio.sleep(0)  # after every bike's setup step has run
        counters["late_start_ms"] = max(0, round((time.monotonic() - start) * 1000))

    try:
        async with asyncio.TaskGroup() as tg:
            for index, (device, token) in enumerate(spec["bikes"]):
                tg.create_task(bike(index, token, device))
            tg.create_task(check_start())
    finally:
        await http.close()
        for store in stores:
            store.close()
    return {
        "latencies": latencies,
        "joins": joins,
        "connects": connects,
        "cpu_s": time.process_time(),
        **counters,
    }


_FLEET_CHILD = """
import asyncio, json, sys
from engine.bench.sync import fleet_worker
spec = json.loads(sys.stdin.read())
print(json.dumps(asyncio.run(fleet_worker(spec))))
"""


class HealthProbe:
    """GET /healthz every `interval_s` from a thread of this (otherwise idle) process: the latency an
    operator's probe sees while the fleet runs. A probe that times out counts as its timeout."""

    def __init__(self, url: str, interval_s: float = 0.1, timeout_s: float = 10.0) -> None:
        import threading

        self.url = url + "/healthz"
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import urllib.error
        import urllib.request

        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                    resp.read()
            except (urllib.error.URLError, OSError):
                self.failures += 1
                self.latencies.append(time.monotonic() - started)
            else:
                self.latencies.append(time.monotonic() - started)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "healthz_probes": len(lat),
            "healthz_failures": self.failures,
            "healthz_p50_ms": _ms(_pct(lat, 0.5) or 0.0),
            "healthz_p99_ms": _ms(_pct(lat, 0.99) or 0.0),
            "healthz_max_ms": _ms(max(lat, default=0.0)),
        }


def start_fleet_child(spec: dict[str, Any]) -> subprocess.Popen[str]:
    """One fleet process riding `spec["bikes"]` (fleet_worker); it prints its result as JSON on stdout."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _FLEET_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    return proc


def server_histograms(url: str) -> dict[str, Any]:
    """The backend's own view from `/metrics`: per incoming sync message, the time to gate, merge and
    answer, and the time a reply waited for the group commit, as bucket bounds (p50/p99 ≤ bound). Next to
    the devices' acknowledgement latency, it separates the backend's work from queueing for a CPU."""
    metrics = scrape(url)
    out: dict[str, Any] = {}
    for name, label in (
        ("ridesync_sync_message_seconds", "message"),
        ("ridesync_sync_commit_wait_seconds", "commit_wait"),
        ("ridesync_store_group_seconds", "group"),
        ("ridesync_store_commit_seconds", "fsync"),
        ("ridesync_store_group_jobs", "group_jobs"),
    ):
        buckets = metrics.buckets(name)
        total = buckets[-1][1] if buckets else 0.0
        out[f"{label}_count"] = int(total)
        for q in (0.5, 0.99):
            bound = next((b for b, n in buckets if total and n >= q * total), math.inf)
            if label == "group_jobs":
                out[f"{label}_p{int(q * 100)}_le"] = None if bound == math.inf else int(bound)
            else:
                out[f"{label}_p{int(q * 100)}_le_ms"] = None if bound == math.inf else _ms(bound)
    return out


def run_fleet(
    mode: str,
    url: str,
    server_pid: int,
    tmp: Path,
    *,
    args: argparse.Namespace,
    tokens: list[tuple[str, str]],
    shape: str = "spread",
) -> dict[str, Any]:
    if shape == "burst":
        seconds, warmup, join_s = args.burst_seconds, 0.0, args.burst_join_s
    else:
        seconds = args.fleet_seconds
        warmup = min(args.warmup, args.fleet_seconds / 2)
        join_s = warmup * 0.8
    shares = [tokens[i :: args.processes] for i in range(args.processes)]
    rss_before = rss_of(server_pid)
    cpu_before = cpu_of(server_pid)
    # Each simulated bike stands for a device with its own disk: their stores go to tmpfs when there is
    # one, so 500 bikes' fsyncs on this one disk do not stand in for the backend's latency.
    shm = Path("/dev/shm")
    bikes_root = Path(tempfile.mkdtemp(prefix="ridesync-fleet-", dir=shm)) if shm.is_dir() else tmp
    procs = []
    load_before = os.getloadavg()
    # Time for the processes to start and open their bikes' stores before the ride starts for all.
    start_at = time.time() + 3.0 + len(tokens) * 0.01
    probe = HealthProbe(url).__enter__()
    for n, share in enumerate(shares):
        spec = {
            "mode": mode,
            "url": url,
            "seconds": seconds,
            "warmup": warmup,
            "join_s": join_s,
            "start_at": start_at,
            "dir": str(bikes_root / f"{mode}-{shape}-{n}"),
            "bikes": share,
        }
        procs.append(start_fleet_child(spec))
    time.sleep(max(0.0, start_at - time.time()) + max(warmup, join_s) + (seconds - max(warmup, join_s)) / 2)
    rss_during = rss_of(server_pid)
    load_during = os.getloadavg()
    results = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            text = proc.stdout.read()
            proc.wait()
            try:
                results.append(json.loads(text.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                results.append(
                    {"latencies": [], "joins": [], "folds": 0, "acks": 0, "errors": 1, "joined": 0}
                )
    finally:
        probe.__exit__()
    server_cpu = cpu_of(server_pid) - cpu_before
    if bikes_root != tmp:
        shutil.rmtree(bikes_root, ignore_errors=True)
    lat = [x for r in results for x in r["latencies"]]
    joins = [x for r in results for x in r.get("joins", [])]
    connects = [x for r in results for x in r.get("connects", [])]
    out: dict[str, Any] = {
        "shape": shape,
        "bike_stores": "tmpfs" if bikes_root != tmp else "disk",
        "server_cpu_s": round(server_cpu, 2),
        "clients_cpu_s": round(sum(r.get("cpu_s", 0.0) for r in results), 2),
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_during": round(load_during[0], 2),
        "seconds": seconds,
        "joins_within_s": round(join_s, 2),
        "late_start_ms_max": max((r.get("late_start_ms", 0) for r in results), default=0),
        "warmup_s": warmup,
        "bikes": len(tokens),
        "processes": args.processes,
        "folds": sum(r["folds"] for r in results),
        "acks": sum(r["acks"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "measured": len(lat),
        "ack_p50_ms": _ms(_pct(lat, 0.5) or 0.0),
        "ack_p99_ms": _ms(_pct(lat, 0.99) or 0.0),
        "ack_max_ms": _ms(max(lat, default=0.0)),
        "ack_mean_ms": _ms(statistics.fmean(lat)) if lat else None,
        "server_rss_bytes_per_open_ride": (rss_during - rss_before) // max(len(tokens), 1),
        "server_rss_before_bytes": rss_before,
        **probe.summary(),
    }
    if mode == "sync":
        try:
            out["server_side"] = server_histograms(url)
        except (OSError, ValueError, IndexError):
            out["server_side"] = None
        # Joins are measured only in the burst (the spread shape joins during its unmeasured warm-up).
        out["joins_acked"] = len(joins)
        if joins:
            out["join_ack_p50_ms"] = _ms(_pct(joins, 0.5) or 0.0)
            out["join_ack_p99_ms"] = _ms(_pct(joins, 0.99) or 0.0)
            out["join_ack_max_ms"] = _ms(max(joins))
        if connects:
            out["join_connected_p50_ms"] = _ms(_pct(connects, 0.5) or 0.0)
            out["join_connected_p99_ms"] = _ms(_pct(connects, 0.99) or 0.0)
    return out


def bench_fleet(tmp: Path, args: argparse.Namespace, shape: str) -> dict[str, Any]:
    """One fleet shape against a fresh `ridesync serve` and a fresh naive server (fresh data dirs)."""
    from engine.auth.tokens import KeyRing

    server = serve(tmp / f"fleet-{shape}-serve")
    naive = naive_server(tmp / f"fleet-{shape}-naive")
    try:
        ring = KeyRing.load_or_create(tmp / f"fleet-{shape}-serve")
        tokens = [(f"fleet-{i:04d}", ring.issue("bike", f"fleet-{i:04d}")) for i in range(args.bikes)]
        synced = run_fleet("sync", server.url, server.proc.pid, tmp, args=args, tokens=tokens, shape=shape)
        baseline = run_fleet("naive", naive.url, naive.proc.pid, tmp, args=args, tokens=tokens, shape=shape)
    finally:
        server.stop()
        naive.stop()
    return {
        "sync": synced,
        "naive_whole_document": baseline,
        "ratio_p99_vs_naive": round(synced["ack_p99_ms"] / max(baseline["ack_p99_ms"], 1e-9), 2),
    }


def offline_targets(curve: dict[str, Any]) -> dict[str, bool]:
    """Targets on bytes (ratios do not move with the machine's load) and on time (they do)."""
    out: dict[str, bool] = {}
    if "30min" in curve:
        half = curve["30min"]
        out["offline_30min_wire_under_8KB"] = half["schema2_lazy"]["wire_bytes"] <= 8 * 1024
        out["offline_30min_wire_under_0.4x_whole_document"] = half["ratio_wire_bytes_vs_naive_schema1"] <= 0.4
        out["offline_30min_wire_under_0.4x_whole_document_on_the_wire"] = (
            half["ratio_wire_bytes_vs_naive_schema1_wire"] <= 0.4
        )
        out["offline_30min_reconciled_under_100ms"] = half["schema2_lazy"]["reconciled_ms"] <= 100
    if "4h" in curve:
        four = curve["4h"]["schema2_lazy"]
        out["offline_4h_wire_under_48KB"] = four["wire_bytes"] <= 48 * 1024
        out["offline_4h_reconciled_under_500ms"] = four["reconciled_ms"] <= 500
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.nodes is not None:
        from engine.bench import sync_nodes

        return sync_nodes.run(args)
    tmp = Path(tempfile.mkdtemp(prefix="ridesync-bench-sync-"))
    try:
        result: dict[str, Any] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
        curve = {}
        for minutes in (float(m) for m in args.offline_minutes.split(",")):
            label = f"{minutes / 60:g}h" if minutes >= 60 else f"{minutes:g}min"
            curve[label] = asyncio.run(bench_offline(tmp, minutes, args.repeats))
        result["offline"] = curve
        result["offline_30min_after_3h30_synced"] = asyncio.run(bench_incremental(tmp, 210, 30))
        result["live_30min"] = asyncio.run(bench_live(tmp, 30))
        if not args.skip_fleet and not args.skip_spread:
            result["fleet"] = bench_fleet(tmp, args, "spread")
        if not args.skip_fleet and not args.skip_burst:
            result["fleet_burst"] = bench_fleet(tmp, args, "burst")
        result["targets"] = offline_targets(curve)
        if "fleet" in result:
            result["targets"]["fleet_p99_under_250ms"] = result["fleet"]["sync"]["ack_p99_ms"] < 250
        if "fleet_burst" in result:
            burst = result["fleet_burst"]["sync"]
            result["targets"]["fleet_burst_p99_under_250ms"] = burst["ack_p99_ms"] < 250
            result["targets"]["fleet_burst_join_p99_under_250ms"] = (
                burst.get("join_ack_p99_ms", math.inf) < 250
            )
        return result
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
