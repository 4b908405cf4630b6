"""`ridesync demo`: the group-class demo on embedded defaults (engine/demo), and its simulated sensors.

This module is a composition root (docs/architecture.md#ports-and-adapters: only the composition roots wire
adapters in): it opens
one virtual BLE radio with a simulated strap per rider and one simulated bike per rider: on a pty
(Peloton-bus bikes in poll mode and DIY line-protocol cadence sensors) or, with `--mix`, some of them
standard BLE bikes (FTMS, CPS, CSC) on the same radio; and hands them to
`engine.demo.session.running_demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from engine.cli import argtypes
from engine.cli.main import CliError

if TYPE_CHECKING:
    from engine.demo.roster import RiderSpec
    from engine.demo.sensors import CableControl, RiderSensors
    from engine.demo.session import DemoSession
    from engine.readings import SensorSource

# (simulated strap, rider, speed): drives one strap's notifications until cancelled.
StrapPlayer = Callable[[Any, "RiderSpec", float], Coroutine[Any, Any, None]]

SUMMARY_EVERY_S = 5.0
# Long enough that a class never runs out of ride at --speed 10 for an hour.
RIDE_PROFILE_S = 3 * 3600


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="the group-class demo: backend, hub, dashboard and N simulated riders, all local",
        description="Starts the backend with the class hub and dashboard on 127.0.0.1, and N simulated "
        "riders (a BLE strap on a virtual radio and a bike on a pty each) streaming to it. Prints the "
        "dashboard URL; Ctrl-C stops it cleanly.",
    )
    p.add_argument("--riders", type=int, default=8, help="number of riders, 1..24 (default 8)")
    p.add_argument(
        "--duration", type=float, default=None, metavar="S", help="wall seconds; default: until Ctrl-C"
    )
    p.add_argument("--speed", type=float, default=1.0, metavar="X", help="sensor playback speed (default 1)")
    p.add_argument(
        "--headless", action="store_true", help="never open a browser (the default only prints the URL)"
    )
    p.add_argument("--open", action="store_true", help="open the dashboard in the default browser")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout, ending with the report")
    p.add_argument(
        "--port", type=argtypes.port, default=8750, help="port (default 8750; taken or 0: a free one)"
    )
    p.add_argument("--data", default=None, metavar="DIR", help="data dir (default: a temporary one)")
    p.add_argument("--class", dest="class_id", default="demo-class", metavar="NAME", help="class id")
    p.add_argument(
        "--summary-every", type=float, default=SUMMARY_EVERY_S, metavar="S", help="console summary period"
    )
    p.add_argument(
        "--start-at", type=int, default=0, metavar="S", help="start S simulated seconds into the class"
    )
    p.add_argument(
        "--chaos",
        action="store_true",
        help="during the class: drop one rider's sync network, walk one strap out of range, unplug one "
        "bike's USB; each is healed and its recovery shown and reported",
    )
    p.add_argument(
        "--chaos-seed",
        type=int,
        default=None,
        metavar="N",
        help="with --chaos: the seed that picks which rider gets which fault (default: a fixed seed, so "
        "runs are reproducible; the picks are printed at the start)",
    )
    p.add_argument(
        "--baud",
        type=int,
        default=None,
        metavar="N",
        help="baud rate of the riders' simulated DIY cadence sensors and their readers (default 115200)",
    )
    p.add_argument(
        "--mix",
        action="store_true",
        help="every kind of bike in the room: Peloton-bus bikes, DIY line cadence sensors and standard BLE "
        "bikes (FTMS trainer, Cycling Power meter, CSC pod) on the straps' virtual radio",
    )
    p.add_argument("--log-level", type=argtypes.log_level, default="WARNING", metavar="LEVEL")
    p.set_defaults(handler=_run)


async def _play_profile(strap: Any, spec: RiderSpec, speed: float) -> None:
    from adapters.ble.sim import HrProfile

    await strap.play(HrProfile(spec.hr_points), speed)


async def open_sim_bike(
    stack: contextlib.AsyncExitStack, spec: RiderSpec, speed: float
) -> tuple[SensorSource, str]:
    """The rider's simulated bike on its own pty (closed with `stack`), and the pty's path."""
    bike, path, _cable = await open_sim_bike_with_cable(stack, spec, speed)
    return bike, path


def rider_ride(spec: RiderSpec) -> Any:
    """The rider's ride (a serial simulator `RideProfile`): what their bike plays, whatever its kind."""
    from adapters.serial.peloton.synth import BikeSample
    from adapters.serial.sim.profile import RideProfile

    base = RideProfile.generated(RIDE_PROFILE_S, seed=spec.seed)
    return RideProfile(
        tuple(
            BikeSample(s.cadence, min(9999.9, round(s.power_w * spec.power_scale, 1)), s.resistance_raw)
            for s in base.samples[spec.start_at_s :] or base.samples[-1:]
        )
    )


