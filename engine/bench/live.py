"""`ridesync bench live`: the class hub under load on loopback, next to the naive baseline hub.

The hub runs in its own process (exactly `ridesync serve`'s application). Load-generator processes
multiplex many riders over raw sockets: every rider is one WebSocket in `pubsub` mode (its bike publishes
heart rate at `--rate` Hz with a random phase, and its screen receives the class), plus `--viewers` dashboard
subscribers per class. A fraction of the connections ("probes") parse every frame and record, for each
newly seen (device, seq), receive time minus the sample's sensor timestamp; the rest only drain their
sockets, so the generator's cost stays small next to the hub's. Hub CPU comes from /proc/<pid>/stat, RSS
from /proc/<pid>/status, frames and deliveries from the hub's own counters (/live/v1/stats).

The same invocation runs the same configurations against the naive hub (every sample to every peer at
once, no coalescing) and reports ratios, then searches the knee: the most riders with p99 < 1 s, by
doubling from `--knee-start` then bisecting `--knee-steps` times (bounded by `--knee-max`, which the
process's open-file limit caps).

The relay configuration (`--relay-configs`, `--hubs N`) runs N coalescing hub processes sharing their
classes over a throwaway `redis-server` (engine/live/redis_relay.py); the load generators spread every
class's riders and viewers over the N hubs round-robin, so every sample crosses the relay (the worst case:
no class affinity). By default the N hubs and redis share the single hub's core (`--relay-cpus hub`: the
same CPU budget, so the result is the relay's cost, not more hardware); `--relay-cpus all` lets them use
every core, shared with the load generators. `--relay-knee` searches its knee too.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from engine.bench.redis_server import RedisServer
from engine.live.config import HubConfig

NAME = "live"
HELP = "class hub latency/CPU under many riders, next to the naive baseline hub; finds the knee"

CLASS_SIZE_DEFAULT = 50
DRAIN_LOWAT = 32 * 1024
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configs",
        default="4x50,40x50",
        help="comma-separated CLASSESxRIDERS configurations, each run on both hubs (default 4x50,40x50)",
    )
    parser.add_argument("--rate", type=float, default=1.0, help="samples per rider per second (default 1)")
    parser.add_argument("--viewers", type=int, default=1, help="dashboard subscribers per class (default 1)")
    parser.add_argument(
        "--metrics",
        type=int,
        choices=[1, 2, 3, 4],
        default=1,
        help="metrics per rider sample: heart rate, then cadence, power, resistance (default 1)",
    )
    parser.add_argument(
        "--publish-batch",
        action="store_true",
        help="with --metrics > 1: send a rider's metrics as one batched message (ridesync-live.2)",
    )
    parser.add_argument(
        "--rider-mode",
        choices=["pubsub", "pub"],
        default="pubsub",
        help="pubsub: every rider also receives its class (default); pub: riders only publish",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--measure", type=float, default=6.0, help="seconds measured per configuration")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument(
        "--probe-fraction", type=float, default=0.05, help="share of riders that parse frames"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the hub to the first CPU and the load generators to the others",
    )
    parser.add_argument(
        "--hub-cpu-budget",
        "--hub-duty",
        dest="hub_cpu_budget",
        type=float,
        default=None,
        help="coalescing hub: share of a core it aims at by stretching its flush delay "
        "(HubConfig.cpu_budget; --hub-duty is a deprecated alias)",
    )
    parser.add_argument(
        "--hub-max-tick", type=float, default=None, help="coalescing hub: longest flush delay in seconds"
    )
    parser.add_argument(
        "--hub-loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the hub processes (uvloop, if installed, is an experiment: serve uses asyncio)",
    )
    parser.add_argument("--no-knee", dest="knee", action="store_false", help="skip the knee search")
    parser.add_argument("--knee-start", type=int, default=4000, help="riders at the first knee probe")
    parser.add_argument("--knee-max", type=int, default=19000, help="most riders the knee search tries")
    parser.add_argument("--knee-steps", type=int, default=2, help="bisection steps after doubling")
    parser.add_argument("--naive-knee-start", type=int, default=500)
    parser.add_argument("--naive-knee-max", type=int, default=4000)
    parser.add_argument(
        "--relay-configs",
        default="40x50",
        help="CLASSESxRIDERS configurations run on --hubs hub processes over Redis ('' to skip)",
    )
    parser.add_argument("--hubs", type=int, default=2, help="hub processes in the relay configuration")
    parser.add_argument(
        "--relay-cpus",
        choices=["hub", "all"],
        default="hub",
        help="relay hubs and redis pinned to the single hub's core (same budget; default) or unpinned",
    )
    parser.add_argument(
        "--relay-knee", action="store_true", help="also search the relay configuration's knee"
    )
    parser.add_argument("--relay-knee-start", type=int, default=2000)
    parser.add_argument(
        "--redis-server", default="redis-server", help="redis-server binary (Debian: redis-server)"
    )


# --- hub process ----------------------------------------------------------------------------------------


def _pin(cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, cpus)


def _cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(hub CPUs, generator CPUs): the hub alone on one core, the load on the rest, as the live lane's
    prototypes were measured."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (OSError, AttributeError):
        return None, None
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


@dataclass
class HubSpec:
    data_dir: str
    impl: str
    cpu_budget: float | None
    max_tick: float | None
    cpus: set[int] | None
    relay_url: str | None = None
    loop: str = "asyncio"
    share: float = 1.0  # of the hub core this hub may use (N hubs on one core: 1/N each)


def _hub_main(ctl: Connection, spec: HubSpec) -> None:
    _pin(spec.cpus)
    # The parent ends us with SIGTERM (serve()'s clean shutdown, once it runs); not its own handlers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    data_dir, impl, cpu_budget, max_tick = spec.data_dir, spec.impl, spec.cpu_budget, spec.max_tick
    import logging
    import threading

    from aiohttp import web

    from engine.live.config import HubConfig
    from engine.live.routes import HUB
    from engine.server.config import ServerConfig
    from engine.server.run import serve

    logging.basicConfig(level=logging.ERROR)
    _raise_nofile()
    hub_config = HubConfig(impl=impl, relay_url=spec.relay_url)
    if cpu_budget is not None:
        hub_config = dataclasses.replace(hub_config, cpu_budget=cpu_budget)
    if spec.share < 1.0:
        hub_config = dataclasses.replace(hub_config, cpu_limit=hub_config.cpu_limit * spec.share)
    if max_tick is not None:
        hub_config = dataclasses.replace(hub_config, max_tick_s=max_tick)
    config = ServerConfig(data_dir=Path(data_dir), host="127.0.0.1", port=0, hub=hub_config)
    apps: list[web.Application] = []

    def answer_stats() -> None:
        # A thread, not the event loop: an overloaded hub (the naive one) would answer an HTTP stats request
        # seconds late, and its counters would then cover the wrong window.
        while True:
            try:
                ctl.recv()
            except EOFError:
                return
            hub = apps[0][HUB]
            cpu = os.times()
            snap: dict[str, Any] = {"ts": time.time(), "cpu_user_s": cpu.user, "cpu_system_s": cpu.system}
            snap.update(hub.stats.to_json())
            delay = hub.flush_delay()
            snap["tick_interval_s"] = round(delay, 4) if delay is not None else None
            snap["relay"] = hub.relay_stats()
            ctl.send(snap)

    threading.Thread(target=answer_stats, daemon=True).start()
    if spec.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(config, extra_setup=[apps.append], on_listening=ctl.send))


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def _proc_cpu_s(pid: int) -> float:
    return sum(_proc_cpu(pid))


def _proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _hub_stats(ctl: Connection) -> dict[str, Any]:
    ctl.send("stats")
    if not ctl.poll(30):
        raise RuntimeError("hub did not answer a stats request")
    out: dict[str, Any] = ctl.recv()
    return out


# --- load generator ----------------------------------------------------------------------------------------


@dataclass
class GenSpec:
    data_dir: str
    conns: list[tuple[str, str, str, bool, int]]  # (class_id, device, role, probe, hub port)
    rate: float
    seed: int
    rider_mode: str = "pubsub"
    metrics: int = 1
    batch: bool = False


@dataclass
class GenResult:
    latencies: bytes = b""
    probe_frames: int = 0
    bytes_received: int = 0
    live_over_1s: int = 0
    non_live_records: int = 0
    connect_errors: int = 0
    lost_during_measure: int = 0
    published: int = 0
    cpu_s: float = 0.0


class _Gen:
    def __init__(self) -> None:
        self.measuring = False
        self.latencies = array.array("d")
        self.res = GenResult()


_METRICS = (("heart_rate", "hrm"), ("cadence", "bus"), ("power", "bus"), ("resistance", "bus"))


class _LoadConn(asyncio.Protocol):
    def __init__(self, gen: _Gen, request: bytes, probe: bool) -> None:
        from engine.live.wire import FrameReader

        self.gen = gen
        self.request = request
        self.probe = probe
        self.reader = FrameReader()
        self.head = b""
        self.upgraded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.seen: dict[str, int] = {}
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if isinstance(getattr(transport, "max_size", None), int):
            # asyncio reads with recv(256 KiB), which glibc serves with a fresh mmap per read: page faults
            # that made the generator's reads several times dearer (see engine/live/hub.py, Connection).
            transport.max_size = 2 * DRAIN_LOWAT  # type: ignore[attr-defined]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = self.head.startswith(b"HTTP/1.1 101")
            self.upgraded.set_result(ok)
            if ok and not self.probe and self.transport is not None:
                self._batch_wakeups()
            data = self.head[end + 4 :]
            self.head = b""
            if not ok:
                return
        gen = self.gen
        gen.res.bytes_received += len(data)
        if not self.probe:
            return
        now = time.time()
        for op, payload in self.reader.feed(data):
            if op != 1 or not gen.measuring:
                continue
            frame = json.loads(payload)
            if frame.get("type") != "delta":
                continue
            gen.res.probe_frames += 1
            seen = self.seen
            for device, rec in frame["riders"].items():
                hr = rec.get("hr")
                if hr is None:
                    continue
                if hr["state"] != "live":
                    gen.res.non_live_records += 1
                    continue
                if hr["seq"] <= seen.get(device, -1):
                    continue
                seen[device] = hr["seq"]
                age = now - hr["t"]
                gen.latencies.append(age)
                if age > 1.0:
                    gen.res.live_over_1s += 1

    def _batch_wakeups(self) -> None:
        # Drain-only connections ask the kernel to wake us once per DRAIN_LOWAT bytes instead of once per
        # frame: the generator's per-wakeup cost would otherwise exceed the hub's per-frame cost. The hub
        # writes every frame all the same; the bytes just wait in this socket's (large) receive buffer.
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * DRAIN_LOWAT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, DRAIN_LOWAT)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_result(False)
        if self.gen.measuring:
            self.gen.res.lost_during_measure += 1

    def publish(self, now: float, hr: int, metrics: int = 1, batch: bool = False) -> None:
        from engine.live.wire import client_text_frame

        if self.transport is None or self.transport.is_closing():
            return
        self.seq += 1
        msgs = [
            f'{{"type":"sample","kind":"{kind}","v":{hr},"t":{now:.6f},"seq":{self.seq},"src":"{src}"}}'
            for kind, src in _METRICS[:metrics]
        ]
        if batch and len(msgs) > 1:
            self.transport.write(client_text_frame(("[" + ",".join(msgs) + "]").encode()))
        else:
            self.transport.write(b"".join(client_text_frame(m.encode()) for m in msgs))


def _gen_main(ctl: Connection, spec: GenSpec, cpus: set[int] | None) -> None:
    _pin(cpus)
    _raise_nofile()
    # Only the parent decides when a run ends (Ctrl-C reaches the whole process group); it terminates us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    asyncio.run(_gen(ctl, spec))


async def _gen(ctl: Connection, spec: GenSpec) -> None:
    from engine.auth.tokens import KeyRing

    ring = KeyRing.load_or_create(spec.data_dir)
    loop = asyncio.get_running_loop()
    gen = _Gen()
    rng = random.Random(spec.seed)
    sem = asyncio.Semaphore(128)
    conns: list[_LoadConn] = []
    publishers: list[_LoadConn] = []

    async def connect(class_id: str, device: str, role: str, probe: bool, port: int) -> None:
        token = ring.issue(role, device, classes=[class_id], ttl_s=3600)
        mode = spec.rider_mode if role == "bike" else "sub"
        req = (
            f"GET /live/v1/classes/{class_id}/ws?mode={mode}&token={token} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        async with sem:
            for _attempt in range(3):
                proto = _LoadConn(gen, req, probe)
                try:
                    await loop.create_connection(lambda p=proto: p, "127.0.0.1", port)  # type: ignore[misc]
                    async with asyncio.timeout(60):
                        ok = await proto.upgraded
                except (OSError, TimeoutError):
                    ok = False
                if ok:
                    conns.append(proto)
                    if role == "bike":
                        publishers.append(proto)
                    return
                if proto.transport is not None:
                    proto.transport.abort()
                await asyncio.sleep(0.2)
            gen.res.connect_errors += 1

    async with asyncio.TaskGroup() as tg:
        for c in spec.conns:
            tg.create_task(connect(*c))
    ctl.send("ready")
    publish_start, measure_start, measure_end = await loop.run_in_executor(None, ctl.recv)
    rng.shuffle(publishers)
    cpu0 = _proc_cpu_s(os.getpid())
    n = len(publishers)
    period = 1.0 / spec.rate
    k = 0
    await asyncio.sleep(max(0.0, publish_start - time.time()))
    while True:
        now = time.time()
        if now >= measure_end:
            break
        gen.measuring = measure_start <= now
        due = int((now - publish_start) / period * n) if n else 0
        while k < due:
            publishers[k % n].publish(now, 100 + (k % 80), spec.metrics, spec.batch)
            k += 1
        await asyncio.sleep(0.005)
    gen.measuring = False
    gen.res.published = k
    gen.res.cpu_s = _proc_cpu_s(os.getpid()) - cpu0
    gen.res.latencies = gen.latencies.tobytes()
    for lc in conns:
        if lc.transport is not None:
            lc.transport.abort()
    ctl.send(gen.res)


# --- one measured point ------------------------------------------------------------------------------------


@dataclass
class Point:
    impl: str
    classes: int
    riders_per_class: int
    viewers_per_class: int
    hubs: int = 1
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def riders(self) -> int:
        return self.classes * self.riders_per_class


def _percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def _run_point(point: Point, args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    hub_cpus, gen_cpus = _cpu_split(args.pin)
    relayed = point.hubs > 1
    if relayed and args.relay_cpus == "all":
        hub_cpus = None
    redis: RedisServer | None = None
    if relayed:
        redis = RedisServer(data_dir, binary=args.redis_server, cpus=hub_cpus)
        redis.start()
    cpu_budget = args.hub_cpu_budget
    if relayed and hub_cpus is not None:
        # N hubs on the one hub core: each gets its share of the send budget the single hub has, or the
        # adaptive delays (each aiming at `cpu_budget` of "its" core) would spend N times the CPU; so do their
        # CPU limits.
        cpu_budget = (args.hub_cpu_budget or HubConfig().cpu_budget) / point.hubs
    hubs: list[tuple[Any, Connection]] = []
    gens: list[tuple[Any, Connection]] = []
    try:
        ports: list[int] = []
        for _i in range(point.hubs):
            rx, tx = ctx.Pipe()
            hub_spec = HubSpec(
                data_dir,
                point.impl,
                cpu_budget,
                args.hub_max_tick,
                hub_cpus,
                redis.url if redis else None,
                loop=args.hub_loop,
                share=1.0 / point.hubs if relayed and hub_cpus is not None else 1.0,
            )
            hub = ctx.Process(target=_hub_main, args=(tx, hub_spec), daemon=True)
            hub.start()
            hubs.append((hub, rx))
        for _hub, rx in hubs:
            if not rx.poll(60):
                raise RuntimeError("hub did not start")
            base: str = rx.recv()
            ports.append(int(base.rsplit(":", 1)[1]))
        rng = random.Random(args.seed)
        conns: list[tuple[str, str, str, bool, int]] = []
        for ci in range(point.classes):
            cid = f"class-{ci}"
            # Round-robin within the class: every class has riders and viewers on every hub.
            conns += [
                (cid, f"rider-{ci}-{r}", "bike", rng.random() < args.probe_fraction, ports[r % len(ports)])
                for r in range(point.riders_per_class)
            ]
            conns += [
                (cid, f"dash-{ci}-{v}", "viewer", True, ports[(ci + v) % len(ports)])
                for v in range(point.viewers_per_class)
            ]
        rng.shuffle(conns)
        procs = max(1, args.procs)
        t_connect = time.time()
        for i in range(procs):
            spec = GenSpec(
                data_dir,
                conns[i::procs],
                args.rate,
                args.seed + i,
                args.rider_mode,
                args.metrics,
                args.publish_batch,
            )
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_gen_main, args=(child, spec, gen_cpus), daemon=True)
            p.start()
            gens.append((p, parent))
        for _p, c in gens:
            if not c.poll(300):
                raise RuntimeError("load generator did not connect in time")
            c.recv()
        connect_s = time.time() - t_connect
        publish_start = time.time() + 0.5
        measure_start = publish_start + args.warmup
        measure_end = measure_start + args.measure
        for _p, c in gens:
            c.send((publish_start, measure_start, measure_end))
        time.sleep(max(0.0, measure_start - time.time()))
        # CPU comes from /proc on our clock (exact window even when a hub is too busy to answer quickly);
        # counters come stamped with each hub's clock, so a late answer shifts their window but not the rates.
        pids = [h.pid or 0 for h, _rx in hubs]
        redis_pid = redis.proc.pid if redis is not None and redis.proc is not None else None
        cpu0, t0 = [_proc_cpu(pid) for pid in pids], time.time()
        rcpu0 = _proc_cpu_s(redis_pid) if redis_pid else 0.0
        stats0 = [_hub_stats(rx) for _h, rx in hubs]
        time.sleep(max(0.0, measure_end - time.time()))
        cpu1, t1 = [_proc_cpu(pid) for pid in pids], time.time()
        rcpu1 = _proc_cpu_s(redis_pid) if redis_pid else 0.0
        stats1 = [_hub_stats(rx) for _h, rx in hubs]
        rss = sum(_proc_rss_mb(pid) for pid in pids)
        redis_rss = _proc_rss_mb(redis_pid) if redis_pid else None
        results: list[GenResult] = []
        for _p, c in gens:
            if not c.poll(120):
                raise RuntimeError("load generator did not report")
            results.append(c.recv())
    finally:
        _stop_children(gens, hubs, redis, hurry=sys.exc_info()[0] is not None)
    lat: list[float] = []
    for r in results:
        a = array.array("d")
        a.frombytes(r.latencies)
        lat.extend(a)
    lat.sort()
    elapsed = t1 - t0
    per_hub_cpu = [
        round(100 * ((c1[0] - c0[0]) + (c1[1] - c0[1])) / elapsed, 1)
        for c0, c1 in zip(cpu0, cpu1, strict=True)
    ]
    user = sum(c1[0] - c0[0] for c0, c1 in zip(cpu0, cpu1, strict=True)) / elapsed
    system = sum(c1[1] - c0[1] for c0, c1 in zip(cpu0, cpu1, strict=True)) / elapsed
    gen_cpu = sum(r.cpu_s for r in results) / args.measure

    def rate(key: str) -> float:
        return sum(  # type: ignore[no-any-return]
            (b[key] - a[key]) / max(1e-3, b["ts"] - a["ts"]) for a, b in zip(stats0, stats1, strict=True)
        )

    def buckets(key: str) -> dict[str, int]:
        total: dict[str, int] = {}
        for a, b in zip(stats0, stats1, strict=True):
            for k, v in _bucket_delta(a[key], b[key]).items():
                total[k] = total.get(k, 0) + v
        return total

    out: dict[str, Any] = {
        "impl": point.impl if not relayed else f"{point.impl}+redis-relay",
        "hubs": point.hubs,
        "classes": point.classes,
        "riders_per_class": point.riders_per_class,
        "riders": point.riders,
        "viewers": point.classes * point.viewers_per_class,
        "latency_ms": {
            "p50": round(_percentile(lat, 0.5) * 1000, 2),
            "p99": round(_percentile(lat, 0.99) * 1000, 2),
            "p99_9": round(_percentile(lat, 0.999) * 1000, 2),
            "max": round(lat[-1] * 1000, 2) if lat else None,
            "n": len(lat),
        },
        "deliveries_per_s": round(rate("deliveries")),
        "frames_per_s": round(rate("frames_sent")),
        # Every hub applies every sample (its own riders' and, through the relay, the others'): per hub.
        "samples_per_s": round(rate("samples_in") / point.hubs),
        "hub_cpu_pct": round(100 * (user + system), 1),
        "hub_cpu_user_pct": round(100 * user, 1),
        "hub_cpu_system_pct": round(100 * system, 1),
        "stats_window_s": round(min(b["ts"] - a["ts"] for a, b in zip(stats0, stats1, strict=True)), 2),
        "hub_rss_mb": round(rss, 1),
        "loadgen_cpu_pct": round(100 * gen_cpu, 1),
        "live_over_1s": sum(r.live_over_1s for r in results),
        "non_live_records": sum(r.non_live_records for r in results),
        "connect_errors": sum(r.connect_errors for r in results),
        "disconnected_during_measure": sum(r.lost_during_measure for r in results),
        "stalls_disconnected": sum(s["stalls_disconnected"] for s in stats1),
        "tick_interval_s": stats1[0].get("tick_interval_s")
        if not relayed
        else [s.get("tick_interval_s") for s in stats1],
        "peer_skips": sum(b["peer_skips"] - a["peer_skips"] for a, b in zip(stats0, stats1, strict=True)),
        "hub_latency_le": buckets("latency_seconds_buckets"),
        "hub_tick_s_le": buckets("tick_seconds_buckets"),
        "ticks_per_s": round(rate("ticks"), 1),
        "connect_s": round(connect_s, 1),
        # Other work on this machine skews a point; the 1-minute load average at its end says how much.
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if relayed:
        relay0 = [s.get("relay") or {} for s in stats0]
        relay1 = [s.get("relay") or {} for s in stats1]

        def relay_rate(key: str) -> float:
            return round(  # type: ignore[no-any-return]
                sum((b.get(key, 0) - a.get(key, 0)) for a, b in zip(relay0, relay1, strict=True)) / elapsed
            )

        out["per_hub_cpu_pct"] = per_hub_cpu
        out["redis_cpu_pct"] = round(100 * (rcpu1 - rcpu0) / elapsed, 1)
        out["redis_rss_mb"] = round(redis_rss or 0.0, 1)
        out["hubs_plus_redis_cpu_pct"] = round(out["hub_cpu_pct"] + out["redis_cpu_pct"], 1)
        out["relay"] = {
            "messages_published_per_s": relay_rate("messages_published"),
            "messages_received_per_s": relay_rate("messages_received"),
            "batches_published_per_s": relay_rate("batches_published"),
            "events_published_per_s": relay_rate("events_published"),
            "batches_received_per_s": relay_rate("batches_received"),
            "batches_dropped": sum(r.get("batches_dropped", 0) for r in relay1),
            "malformed_ignored": sum(r.get("malformed_ignored", 0) for r in relay1),
        }
        out["relay_cpus"] = args.relay_cpus
        out["hub_cpu_budget_each"] = cpu_budget
    _measured.append(out)
    return out


def _stop_children(
    gens: list[tuple[Any, Connection]],
    hubs: list[tuple[Any, Connection]],
    redis: RedisServer | None,
    *,
    hurry: bool,
) -> None:
    """End every process of a point. Interrupted (Ctrl-C, an error), nothing is waited for beyond a moment:
    generators are terminated at once (they ignore SIGINT so that only this process decides), hubs get
    SIGTERM (their clean shutdown), and whatever lingers is killed. A second Ctrl-C meanwhile is held
    back until this is done, so it cannot leave processes behind."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for p, _c in gens:
            if hurry and p.is_alive():
                p.terminate()
        for p, _c in gens:
            p.join(2 if hurry else 10)
            if p.is_alive():
                p.kill()
                p.join(5)
        for hub, _rx in hubs:
            if hub.pid is not None and hub.is_alive():
                os.kill(hub.pid, signal.SIGTERM)
        for hub, _rx in hubs:
            hub.join(5 if hurry else 15)
            if hub.is_alive():
                hub.kill()
                hub.join(5)
        if redis is not None:
            redis.stop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _bucket_delta(b0: list[tuple[str, float]], b1: list[tuple[str, float]]) -> dict[str, int]:
    """Cumulative histogram counts within the window, as {upper bound: count <= bound}."""
    return {str(k1): int(v1 - v0) for (_k0, v0), (k1, v1) in zip(b0, b1, strict=True)}


