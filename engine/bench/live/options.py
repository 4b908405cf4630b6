"""The flags of `ridesync bench live`."""

from __future__ import annotations

import argparse

NAME = "live"
HELP = "class hub latency/CPU under many riders, next to the naive baseline hub; finds the knee"

CLASS_SIZE_DEFAULT = 50


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
