"""`ridesync sim`: simulated serial devices on real ptys, for labs and demos without hardware.

`sim bike --pty` prints the path of the pty to open and serves until Ctrl-C (or --duration).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cli import argtypes
from engine.cli.output import emit

_FAULT_KINDS = ("garbage", "drop", "truncate", "flip")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("sim", help="simulated serial devices on ptys")
    kinds = parser.add_subparsers(dest="device", metavar="DEVICE")
    kinds.required = True

    bike = kinds.add_parser(
        "bike",
        help="a simulated bike (or DIY cadence sensor) on a pty",
        description=(
            'Serve a simulated device on a pty and print {"pty": PATH, ...} as the first JSON line: '
            "a Peloton bike answering poll requests (--mode poll), a running Peloton bus with head unit "
            "and bike talking (--mode listen), or a DIY line-protocol cadence sensor (--protocol line). "
            "Values come from --profile (CSV of cadence,power,resistance per second) or a generated "
            "30-minute ride, played --speed times faster than real time."
        ),
    )
    _common(bike)
    bike.add_argument("--protocol", choices=("peloton", "line"), default="peloton")
    bike.add_argument("--mode", choices=("poll", "listen"), default="poll")
    bike.add_argument("--profile", metavar="FILE", help="CSV: cadence,power,resistance per second")
    bike.add_argument(
        "--tap-ports",
        type=int,
        choices=(1, 2),
        default=1,
        help="listen mode: 1 pty carrying both lines, or 2 (head unit's line, then the bike's)",
    )
    bike.add_argument(
        "--tablet-boots",
        action="store_true",
        help="listen mode: the tablet boots first (handshake and calibration table on the bus); by "
        "default, like a real tap, the table never crosses it",
    )
    bike.add_argument(
        "--lines",
        choices=("bike", "both"),
        default="bike",
        help="listen mode, one pty: the bike's TX line only (the usual tap, default) or both lines "
        "interleaved (a capture of both)",
    )
    bike.add_argument(
        "--baud",
        type=int,
        default=None,
        metavar="N",
        help="line protocol: the sensor's baud rate (default 115200); a reader whose end of the pty is "
        "set to another speed reads garbage, as on a real cable",
    )
    bike.add_argument(
        "--faults",
        metavar="SPEC",
        default="",
        help="faults for the first frames, e.g. garbage=5,flip=2,drop=1,truncate=1",
    )
    bike.set_defaults(handler=_sim_bike)

    replay = kinds.add_parser(
        "replay",
        help="replay a raw capture on a pty",
        description=(
            "Replay a raw capture (from `ridesync record`) on a pty at --speed. Timing comes from "
            "FILE.timing when present, otherwise --rate bytes per second (default 130, a Peloton bus)."
        ),
    )
    replay.add_argument("file", metavar="FILE")
    _common(replay)
    replay.add_argument("--rate", type=argtypes.positive_float, default=130.0, metavar="B/S")
    replay.add_argument(
        "--start-delay",
        type=float,
        default=2.0,
        metavar="S",
        help="wait S seconds before playing, so a reader can open the pty (bytes nobody reads are lost, "
        "as on a real line; default 2)",
    )
    replay.set_defaults(handler=_sim_replay)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pty", action="store_true", required=True, help="serve on a pty (the only transport)")
    p.add_argument("--link", metavar="PATH", help="stable path (symlink) for the pty; default: a temp dir")
    p.add_argument(
        "--speed",
        type=argtypes.positive_float,
        default=1.0,
        metavar="X",
        help="play X times faster (default 1)",
    )
    p.add_argument(
        "--duration", type=argtypes.positive_float, default=None, metavar="S", help="stop after S seconds"
    )


def _parse_faults(spec: str) -> dict[str, int]:
    from engine.cli.main import CliError

    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition("=")
        if name not in _FAULT_KINDS or not count.isdigit():
            raise CliError(f"--faults: '{part}' is not one of {', '.join(k + '=N' for k in _FAULT_KINDS)}")
        out[name] = int(count)
    return out


def _link_path(args: argparse.Namespace, name: str) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
    if args.link:
        return Path(args.link), None
    tmp = tempfile.TemporaryDirectory(prefix="ridesync-sim-")
    return Path(tmp.name) / name, tmp


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _term_as_interrupt(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A lab script stops a background sim with SIGTERM: treat it like Ctrl-C (summary, pty cleaned up).
    Installed before the pty path is printed, so a kill right after reading it is handled too, and
    restored afterwards, so an in-process caller keeps its own handler."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return handler(args)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapped


def _check(args: argparse.Namespace) -> None:
    from engine.cli.main import CliError

    if args.speed <= 0:
        raise CliError("--speed must be > 0")
    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be > 0")


@_term_as_interrupt
def _sim_bike(args: argparse.Namespace) -> int:
    from adapters.serial.sim.bike import BikeSimulator
    from adapters.serial.sim.bus import BusEmitter
    from adapters.serial.sim.faults import Faults
    from adapters.serial.sim.line_sensor import DEFAULT_BAUD, LineSensor
    from adapters.serial.sim.profile import ProfileError, RideProfile
    from adapters.serial.sim.pty_port import PtyPort
    from engine.cli.main import CliError

    _check(args)
    if args.baud is not None and args.baud <= 0:
        raise CliError("--baud must be > 0")
    faults = Faults()
    for name, count in _parse_faults(args.faults).items():
        setattr(faults, name, count)
    try:
        profile = RideProfile.from_csv(args.profile) if args.profile else RideProfile.generated(1800)
    except ProfileError as exc:
        raise CliError(str(exc)) from None
    link, tmp = _link_path(args, "cadence" if args.protocol == "line" else "bike")
    port = PtyPort(link)
    second = (
        PtyPort(link.with_name(link.name + "-bike"))
        if args.mode == "listen" and args.tap_ports == 2
        else None
    )
    try:
        port.plug()
        if second is not None:
            second.plug()
    except OSError as exc:
        port.close()
        raise CliError(f"cannot create {link}: {exc.strerror or exc}") from None
    device: Any
    if args.protocol == "line":
        device = LineSensor(
            port, profile=profile, speed=args.speed, faults=faults, baud=args.baud or DEFAULT_BAUD
        )
    elif args.mode == "listen":
        device = BusEmitter(
            port,
            second,
            profile=profile,
            speed=args.speed,
            faults=faults,
            boot=args.tablet_boots,
            lines=args.lines,
        )
    else:
        device = BikeSimulator(port, profile=profile, speed=args.speed, faults=faults)
    hello: dict[str, Any] = {"pty": port.path, "tty": port.tty_name}
    if second is not None:
        hello["pty_bike_line"] = second.path
    if args.protocol == "line":
        hello["baud"] = args.baud or DEFAULT_BAUD
    hello.update(
        protocol=args.protocol,
        mode="line" if args.protocol == "line" else args.mode,
        speed=args.speed,
        profile_s=profile.duration_s,
    )
    try:
        emit(hello)  # inside the try: a SIGTERM right after the path is read still cleans up
        asyncio.run(_serve(device.run(), args.duration))
    except KeyboardInterrupt:
        pass
    finally:
        port.close()
        if second is not None:
            second.close()
        if tmp is not None:
            tmp.cleanup()
    summary: dict[str, Any] = {"values_sent": len(device.sent), "bytes_written": port.bytes_written}
    summary["faults_injected"] = faults.injected
    emit({"summary": summary})
    return 0


@_term_as_interrupt
def _sim_replay(args: argparse.Namespace) -> int:
    from adapters.serial.sim.pty_port import PtyPort
    from adapters.serial.sim.replay import CaptureError, Replayer
    from engine.cli.main import CliError

    _check(args)
    if args.rate <= 0:
        raise CliError("--rate must be > 0")
    link, tmp = _link_path(args, "replay")
    port = PtyPort(link)
    try:
        replayer = Replayer.from_file(port, args.file, speed=args.speed, rate=args.rate)
        port.plug()
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot create {link}: {exc.strerror or exc}") from None
    try:
        emit({"pty": port.path, "tty": port.tty_name, "bytes": len(replayer.data), "speed": args.speed})
        asyncio.run(_serve(_delayed(replayer.run(), args.start_delay), args.duration, linger=True))
    except KeyboardInterrupt:
        pass
    finally:
        port.close()
        if tmp is not None:
            tmp.cleanup()
    emit({"summary": {"bytes_sent": replayer.bytes_sent, "bytes_unheard": replayer.bytes_unheard}})
    return 0


async def _delayed(run: Any, delay: float) -> None:
    await asyncio.sleep(max(0.0, delay))
    await run


async def _serve(run: Any, duration: float | None, *, linger: bool = False) -> None:
    """Run the device until it finishes (a played-out profile keeps the pty open: readers may still be
    draining it) or `duration` passes or Ctrl-C or SIGTERM (a lab script stopping a background sim)."""
    try:
        async with asyncio.timeout(duration):
            await run
            if linger or duration is not None:
                await asyncio.Event().wait()
    except TimeoutError:
        pass
