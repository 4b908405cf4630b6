"""`ridesync ride`: a bike replica. Records from sensors, works offline, syncs when it can.

With --json, every line is a JSON object: sync state changes (`{"event": "sync", "state", "reason",
"unacked_samples"}`, e.g. "syncing 1,800 samples"), the end post, and last the summary
`{"ride_id", "samples_recorded", "sync_state", "sync_reason", "end_events_counted", ...}`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from engine.cli import argtypes
from engine.device.defaults import DEFAULT_HEARTBEAT_S


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ride",
        help="run a bike replica: record from sensors, sync with the backend, end the ride",
        description=(
            "Record a ride on this bike: one sample per ride second from --hr, --bike and/or --serial, "
            "durable on arrival, synced to --backend whenever it is reachable. --duration and --speed "
            "are in ride time: --duration 1800 --speed 60 records a 30-minute ride in 30 s. At the end "
            "(or on Ctrl-C) the ride is ended and the command waits, bounded by --sync-timeout, until "
            "the backend holds it all; it also stops as soon as another replica (the app) ends the "
            "ride. Running again with the same --data and --ride-id resumes an interrupted ride; an "
            "ended one is refused (exit 2): `ridesync sync` pushes what this replica holds."
        ),
    )
    add_ride_arguments(p)
    p.set_defaults(handler=_ride)


def add_ride_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of `ride`; `ridesync bridge` is a ride with an extra output and takes them all."""
    p.add_argument(
        "--backend",
        required=True,
        type=argtypes.backend_url,
        metavar="URL",
        help="backend, e.g. http://127.0.0.1:8750",
    )
    p.add_argument(
        "--token", required=True, metavar="T", help="bike token (`ridesync token issue --role bike`)"
    )
    p.add_argument("--hr", metavar="sim|ADDRESS|NAME", help="heart-rate strap")
    p.add_argument(
        "--bike", metavar="sim|ADDRESS|NAME", help="BLE bike, trainer, power meter or cadence sensor"
    )
    p.add_argument("--serial", metavar="sim|PORT", help="serial bike or cadence sensor")
    p.add_argument("--protocol", choices=["peloton", "line"], default="peloton")
    p.add_argument("--mode", choices=["listen", "poll"], default="poll", help="Peloton bus mode")
    p.add_argument("--ride-id", default=None, metavar="ID", help="default: <device>-<unix time>")
    p.add_argument("--class", dest="class_id", default=None, metavar="C", help="also publish live to class C")
    p.add_argument(
        "--duration", type=float, default=None, metavar="S", help="ride seconds; default: until Ctrl-C"
    )
    p.add_argument(
        "--name", default=None, metavar="TEXT", help="display name in the class (wins over the token's)"
    )
    p.add_argument(
        "--max-hr", type=int, default=None, metavar="BPM", help="max HR for the zones (wins over the token's)"
    )
    p.add_argument("--speed", type=float, default=1.0, metavar="X", help="simulation speed-up (ride time)")
    p.add_argument("--data", default=None, metavar="DIR", help="data dir ($RIDESYNC_DATA or ./ridesync-data)")
    p.add_argument("--sync-timeout", type=float, default=60.0, metavar="S", help="wait this long at the end")
    p.add_argument("--retry-cap", type=float, default=30.0, metavar="S", help="longest reconnect backoff")
    p.add_argument(
        "--heartbeat", type=float, default=DEFAULT_HEARTBEAT_S, metavar="S", help="WebSocket ping interval"
    )
    # None: the store's own default fold interval (named once, in engine/store/samplelog.py).
    p.add_argument("--fold-interval", type=float, default=None, metavar="S", help=argparse.SUPPRESS)
    p.add_argument(
        "--segment-interval",
        type=float,
        default=None,
        metavar="S",
        help="with a live link, fold into short-lived live segments and consolidate them into the bike "
        "document every S seconds of ride time (default 300; 0: no live segments, every fold is a change "
        "of the bike document)",
    )
    p.add_argument("--log-level", type=argtypes.log_level, default="WARNING", metavar="LEVEL")
    p.add_argument("--json", action="store_true", help="JSON lines: sync events, then the summary")
    from engine.cli.sensor_sources import add_serial_arguments

    add_serial_arguments(p)


def _ride(args: argparse.Namespace) -> int:
    return run_ride(args, sensor_opener(args))