def _ok(res: dict[str, Any]) -> bool:
    lat = res["latency_ms"]
    return bool(lat["n"]) and lat["p99"] < 1000 and res["connect_errors"] == 0


def _knee(
    impl: str,
    *,
    start: int,
    hi_cap: int,
    steps: int,
    args: argparse.Namespace,
    data_dir: str,
    size: int,
    hubs: int = 1,
) -> dict[str, Any]:
    probes: list[dict[str, Any]] = []

    def measure(riders: int) -> bool:
        classes = max(1, riders // size)
        res = _run_point(Point(impl, classes, size, args.viewers, hubs), args, data_dir)
        probes.append(res)
        return _ok(res)

    good, bad = 0, None
    riders = start
    while True:
        if measure(riders):
            good = riders
            if riders >= hi_cap:
                break
            riders = min(hi_cap, riders * 2)
        else:
            bad = riders
            break
    if bad is not None:
        lo = good
        for _ in range(steps):
            mid = ((lo + bad) // 2) // size * size
            if mid <= lo or mid >= bad:
                break
            if measure(mid):
                lo = good = mid
            else:
                bad = mid
    return {
        "impl": impl if hubs == 1 else f"{impl}+redis-relay",
        "hubs": hubs,
        "knee_riders": good,
        "first_failing_riders": bad,
        "capped_at_max": bad is None,
        "probes": [
            {
                "riders": p["riders"],
                "p99_ms": p["latency_ms"]["p99"],
                "max_ms": p["latency_ms"]["max"],
                "hub_cpu_pct": p["hub_cpu_pct"],
                "redis_cpu_pct": p.get("redis_cpu_pct"),
            }
            for p in probes
        ],
    }


def _row(r: dict[str, Any]) -> dict[str, Any]:
    """One line of the summary table."""
    lat = r["latency_ms"]
    return {
        "impl": r["impl"],
        "hubs": r.get("hubs", 1),
        "riders": r["riders"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "hub_cpu_pct": r["hub_cpu_pct"],
        "redis_cpu_pct": r.get("redis_cpu_pct"),
        "frames_per_s": r["frames_per_s"],
        "loadgen_cpu_pct": r["loadgen_cpu_pct"],
        "loadavg_1m": r["loadavg_1m"],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


# Every point measured in the current run, for the partial report when it is interrupted.
_measured: list[dict[str, Any]] = []


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark. Ctrl-C (or SIGTERM) stops it promptly with every child process ended; what was
    measured until then is printed as JSON with `"interrupted": true`, and the exit status is non-zero."""
    _measured.clear()
    # Also when started where SIGINT is ignored (a background job of a non-interactive shell).
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _interrupt),
    }
    try:
        return _run(args)
    except KeyboardInterrupt:
        partial = {"benchmark": NAME, "interrupted": True, "points_measured": [_row(r) for r in _measured]}
        print(json.dumps(partial, separators=(",", ":")), flush=True)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.hub_loop == "uvloop":
        import importlib.util

        from engine.cli.main import CliError

        if importlib.util.find_spec("uvloop") is None:
            raise CliError("--hub-loop uvloop needs the uvloop package (pip install uvloop)")
    _raise_nofile()
    loadavg_at_start = os.getloadavg()
    configs: list[tuple[int, int]] = []
    for item in filter(None, (x.strip() for x in args.configs.split(","))):
        c, _, r = item.partition("x")
        configs.append((int(c), int(r or CLASS_SIZE_DEFAULT)))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    size = configs[-1][1] if configs else CLASS_SIZE_DEFAULT
    # The hub holds one socket per rider and viewer; leave headroom for the rest of its files.
    knee_max = min(args.knee_max, (nofile - 200) // (size + args.viewers) * size)
    data_dir = tempfile.mkdtemp(prefix="ridesync-bench-live-")
    try:
        from engine.auth.tokens import KeyRing

        KeyRing.load_or_create(data_dir)
        runs: list[dict[str, Any]] = []
        comparison: list[dict[str, Any]] = []
        for classes, per in configs:
            pair = {}
            for impl in ("coalescing", "naive"):
                pair[impl] = _run_point(Point(impl, classes, per, args.viewers), args, data_dir)
                runs.append(pair[impl])
            co, nv = pair["coalescing"], pair["naive"]
            comparison.append(
                {
                    "riders": co["riders"],
                    "naive_over_coalescing": {
                        "p50": _ratio(nv["latency_ms"]["p50"], co["latency_ms"]["p50"]),
                        "p99": _ratio(nv["latency_ms"]["p99"], co["latency_ms"]["p99"]),
                        "max": _ratio(nv["latency_ms"]["max"], co["latency_ms"]["max"]),
                        "hub_cpu": _ratio(nv["hub_cpu_pct"], co["hub_cpu_pct"]),
                        "frames_per_s": _ratio(nv["frames_per_s"], co["frames_per_s"]),
                    },
                }
            )
        relay_runs: list[dict[str, Any]] = []
        for item in filter(None, (x.strip() for x in args.relay_configs.split(","))):
            c, _, r = item.partition("x")
            classes, per = int(c), int(r or CLASS_SIZE_DEFAULT)
            res = _run_point(
                Point("coalescing", classes, per, args.viewers, max(2, args.hubs)), args, data_dir
            )
            relay_runs.append(res)
            single = {x["impl"]: x for x in runs if x["riders"] == res["riders"]}
            if single:
                sco, snv = single.get("coalescing"), single.get("naive")
                comparison.append(
                    {
                        "riders": res["riders"],
                        "relay_over_coalescing": None
                        if sco is None
                        else {
                            "p50": _ratio(res["latency_ms"]["p50"], sco["latency_ms"]["p50"]),
                            "p99": _ratio(res["latency_ms"]["p99"], sco["latency_ms"]["p99"]),
                            "max": _ratio(res["latency_ms"]["max"], sco["latency_ms"]["max"]),
                            "cpu_incl_redis": _ratio(res["hubs_plus_redis_cpu_pct"], sco["hub_cpu_pct"]),
                        },
                        "naive_over_relay": None
                        if snv is None
                        else {
                            "p99": _ratio(snv["latency_ms"]["p99"], res["latency_ms"]["p99"]),
                            "max": _ratio(snv["latency_ms"]["max"], res["latency_ms"]["max"]),
                        },
                    }
                )
        runs += relay_runs
        out: dict[str, Any] = {
            # Other work on the machine skews every number here; the load average says how much there was.
            "machine": {"cpus": os.cpu_count(), "nofile_limit": nofile, "loadavg_at_start": loadavg_at_start},
            "settings": {
                "rate_hz": args.rate,
                "warmup_s": args.warmup,
                "measure_s": args.measure,
                "loadgen_procs": args.procs,
                "probe_fraction": args.probe_fraction,
                "viewers_per_class": args.viewers,
                "metrics_per_sample": args.metrics,
                "publish_batch": args.publish_batch,
                "pinned": args.pin,
                "hub_cpu_budget": args.hub_cpu_budget,
                "hub_max_tick_s": args.hub_max_tick,
                "hub_loop": args.hub_loop,
                "relay_hubs": max(2, args.hubs),
                "relay_cpus": args.relay_cpus,
            },
            "runs": runs,
            "comparison": comparison,
        }
        if args.knee:
            out["knee"] = {
                "coalescing": _knee(
                    "coalescing",
                    start=args.knee_start,
                    hi_cap=knee_max,
                    steps=args.knee_steps,
                    args=args,
                    data_dir=data_dir,
                    size=size,
                ),
                "naive": _knee(
                    "naive",
                    start=args.naive_knee_start,
                    hi_cap=min(knee_max, args.naive_knee_max),
                    steps=args.knee_steps,
                    args=args,
                    data_dir=data_dir,
                    size=size,
                ),
            }
        if args.relay_knee:
            out.setdefault("knee", {})["relay"] = _knee(
                "coalescing",
                start=args.relay_knee_start,
                hi_cap=knee_max,
                steps=args.knee_steps,
                args=args,
                data_dir=data_dir,
                size=size,
                hubs=max(2, args.hubs),
            )
        out["table"] = [_row(r) for r in runs]
        target = next((r for r in runs if r["impl"] == "coalescing" and r["riders"] == 2000), None)
        if target is not None:
            lat = target["latency_ms"]
            out["targets_2000"] = {
                "p99_le_60ms": lat["p99"] <= 60,
                "max_le_250ms": lat["max"] is not None and lat["max"] <= 250,
                "hub_cpu_le_50pct": target["hub_cpu_pct"] <= 50,
                "nothing_over_1s_live": target["live_over_1s"] == 0,
            }
        out["machine"]["loadavg_at_end"] = os.getloadavg()
        if args.knee:
            out["targets_knee_ge_15000"] = out["knee"]["coalescing"]["knee_riders"] >= 15000
        return out
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(data_dir)
