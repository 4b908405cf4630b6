"""The run of `ridesync bench live`: every configuration on both hubs, the relay configurations, the knee
searches, one JSON report; Ctrl-C ends every child process and prints what was measured."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import tempfile
from typing import Any

from engine.bench.live.knee import knee
from engine.bench.live.model import Point
from engine.bench.live.options import CLASS_SIZE_DEFAULT, NAME
from engine.bench.live.point import measured, run_point
from engine.bench.live.procs import raise_nofile
from engine.bench.live.report import naive_over_coalescing, relay_over_single, row, settings, targets_2000


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark. Ctrl-C (or SIGTERM) stops it promptly with every child process ended; what was
    measured until then is printed as JSON with `"interrupted": true`, and the exit status is non-zero."""
    measured.clear()
    # Also when started where SIGINT is ignored (a background job of a non-interactive shell).
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _interrupt),
    }
    try:
        return _run(args)
    except KeyboardInterrupt:
        partial = {"benchmark": NAME, "interrupted": True, "points_measured": [row(r) for r in measured]}
        print(json.dumps(partial, separators=(",", ":")), flush=True)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _configs(text: str) -> list[tuple[int, int]]:
    """CLASSESxRIDERS items, comma-separated (RIDERS defaults to the class size)."""
    configs: list[tuple[int, int]] = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        c, _, r = item.partition("x")
        configs.append((int(c), int(r or CLASS_SIZE_DEFAULT)))
    return configs


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.hub_loop == "uvloop":
        import importlib.util

        from engine.cli.main import CliError

        if importlib.util.find_spec("uvloop") is None:
            raise CliError("--hub-loop uvloop needs the uvloop package (pip install uvloop)")
    raise_nofile()
    loadavg_at_start = os.getloadavg()
    configs = _configs(args.configs)
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
                pair[impl] = run_point(Point(impl, classes, per, args.viewers), args, data_dir)
                runs.append(pair[impl])
            comparison.append(naive_over_coalescing(pair["coalescing"], pair["naive"]))
        relay_runs: list[dict[str, Any]] = []
        for classes, per in _configs(args.relay_configs):
            res = run_point(
                Point("coalescing", classes, per, args.viewers, max(2, args.hubs)), args, data_dir
            )
            relay_runs.append(res)
            single = {x["impl"]: x for x in runs if x["riders"] == res["riders"]}
            if single:
                comparison.append(relay_over_single(res, single.get("coalescing"), single.get("naive")))
        runs += relay_runs
        out: dict[str, Any] = {
            # Other work on the machine skews every number here; the load average says how much there was.
            "machine": {"cpus": os.cpu_count(), "nofile_limit": nofile, "loadavg_at_start": loadavg_at_start},
            "settings": settings(args),
            "runs": runs,
            "comparison": comparison,
        }
        search = {"steps": args.knee_steps, "args": args, "data_dir": data_dir, "size": size}
        if args.knee:
            out["knee"] = {
                "coalescing": knee("coalescing", start=args.knee_start, hi_cap=knee_max, **search),
                "naive": knee(
                    "naive", start=args.naive_knee_start, hi_cap=min(knee_max, args.naive_knee_max), **search
                ),
            }
        if args.relay_knee:
            out.setdefault("knee", {})["relay"] = knee(
                "coalescing", start=args.relay_knee_start, hi_cap=knee_max, hubs=max(2, args.hubs), **search
            )
        out["table"] = [row(r) for r in runs]
        targets = targets_2000(runs)
        if targets is not None:
            out["targets_2000"] = targets
        out["machine"]["loadavg_at_end"] = os.getloadavg()
        if args.knee:
            out["targets_knee_ge_15000"] = out["knee"]["coalescing"]["knee_riders"] >= 15000
        return out
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(data_dir)