async def open_sim_bike_with_cable(
    stack: contextlib.AsyncExitStack, spec: RiderSpec, speed: float, *, baud: int | None = None
) -> tuple[SensorSource, str, CableControl]:
    """`open_sim_bike`, plus the simulated USB cable (`--chaos` unplugs it)."""
    from adapters.serial.factory import open_serial_sources

    ride = rider_ride(spec)
    bikes = await stack.enter_async_context(
        open_serial_sources(
            "sim",
            protocol=spec.bike,
            mode="poll",
            speed=speed,
            profile=ride,
            baud=baud if spec.bike == "line" else None,
        )
    )
    return bikes[0], bikes.simulators[0].paths[0], bikes.simulators[0]


@contextlib.asynccontextmanager
async def simulated_rig(
    specs: Sequence[RiderSpec],
    speed: float,
    *,
    player: StrapPlayer = _play_profile,
    baud: int | None = None,
) -> AsyncIterator[list[RiderSensors]]:
    """One virtual radio with a strap per rider, and a simulated bike per rider: on its own pty, or, for
    a BLE bike (`--mix`), on the straps' radio and adapter.

    Each strap plays its rider's heart-rate profile at `speed`; `player(strap, spec, speed)` replaces
    that (the latency benchmark plays values it can recognise)."""
    import asyncio

    from adapters.ble.bike_factory import open_bike_sources
    from adapters.ble.factory import SIM_CONNECT_TIMEOUT_S, SIM_SCAN_TIMEOUT_S, open_hr_sources
    from adapters.ble.link_state import BackoffPolicy
    from adapters.ble.source import StrapSettings
    from engine.demo.sensors import RiderSensors

    n = len(specs)
    async with contextlib.AsyncExitStack() as stack:
        # The strap adapter notices silence (2 s: two missed beats) before the hub's 3 s staleness limit, so a
        # strap that walks away shows "no contact" first, then "stale"; a strap that comes back is
        # reconnected within seconds (backoff capped at 5 s instead of 30: a class is short).
        settings = StrapSettings(
            connect_timeout_s=SIM_CONNECT_TIMEOUT_S,
            scan_timeout_s=SIM_SCAN_TIMEOUT_S,
            stale_after_s=2.0,
            tick_s=0.25,
            backoff=BackoffPolicy(base_s=0.5, cap_s=5.0),
        )
        ble = [spec for spec in specs if spec.ble_profile is not None]
        # One simulated adapter holds every strap and BLE bike, as a room's would (slots permitting).
        hr = await stack.enter_async_context(
            open_hr_sources(
                f"sim:{n}", speed=speed, settings=settings, slots=max(7, n + len(ble)), play=False
            )
        )
        sim = hr.simulation
        assert sim is not None
        ble_bikes: dict[str, tuple[SensorSource, Any]] = {}
        if ble:
            sources = await stack.enter_async_context(
                open_bike_sources(
                    f"sim:{len(ble)}",
                    speed=speed,
                    settings=settings,
                    simulation=sim,
                    kinds=[str(spec.ble_profile) for spec in ble],
                    profiles=[rider_ride(spec) for spec in ble],
                )
            )
            for spec, source, sim_bike in zip(ble, sources, sim.bikes[-len(ble) :], strict=True):
                ble_bikes[spec.device] = (source, sim_bike)
        out: list[RiderSensors] = []
        for spec, hr_source, strap in zip(specs, hr, sim.straps, strict=True):
            if spec.device in ble_bikes:
                bike, sim_bike = ble_bikes[spec.device]
                # A BLE bike has no cable: `--chaos` "unplugs" it by taking it out of range.
                cable: CableControl = _OutOfRange(sim_bike)
                where = f"BLE {spec.ble_profile} bike {sim_bike.address} on the same radio"
            else:
                bike, path, cable = await open_sim_bike_with_cable(stack, spec, speed, baud=baud)
                where = f"{spec.bike} bike on {path}"
            where = f"strap {strap.address} on the virtual radio; {where}"
            out.append(RiderSensors(hr=hr_source, bike=bike, strap=strap, cable=cable, describe=where))
        async with asyncio.TaskGroup() as tg:
            players = [
                tg.create_task(player(strap, spec, speed), name=f"strap {spec.device}")
                for spec, strap in zip(specs, sim.straps, strict=True)
            ]
            try:
                yield out
            finally:
                for task in players:
                    task.cancel()


