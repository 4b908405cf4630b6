"""`ridesync chaos proxy …`: a TCP fault proxy for labs and tests (no tc netem here:
docs/architecture.md#testing-without-hardware).

It prints one JSON line when listening (`{"listening": "HOST:PORT", "target": …, "seed": …}`), then one
JSON line per injected fault, until interrupted.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from engine.cli import argtypes
from engine.cli.main import CliError
from engine.cli.output import emit

if TYPE_CHECKING:
    from engine.chaos.proxy import Faults, ScheduleStep


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("chaos", help="fault injection tools")
    tools = parser.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True
    proxy = tools.add_parser(
        "proxy",
        help="a TCP proxy that drops, stalls, resets, throttles and cuts connections",
        description=(
            "Relay TCP (HTTP, WebSocket) from --listen to --target, injecting faults at random with a "
            "seed, or on a --schedule (a JSON array such as "
            '[{"at": 5, "partition": true}, {"at": 25, "heal": true}, '
            '{"at": 30, "faults": {"reset": 0.5}}]). '
            "Prints JSON lines: first the listening address, then every injected fault."
        ),
    )
    proxy.add_argument(
        "--listen",
        required=True,
        type=argtypes.hostport,
        metavar="HOST:PORT",
        help="port 0 picks a free port",
    )
    proxy.add_argument("--target", required=True, type=argtypes.hostport, metavar="HOST:PORT")
    proxy.add_argument("--drop", type=float, default=0.0, metavar="P", help="close new connections at once")
    proxy.add_argument(
        "--reset", type=float, default=0.0, metavar="P", help="reset (RST) connections mid-stream"
    )
    proxy.add_argument(
        "--cut", type=float, default=0.0, metavar="P", help="close (FIN) connections mid-stream"
    )
    proxy.add_argument(
        "--kill-window",
        type=int,
        default=16384,
        metavar="BYTES",
        help="resets and cuts happen within the first BYTES of a connection (default 16384)",
    )
    proxy.add_argument("--kill-min", type=int, default=1, metavar="BYTES", help="…but not before BYTES")
    proxy.add_argument(
        "--cut-mid-message", action="store_true", help="reset/cut exactly at the chosen byte, splitting reads"
    )
    proxy.add_argument("--stall-max", type=float, default=0.0, metavar="S", help="longest stall in seconds")
    proxy.add_argument(
        "--stall",
        type=float,
        default=None,
        metavar="P",
        help="stall probability per read (default 0.1 with --stall-max)",
    )
    proxy.add_argument(
        "--bandwidth", type=int, default=None, metavar="BYTES_PER_S", help="per connection and direction"
    )
    proxy.add_argument("--seed", type=int, default=None, metavar="N", help="reproduce a run's decisions")
    proxy.add_argument("--schedule", default=None, metavar="FILE", help="JSON schedule of fault changes")
    proxy.add_argument(
        "--duration",
        type=argtypes.positive_float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: run until interrupted)",
    )
    proxy.set_defaults(handler=_proxy)


def _proxy(args: argparse.Namespace) -> int:
    import asyncio

    from engine.chaos.proxy import ChaosConfigError, Faults, load_schedule

    try:
        listen: tuple[str, int] = args.listen
        target: tuple[str, int] = args.target
        stall = args.stall if args.stall is not None else (0.1 if args.stall_max > 0 else 0.0)
        faults = Faults(
            drop=args.drop,
            reset=args.reset,
            cut=args.cut,
            kill_min=args.kill_min,
            kill_window=args.kill_window,
            cut_mid_message=args.cut_mid_message,
            stall_probability=stall,
            stall_max=args.stall_max,
            bandwidth=args.bandwidth,
        )
        schedule = load_schedule(args.schedule) if args.schedule else None
    except ChaosConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        asyncio.run(_run(listen, target, faults, seed=args.seed, schedule=schedule, duration=args.duration))
    except OSError as exc:
        raise CliError(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}") from None
    return 0


async def _run(
    listen: tuple[str, int],
    target: tuple[str, int],
    faults: Faults,
    *,
    seed: int | None,
    schedule: list[ScheduleStep] | None,
    duration: float | None,
) -> None:
    import asyncio
    import signal

    from engine.chaos.proxy import ChaosProxy

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    proxy = ChaosProxy(
        target,
        listen=listen,
        faults=faults,
        seed=seed,
        schedule=schedule,
        on_event=lambda e: emit(e.to_json()),
    )
    async with proxy:
        emit({"listening": proxy.address, "target": f"{target[0]}:{target[1]}", "seed": proxy.seed})
        try:
            async with asyncio.timeout(duration):
                await stop.wait()
        except TimeoutError:
            pass
        emit({"stopped": True, "accepted": proxy.stats.accepted, "faults": len(proxy.events)})
