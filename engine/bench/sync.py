"""`ridesync bench sync`: the device sync client against `ridesync serve`, next to the naive baseline.

- **Offline reconcile**: a bike that recorded 30 minutes (and 4 hours) offline, at the default 10 s
  commit interval, connects and syncs: wall time until the backend has acknowledged every document
  (`reconciled`) and until it finalized the ended ride, and the bytes on the wire (both directions,
  after permessage-deflate, counted by a fault-free relay). Baseline: upload the whole saved documents
  in one HTTP POST to a server that loads and stores them durably.
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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(seq: int, rng: random.Random) -> Any:
    from engine.ride.samples import Sample

    return Sample(
        seq=seq,
        t=T0 + seq,
        hr=120 + rng.randint(-15, 30),
        rr=(rng.randint(420, 560),),
        cadence=80 + rng.randint(-8, 12),
        power_dw=1800 + rng.randint(-400, 900),
        resistance=rng.randint(200, 700),
    )


def build_ride(store: Any, ride_id: str, samples: int, fold_every: int = 10) -> None:
    """A ride recorded offline at 1 Hz with the default 10 s commit interval, then ended."""
    rng = random.Random(ride_id)
    store.start_ride(ride_id, t=T0)
    for first in range(0, samples, fold_every):
        store.append_samples(
            ride_id, [sample(s, rng) for s in range(first, min(samples, first + fold_every))]
        )
        store.fold(ride_id)
    store.end_ride(ride_id, t=T0 + samples, duration_s=float(samples))


class Server:
    """A server subprocess that prints its URL (JSON `{"event": "listening", "url"}`) when ready."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            self.url = json.loads(line)["url"]
        except (ValueError, KeyError):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}") from None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve(data: Path) -> Server:
    from engine.auth.tokens import KeyRing

    KeyRing.load_or_create(data)
    argv = [sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--data", str(data)]
    return Server([*argv, "--log-level", "INFO"], data.parent / f"{data.name}.log")


def naive_server(data: Path) -> Server:
    data.mkdir(parents=True, exist_ok=True)
    return Server([sys.executable, "-c", _NAIVE_SERVER, str(data)], data.parent / f"{data.name}.log")


# The baseline: a device uploads its whole saved document; the server loads it (as a sync server must, to
# use it) and stores it durably, then answers.
_NAIVE_SERVER = """
import json, sqlite3, sys
from aiohttp import web
from engine.crdt import CrdtDoc, CrdtDecodeError, new_actor_id
db = sqlite3.connect(sys.argv[1] + "/naive.sqlite3", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS docs(id TEXT PRIMARY KEY, data BLOB)")
actor = new_actor_id("naive")
async def upload(request):
    body = await request.read()
    try:
        CrdtDoc.load(body, actor)
    except CrdtDecodeError as exc:
        return web.Response(status=400, text=str(exc))
    db.execute("INSERT OR REPLACE INTO docs VALUES(?, ?)", (request.match_info["doc"], body))
    return web.json_response({"stored": len(body)})
app = web.Application(client_max_size=64 * 1024 * 1024)
app.router.add_post("/naive/{doc}", upload)
async def healthz(request):
    return web.json_response({"ok": True})
app.router.add_get("/healthz", healthz)
async def main():
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    print(json.dumps({"event": "listening", "url": f"http://127.0.0.1:{runner.addresses[0][1]}"}), flush=True)
    import asyncio; await asyncio.Event().wait()
import asyncio; asyncio.run(main())
"""


# ---- offline reconcile ---------------------------------------------------------------------------------


async def _reconcile(
    store: Any, url: str, token: str, ride_id: str, timeout_s: float = 120.0
) -> dict[str, float]:
    from engine.device.connection import DeviceSync
    from engine.ride.schema import Phase

    sync = DeviceSync(store, url, token)
    sync.track(ride_id)
    out: dict[str, float] = {}
    async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
        t0 = time.perf_counter()
        task = tg.create_task(sync.run())
        await sync.wait_for(lambda: sync.reconciled(ride_id))
        out["reconciled_s"] = time.perf_counter() - t0
        await sync.wait_for(lambda: sync.reconciled(ride_id) and store.phase(ride_id) is Phase.FINALIZED)
        out["finalized_s"] = time.perf_counter() - t0
        task.cancel()
    return out


async def _naive_upload(store: Any, url: str, ride_id: str) -> dict[str, float]:
    import aiohttp

    refs = [r for r in store.ride_refs(ride_id) if store.heads(r.doc_id)]
    sent = 0
    async with aiohttp.ClientSession() as http:
        t0 = time.perf_counter()
        for ref in refs:
            body = store.doc(ref.doc_id).save()
            sent += len(body)
            async with http.post(f"{url}/naive/{ref.doc_id}", data=body) as resp:
                assert resp.status == 200, await resp.text()
        spent = time.perf_counter() - t0
    return {"seconds": spent, "bytes": sent}


async def bench_offline(tmp: Path, minutes: float, repeats: int) -> dict[str, Any]:
    from engine.chaos.proxy import ChaosProxy
    from engine.ride.schema import Role
    from engine.store import ReplicaStore

    samples = int(minutes * 60)
    label = f"{minutes / 60:g}h" if minutes >= 60 else f"{minutes:g}min"
    bike = ReplicaStore(tmp / f"bike-{label}", device_id="bench-bike", role=Role.BIKE)
    rides = [f"off-{label}-{i}" for i in range(repeats + 1)]
    for ride_id in rides:
        build_ride(bike, ride_id, samples)
    server = serve(tmp / f"serve-{label}")
    naive = naive_server(tmp / f"naive-{label}")
    try:
        from engine.auth.tokens import KeyRing

        token = KeyRing.load_or_create(tmp / f"serve-{label}").issue("bike", "bench-bike")
        timings = [await _reconcile(bike, server.url, token, r) for r in rides[:repeats]]
        async with ChaosProxy(("127.0.0.1", server.port)) as relay:
            await _reconcile(bike, f"http://{relay.address}", token, rides[repeats])
            wire_bytes = relay.stats.bytes_up + relay.stats.bytes_down
            up = relay.stats.bytes_up
        naive_runs = [await _naive_upload(bike, naive.url, r) for r in rides[:repeats]]
    finally:
        server.stop()
        naive.stop()
        bike.close()
    best = min(t["reconciled_s"] for t in timings)
    best_final = min(t["finalized_s"] for t in timings)
    naive_best = min(n["seconds"] for n in naive_runs)
    naive_bytes = int(naive_runs[0]["bytes"])
    return {
        "samples": samples,
        "reconciled_ms": _ms(best),
        "finalized_ms": _ms(best_final),
        "wire_bytes": wire_bytes,
        "wire_bytes_up": up,
        "naive_upload_ms": _ms(naive_best),
        "naive_upload_bytes": naive_bytes,
        "ratio_time_vs_naive": round(best / max(naive_best, 1e-9), 2),
        "ratio_bytes_vs_naive": round(wire_bytes / max(naive_bytes, 1), 2),
        "runs_reconciled_ms": [_ms(t["reconciled_s"]) for t in timings],
    }


async def bench_incremental(tmp: Path, synced_min: float, offline_min: float) -> dict[str, Any]:
    """A long ride synced up to a point, then `offline_min` more recorded offline and ended: sync sends only
    what is new, the naive baseline uploads the whole document again."""
    from engine.auth.tokens import KeyRing
    from engine.chaos.proxy import ChaosProxy
    from engine.ride.schema import Role
    from engine.store import ReplicaStore

    ride_id = "incremental"
    bike = ReplicaStore(tmp / "bike-incremental", device_id="bench-bike", role=Role.BIKE)
    server = serve(tmp / "serve-incremental")
    naive = naive_server(tmp / "naive-incremental")
    try:
        token = KeyRing.load_or_create(tmp / "serve-incremental").issue("bike", "bench-bike")
        rng = random.Random(ride_id)
        first = int(synced_min * 60)
        total = first + int(offline_min * 60)
        bike.start_ride(ride_id, t=T0)
        for lo in range(0, first, 10):
            bike.append_samples(ride_id, [sample(s, rng) for s in range(lo, min(first, lo + 10))])
            bike.fold(ride_id)
        from engine.device.connection import DeviceSync

        sync = DeviceSync(bike, server.url, token)
        sync.track(ride_id)
        async with asyncio.timeout(120), asyncio.TaskGroup() as tg:
            task = tg.create_task(sync.run())
            await sync.wait_for(lambda: sync.reconciled(ride_id))
            task.cancel()
        for lo in range(first, total, 10):
            bike.append_samples(ride_id, [sample(s, rng) for s in range(lo, min(total, lo + 10))])
            bike.fold(ride_id)
        bike.end_ride(ride_id, t=T0 + total, duration_s=float(total))
        async with ChaosProxy(("127.0.0.1", server.port)) as relay:
            timing = await _reconcile(bike, f"http://{relay.address}", token, ride_id)
            wire_bytes = relay.stats.bytes_up + relay.stats.bytes_down
        naive_run = await _naive_upload(bike, naive.url, ride_id)
    finally:
        server.stop()
        naive.stop()
        bike.close()
    return {
        "synced_samples": first,
        "offline_samples": total - first,
        "reconciled_ms": _ms(timing["reconciled_s"]),
        "wire_bytes": wire_bytes,
        "naive_upload_ms": _ms(naive_run["seconds"]),
        "naive_upload_bytes": int(naive_run["bytes"]),
        "ratio_time_vs_naive": round(timing["reconciled_s"] / max(naive_run["seconds"], 1e-9), 2),
        "ratio_bytes_vs_naive": round(wire_bytes / max(naive_run["bytes"], 1), 2),
        "note": "time through the byte-counting relay",
    }


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
                store.append_sample(ride_id, sample(seq, rng))
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


def server_histograms(url: str) -> dict[str, Any]:
    """The backend's own view from `/metrics`: per incoming sync message, the time to gate, merge and
    answer, and the time a reply waited for the group commit, as bucket bounds (p50/p99 ≤ bound). Next to
    the devices' acknowledgement latency, it separates the backend's work from queueing for a CPU."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, Any] = {}
    for name, label in (
        ("ridesync_sync_message_seconds", "message"),
        ("ridesync_sync_commit_wait_seconds", "commit_wait"),
        ("ridesync_store_group_seconds", "group"),
        ("ridesync_store_commit_seconds", "fsync"),
        ("ridesync_store_group_jobs", "group_jobs"),
    ):
        buckets: list[tuple[float, float]] = []
        for line in text.splitlines():
            if line.startswith(name + "_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((math.inf if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
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
        procs.append(proc)
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.nodes is not None:
        from engine.bench import sync_nodes

        return sync_nodes.run(args)
    tmp = Path(tempfile.mkdtemp(prefix="ridesync-bench-sync-"))
    try:
        result: dict[str, Any] = {
            "offline_30min": asyncio.run(bench_offline(tmp, 30, args.repeats)),
            "offline_4h": asyncio.run(bench_offline(tmp, 240, args.repeats)),
            "offline_30min_after_3h30_synced": asyncio.run(bench_incremental(tmp, 210, 30)),
        }
        if not args.skip_fleet and not args.skip_spread:
            result["fleet"] = bench_fleet(tmp, args, "spread")
        if not args.skip_fleet and not args.skip_burst:
            result["fleet_burst"] = bench_fleet(tmp, args, "burst")
        result["targets"] = {
            "offline_30min_reconciled_under_500ms": result["offline_30min"]["reconciled_ms"] < 500,
            "offline_30min_under_64KB": result["offline_30min"]["wire_bytes"] < 64 * 1024,
        }
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