class _OutOfRange:
    """A simulated BLE bike's range as the demo's cable control (engine/demo/sensors.py)."""

    def __init__(self, bike: Any) -> None:
        self._bike = bike

    def unplug(self) -> None:
        self._bike.walk_out_of_range()

    def replug(self) -> None:
        self._bike.walk_back()


def _validate(args: argparse.Namespace) -> None:
    import math

    from engine.demo.chaos import MIN_DURATION_S
    from engine.demo.roster import MAX_RIDERS
    from engine.ids import ID_CHARS, valid_id

    if args.chaos_seed is not None and not args.chaos:
        raise CliError("--chaos-seed only applies with --chaos")
    if args.chaos and args.duration is not None and args.duration < MIN_DURATION_S:
        raise CliError(f"--chaos needs --duration of at least {MIN_DURATION_S:g} s (or none)")
    if not 1 <= args.riders <= MAX_RIDERS:
        raise CliError(f"--riders must be 1..{MAX_RIDERS}")
    if not (math.isfinite(args.speed) and 0 < args.speed <= 100):
        raise CliError("--speed must be in (0, 100]")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise CliError("--duration must be a positive number of seconds")
    if not valid_id(args.class_id, 64):
        raise CliError(f"--class must be an id of 1-64 characters: {ID_CHARS}")
    if not 0 <= args.start_at <= 7200:
        raise CliError("--start-at must be 0..7200 seconds")
    if not args.summary_every > 0:
        raise CliError("--summary-every must be positive")
    if args.baud is not None and args.baud <= 0:
        raise CliError("--baud must be positive")


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from engine import logs

    _validate(args)
    logs.configure(args.log_level)
    from pathlib import Path

    from engine.auth.tokens import TokenError
    from engine.cli.datadir import check_data_dir, os_error, serving_lock
    from engine.events.idempotency import LedgerUnreadable
    from engine.store import StoreError

    if args.data:
        check_data_dir(Path(args.data))
    try:
        # Its backend serves from --data: not beside a `ridesync serve` on the same dir.
        with serving_lock(Path(args.data)) if args.data else contextlib.nullcontext():
            asyncio.run(_main(args))
    except OSError as exc:
        if exc.filename is not None:  # a file or dir under --data
            raise os_error(exc) from None
        raise CliError(f"demo failed to start: {exc}") from exc
    except (TokenError, StoreError, LedgerUnreadable) as exc:  # a damaged --data: the message names the file
        raise CliError(str(exc)) from None
    return 0