def run_ride(
    args: argparse.Namespace,
    sensors: Callable[[], AbstractAsyncContextManager[list[Any]]],
    before: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    add_to_summary: Callable[[], dict[str, Any]] | None = None,
) -> int:
    """Validate `args`, run the ride on `sensors` (an opener of the sensor sources) and print it.

    `before`: an async context manager factory entered on the ride's event loop before the ride starts
    and left after it ends (the bridge opens its controller there, so a transport that cannot open stops
    the command before anything is recorded). `add_to_summary()`: extra keys for the summary."""
    import time
    from pathlib import Path

    from engine import logs
    from engine.auth.tokens import TokenError
    from engine.cli.datadir import check_data_dir
    from engine.cli.main import CliError
    from engine.datadir import default_data_dir
    from engine.device.bike import BikeOptions
    from engine.device.identity import token_claims
    from engine.ids import ID_CHARS, valid_id
    from engine.ride import schema

    try:
        claims = token_claims(args.token)
    except TokenError as exc:
        raise CliError(f"--token: {exc}") from exc
    if claims.role.value != "bike":
        raise CliError(f"--token is a {claims.role.value} token; `ridesync ride` needs a bike token")
    if not args.hr and not args.serial and not args.bike:
        raise CliError("give --hr, --bike and/or --serial (e.g. --hr sim)")
    for name, value in (("--speed", args.speed), ("--sync-timeout", args.sync_timeout)):
        if not value > 0:
            raise CliError(f"{name} must be positive")
    if args.duration is not None and not args.duration > 0:
        raise CliError("--duration must be positive")
    from engine.store.samplelog import DEFAULT_FOLD_INTERVAL_S, DEFAULT_SEGMENT_INTERVAL_S

    fold_interval = DEFAULT_FOLD_INTERVAL_S if args.fold_interval is None else args.fold_interval
    if not (args.retry_cap > 0 and args.heartbeat > 0 and fold_interval > 0):
        raise CliError("--retry-cap, --heartbeat and --fold-interval must be positive")
    segment_interval = DEFAULT_SEGMENT_INTERVAL_S if args.segment_interval is None else args.segment_interval
    if not 0 <= segment_interval < float("inf"):  # also refuses nan
        raise CliError("--segment-interval must be 0 (no live segments) or a positive number of seconds")
    from engine.auth.tokens import MAX_HR_RANGE, valid_max_hr, valid_name

    if args.name is not None and not valid_name(args.name):
        raise CliError("--name must be 1..64 printable characters, no leading or trailing spaces")
    if args.max_hr is not None and not valid_max_hr(args.max_hr):
        raise CliError(f"--max-hr must be an integer {MAX_HR_RANGE[0]}..{MAX_HR_RANGE[1]}")
    ride_id = args.ride_id or f"{claims.device}-{int(time.time())}"
    try:
        schema.check_ride_id(ride_id)
    except ValueError as exc:
        raise CliError(f"--ride-id: {exc}") from exc
    if args.class_id is not None and not valid_id(args.class_id):
        raise CliError(f"--class: invalid class id {args.class_id!r}: {ID_CHARS}")
    data_root = Path(args.data) if args.data else default_data_dir()
    check_data_dir(data_root)
    logs.configure(args.log_level)
    options = BikeOptions(
        backend=args.backend,
        token=args.token,
        device=claims.device,
        ride_id=ride_id,
        data_root=data_root,
        sensors=sensors,
        class_id=args.class_id,
        name=args.name,
        max_hr=args.max_hr,
        duration_s=args.duration,
        speed=args.speed,
        fold_interval_s=fold_interval,
        segment_interval_s=segment_interval or None,
        retry_cap_s=args.retry_cap,
        heartbeat_s=args.heartbeat,
        sync_timeout_s=args.sync_timeout,
        on_event=printer(args.json),
        fail_fast=True,
    )
    summary = _run(options, before)
    if add_to_summary is not None:
        summary.update(add_to_summary())
    printer(args.json, final=True)(summary)
    return 0 if summary.get("sync_state") == "reconciled" else 1


def sensor_opener(args: argparse.Namespace) -> Any:
    """The composition root wires the adapters in: the engine never imports them."""
    import functools
    from pathlib import Path

    from engine.cli.sensor_sources import open_sensor_sources, serial_options_from
    from engine.datadir import default_data_dir

    return functools.partial(
        open_sensor_sources,
        hr=args.hr,
        bike=args.bike,
        serial=args.serial,
        protocol=args.protocol,
        mode=args.mode,
        speed=args.speed,
        serial_options=serial_options_from(args, Path(args.data) if args.data else default_data_dir()),
    )


def printer(as_json: bool, final: bool = False) -> Any:
    """JSON lines on stdout with --json; otherwise readable lines: progress on stderr, the summary last on
    stdout (engine/cli/output.py)."""
    import sys

    from engine.cli.output import emit, human, ride_summary_text, say

    def show(obj: dict[str, Any]) -> None:
        if as_json:
            emit(obj)
        elif final:
            say(ride_summary_text(obj))
        else:
            say(human(obj), sys.stderr)

    return show


def _run(
    options: Any, before: Callable[[], AbstractAsyncContextManager[None]] | None = None
) -> dict[str, Any]:
    """Run the ride; the first Ctrl-C (or SIGTERM) ends it cleanly, a second one aborts."""
    import asyncio
    import contextlib
    import signal

    from adapters.ble.factory import HrSpecError
    from adapters.serial.factory import SpecError
    from engine.cli.datadir import os_error
    from engine.cli.main import CliError
    from engine.device.bike import BikeRide, RideAlreadyEnded
    from engine.store import StoreError

    async def main() -> dict[str, Any]:
        async with before() if before is not None else contextlib.nullcontext():
            return await ride()

    async def ride() -> dict[str, Any]:
        try:
            bike = BikeRide(options)
        except StoreError as exc:
            raise CliError(str(exc)) from exc
        except OSError as exc:  # the replica's dir under --data (engine/device/common.py)
            raise os_error(exc) from None
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal() -> None:
            if bike.stop.is_set():
                task.cancel()
            bike.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        try:
            return await bike.run()
        except RideAlreadyEnded as exc:
            raise CliError(str(exc)) from exc
        except asyncio.CancelledError:
            return {**bike.summary(), "aborted": True}
        finally:
            bike.close()

    try:
        return asyncio.run(main())
    except (HrSpecError, SpecError) as exc:
        raise CliError(str(exc)) from exc
    except BaseExceptionGroup as group:
        from engine.cli.failures import sync_refusal
        from engine.cli.sensor_sources import fatal_sensor_error

        if (message := sync_refusal(group) or fatal_sensor_error(group)) is None:
            raise
        raise CliError(message) from None
