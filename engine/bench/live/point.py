"""One measured point: start its hub processes (and redis for a relay point) and load generators, let the
load warm up, read CPU, memory and the hubs' counters over the measured window, and end every process."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import multiprocessing.connection
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from engine.bench.live.hub_proc import HubSpec, hub_main, hub_stats
from engine.bench.live.load import GenResult, GenSpec, gen_main
from engine.bench.live.model import Point, Window
from engine.bench.live.procs import cpu_split, proc_cpu, proc_cpu_s, proc_rss_mb
from engine.bench.live.report import summarise
from engine.bench.redis_server import RedisServer
from engine.live.config import HubConfig

Procs = list[tuple[Any, Connection]]


# Every point measured in the current run, for the partial report when it is interrupted.
measured: list[dict[str, Any]] = []


def run_point(point: Point, args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    hub_cpus, gen_cpus = cpu_split(args.pin)
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
    hubs: Procs = []
    gens: Procs = []
    try:
        share = 1.0 / point.hubs if relayed and hub_cpus is not None else 1.0
        spec = HubSpec(
            data_dir,
            point.impl,
            cpu_budget,
            args.hub_max_tick,
            hub_cpus,
            redis.url if redis else None,
            loop=args.hub_loop,
            share=share,
        )
        ports = _start_hubs(ctx, spec, point.hubs, hubs)
        t_connect = time.time()
        _start_generators(
            ctx, args, data_dir=data_dir, conns=_connections(point, args, ports), cpus=gen_cpus, gens=gens
        )
        window = _measure(args, hubs, gens, redis, connect_s=time.time() - t_connect)
    finally:
        stop_children(gens, hubs, redis, hurry=sys.exc_info()[0] is not None)
    out = summarise(point, window, args, cpu_budget)
    measured.append(out)
    return out


def _start_hubs(ctx: Any, spec: HubSpec, n: int, hubs: Procs) -> list[int]:
    """Start `n` hub processes (added to `hubs` as they start, so that they are stopped whatever happens);
    their ports once all listen."""
    for _i in range(n):
        start_child(ctx, hub_main, (spec,), hubs)
    ports: list[int] = []
    for hub, rx in hubs:
        base: str = receive(hub, rx, 60, "hub did not start")
        ports.append(int(base.rsplit(":", 1)[1]))
    return ports


def _connections(
    point: Point, args: argparse.Namespace, ports: list[int]
) -> list[tuple[str, str, str, bool, int]]:
    """Every rider and viewer of the point as (class, device, role, probe, hub port), shuffled."""
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
    return conns


def _start_generators(
    ctx: Any,
    args: argparse.Namespace,
    *,
    data_dir: str,
    conns: list[tuple[str, str, str, bool, int]],
    cpus: set[int] | None,
    gens: Procs,
) -> None:
    """Start the load generators (added to `gens` as they start) and wait until all have connected."""
    procs = max(1, args.procs)
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
        start_child(ctx, gen_main, (spec, cpus), gens)
    for p, c in gens:
        receive(p, c, 300, "load generator did not connect in time")


def _measure(
    args: argparse.Namespace, hubs: Procs, gens: Procs, redis: RedisServer | None, *, connect_s: float
) -> Window:
    """Start publishing, wait out the warm-up, read both ends of the measured window, collect the
    generators' results."""
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
    cpu0, t0 = [proc_cpu(pid) for pid in pids], time.time()
    rcpu0 = proc_cpu_s(redis_pid) if redis_pid else 0.0
    stats0 = [hub_stats(rx) for _h, rx in hubs]
    time.sleep(max(0.0, measure_end - time.time()))
    cpu1, t1 = [proc_cpu(pid) for pid in pids], time.time()
    rcpu1 = proc_cpu_s(redis_pid) if redis_pid else 0.0
    stats1 = [hub_stats(rx) for _h, rx in hubs]
    rss = sum(proc_rss_mb(pid) for pid in pids)
    redis_rss = proc_rss_mb(redis_pid) if redis_pid else None
    results: list[GenResult] = []
    for p, c in gens:
        results.append(receive(p, c, 120, "load generator did not report"))
    return Window(t0, t1, cpu0, cpu1, rcpu1 - rcpu0, stats0, stats1, rss, redis_rss, results, connect_s)


def start_child(ctx: Any, target: Callable[..., None], args: tuple[Any, ...], procs: Procs) -> None:
    """Fork a child running `target(pipe, *args)` and add it, with our end of its pipe, to `procs`.

    Ctrl-C reaches the whole process group, so it can arrive while the child is being forked. Unblocked, it
    could be raised in the parent inside an at-fork hook (the logging module's), which swallows it ("Exception
    ignored in ..."), and in the child before the child ignores it, killing it before it reports: the parent
    then waited out its timeout for a child that was gone. SIGINT and SIGTERM are therefore held back
    across the fork: the child inherits the blocked mask and ignores SIGINT before unblocking (only the
    parent decides when a run ends), and the parent gets its Ctrl-C once the child is in `procs`, where it
    will be stopped."""
    ours, theirs = ctx.Pipe()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        proc = ctx.Process(target=_child_main, args=(held, target, theirs, *args), daemon=True)
        proc.start()
        procs.append((proc, ours))
    finally:
        # Our copy of the child's end closed, a child that dies reads as EOF at once, not as silence.
        theirs.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _child_main(held: set[signal.Signals], target: Callable[..., None], pipe: Connection, *args: Any) -> None:
    # The parent ends us: SIGTERM (a hub's clean shutdown, a generator's end) or a kill; never Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    target(pipe, *args)


def receive(proc: Any, conn: Connection, timeout: float, late: str) -> Any:
    """The child's next message; a clear error if it does not come within `timeout` or the child is gone."""
    ready = mp.connection.wait([conn, proc.sentinel], timeout)
    if not ready:
        raise RuntimeError(late)
    # Its last message may be waiting even if the child has exited since.
    if conn in ready or conn.poll(0):
        try:
            return conn.recv()
        except (EOFError, OSError):
            pass
    proc.join(1)
    raise RuntimeError(f"{late}: the child process exited (exit code {proc.exitcode})")


def stop_children(
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