async def _main(args: argparse.Namespace) -> None:
    import asyncio
    import signal
    import sys
    import time
    from pathlib import Path

    from engine.cli.output import emit
    from engine.demo.chaos import ChaosPlan, ChaosRun, chaos_report
    from engine.demo.console import summary_json, summary_line
    from engine.demo.monitor import LiveValue
    from engine.demo.report import demo_report
    from engine.demo.session import DemoConfig, running_demo
    from engine.demo.victims import DEFAULT_CHAOS_SEED

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()
        elif main_task is not None:  # a second Ctrl-C while stopping: stop harder
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    latencies: list[float] = []

    def on_value(value: LiveValue) -> None:
        if value.metric == "hr":
            latencies.append(value.received - value.t)

    config = DemoConfig(
        riders=args.riders,
        speed=args.speed,
        class_id=args.class_id,
        port=args.port,
        data_dir=Path(args.data) if args.data else None,
        start_at_s=args.start_at,
        mix=args.mix,
        chaos=args.chaos,
        chaos_seed=DEFAULT_CHAOS_SEED if args.chaos_seed is None else args.chaos_seed,
    )

    def on_chaos(event: dict[str, Any]) -> None:
        if args.json:
            emit(event)
            return
        extra = f": {event['evidence']}" if event.get("evidence") else ""
        print(
            f"  chaos: {event['fault']} on {event['device']} {event['phase']} at {event['t_s']} s{extra}",
            flush=True,
        )

    rig = functools.partial(simulated_rig, baud=args.baud) if args.baud else simulated_rig
    async with running_demo(config, rig, on_value=on_value) as demo:
        if args.json:
            emit(
                {
                    "event": "listening",
                    "url": demo.base_url,
                    "dashboard_url": demo.dashboard_url,
                    "class": config.class_id,
                    "riders": [r.spec.device for r in demo.riders],
                    "data_dir": str(demo.data_dir),
                }
            )
        else:
            print(f"ridesync demo: {len(demo.riders)} riders in class {config.class_id!r}", flush=True)
            print(f"  dashboard: {demo.dashboard_url}", flush=True)
            for r in demo.riders:
                print(f"  {r.spec.device} {r.spec.name:<6} {r.sensors.describe}", flush=True)
            print("  Ctrl-C to stop", flush=True)
        if args.open and not args.headless:
            import webbrowser

            webbrowser.open(demo.dashboard_url)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        chaos: ChaosRun | None = None
        chaos_task: asyncio.Task[None] | None = None
        if args.chaos:
            chaos = ChaosRun(demo, ChaosPlan.for_class(args.duration, args.speed), on_chaos)
            if args.json:
                emit(chaos.plan_event())
            else:
                print(chaos_plan_line(demo, chaos.plan_event()), flush=True)
            chaos_task = asyncio.create_task(chaos.run(), name="demo-chaos")
        while not stop.is_set():
            wait = args.summary_every
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stop.wait()
            if stop.is_set():
                break
            if deadline is None or time.monotonic() < deadline - 0.5:
                if args.json:
                    emit(summary_json(demo))
                else:
                    print(summary_line(demo), flush=True)
        if not args.json:
            print("ending the rides and waiting for the backend to reconcile them...", flush=True)
        if chaos_task is not None:
            # Recoveries still under way get the replicas' sync bound; cancelling heals what is broken.
            await asyncio.wait([chaos_task], timeout=0 if stop.is_set() else config.sync_timeout_s)
            chaos_task.cancel()
            await asyncio.gather(chaos_task, return_exceptions=True)
        await demo.end_rides()
        report = demo_report(demo, latencies)
        if chaos is not None:
            reconciliation = report.get("reconciliation")
            report["chaos"] = chaos_report(chaos, reconciliation if isinstance(reconciliation, dict) else {})
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
    if args.json:
        emit(report)
    else:
        print(summary_footer(report), file=sys.stdout, flush=True)


def chaos_plan_line(demo: DemoSession, plan: dict[str, Any]) -> str:
    names = {r.spec.device: r.spec.name for r in demo.riders}
    picks = ", ".join(f"{fault} -> {dev} ({names.get(dev, '?')})" for fault, dev in plan["victims"].items())
    return (
        f"  chaos plan (seed {plan['seed']}): {picks}; from {plan['start_s']:g} s, every "
        f"{plan['stagger_s']:g} s, each lasting {plan['hold_s']:g} s"
    )


def summary_footer(report: dict[str, object]) -> str:
    lat = report.get("live_latency_hr")
    lat_text = ""
    if isinstance(lat, dict) and lat.get("n"):
        lat_text = f"; live HR latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms ({lat['n']} values)"
    riders = report.get("riders")
    n = len(riders) if isinstance(riders, list) else 0
    durable = report.get("durable_lane")
    durable_text = ""
    if isinstance(durable, dict):
        durable_text = (
            f"; durable lane: {durable['reconciled']}/{durable['rides']} rides reconciled, "
            f"{durable['lost']} samples lost, {durable['duplicated']} duplicated"
        )
    chaos = report.get("chaos")
    chaos_text = ""
    if isinstance(chaos, dict):
        faults = chaos.get("faults")
        if isinstance(faults, list):
            ok = sum(
                1 for f in faults if isinstance(f, dict) and f.get("recovered") and f.get("ride_reconciled")
            )
            chaos_text = f"; chaos: {ok}/{len(faults)} faults recovered with their rides reconciled"
    return (
        f"ridesync demo stopped after {report.get('elapsed_s')} s, {n} riders"
        f"{lat_text}{durable_text}{chaos_text}"
    )
