"""The serial scenarios: the USB serial adapter unplugged and replugged, the Peloton calibration table
seen or loaded, and the DIY line sensor across the 70-minute mark where Arduino tick math overflows.

They open the product's own sources (`open_serial_sources`, real pyserial on the port or on a pty
simulator), as `ridesync sensors` does. Options that only some builds have (`calibration_file`,
`data_dir`, `bike_id`, `baud`) are passed when this build's `open_serial_sources` takes them, and the
report says when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import math
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from adapters.serial.cadence import CrankCadence
from adapters.serial.factory import SerialSources, open_serial_sources
from adapters.serial.line_source import LineSource
from adapters.serial.peloton.synth import BikeSample
from adapters.serial.sim import sensor_clock
from adapters.serial.sim.line_sensor import LineSensor
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort
from engine.lab.context import (
    SIM_WRAP_LEAD_S,
    SIM_WRAP_RPM,
    SIM_WRAP_SPEED,
    SIM_WRAP_TAIL_S,
    Lab,
)
from engine.lab.report import ScenarioResult
from engine.lab.tap import Tap, is_reading, is_state
from engine.readings import Kind, Reading, SourceState

NOT_REPORTED = "not reported by this build"
# Largest cadence error (vs the simulated rider's) the wrap scenario accepts.
WRAP_TOLERANCE_PCT = 2.0
# A real line sensor: no reading gap longer than this (it sends at least one line a second).
LINE_MAX_GAP_S = 5.0
MILLIS_MARK = ("millis()*1024 overflows uint32", sensor_clock.MILLIS_OVERFLOW_MS)
MICROS_MARK = ("micros() wraps", sensor_clock.MICROS_WRAP_MS)


def factory_options() -> set[str]:
    """The keyword arguments this build's open_serial_sources accepts."""
    return set(inspect.signature(open_serial_sources).parameters)


@contextlib.asynccontextmanager
async def open_device(lab: Lab, spec: str, protocol: str) -> AsyncIterator[SerialSources]:
    c = lab.config
    supported = factory_options()
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if c.baud is not None:
        if "baud" in supported:
            kwargs["baud"] = c.baud
        else:
            options["baudrate"] = c.baud
    if protocol == "peloton":
        for name, value in (
            ("calibration_file", c.calibration),
            ("data_dir", c.data_dir),
            ("bike_id", c.bike_id),
        ):
            if value is not None and name in supported:
                kwargs[name] = value
    async with open_serial_sources(
        spec,
        protocol=protocol,
        mode=c.mode,
        speed=c.speed,
        source_options=options or None,
        **kwargs,
    ) as sources:
        yield sources


def _simulated(spec: str) -> bool:
    return spec == "sim" or spec.startswith("sim:")


def _port_hint(spec: str) -> str:
    if _simulated(spec) or "/dev/serial/by-id/" in spec:
        return ""
    return (
        "; a USB adapter may come back under another /dev/tty* name: give its /dev/serial/by-id/ path, "
        "which survives a replug"
    )


# --- unplugged and replugged -------------------------------------------------------------------------


async def serial_unplug(lab: Lab, r: ScenarioResult) -> None:
    c = lab.config
    if not c.serial:
        r.skip("no serial device given: --serial PORT (--serial sim on the simulator)")
        return
    sim = _simulated(c.serial)
    timing = lab.timing(sim)
    port = c.serial
    async with open_device(lab, c.serial, c.protocol) as sources:
        source = sources[0]
        handle = sources.simulators[0] if sources.simulators else None
        if handle is not None:
            port = ",".join(handle.paths)
        if not sim:
            await lab.guide.ready(
                f"pedal (Peloton: a ride loaded, so the bus talks); keep the USB serial adapter on {port} "
                "within reach"
            )
        async with Tap(source) as tap:
            first = await tap.wait(is_reading(), timing.connect_s)
            if not r.check(first is not None, f"{port} gave readings within {timing.connect_s:g} s"):
                if tap.error:
                    r.reason += f": {tap.error}"
                return
            await asyncio.sleep(timing.settle_s)
            before = tap.readings()

            step = time.monotonic()
            if handle is not None:
                lab.guide.sim(f"the USB cable of {handle.name} is pulled (the pty closes, its path vanishes)")
                handle.unplug()
            else:
                lab.guide.prompt(
                    f"unplug the USB serial adapter ({port}) now, and keep it out", timing.lose_s
                )
            lost = await tap.wait(is_state(SourceState.LOST), timing.lose_s, after=step)
            if not r.check(lost is not None, f"the port was reported lost within {timing.lose_s:g} s"):
                if handle is not None:
                    handle.replug()
                return
            assert lost is not None
            lab.guide.say(f"port reported lost after {lost.at - step:.1f} s")
            if handle is not None:
                await asyncio.sleep(timing.absent_s)

            undo = time.monotonic()
            if handle is not None:
                lab.guide.sim(f"{handle.name} is plugged back in (a new pty behind the same path)")
                handle.replug()
            else:
                lab.guide.prompt("plug the USB serial adapter back in now (same USB port)", timing.recover_s)
            streaming = await tap.wait(is_state(SourceState.STREAMING), timing.recover_s, after=undo)
            recovered = await tap.wait(is_reading(), timing.recover_s, after=undo)
            if not r.check(
                recovered is not None,
                f"readings again within {timing.recover_s:g} s of the replug{_port_hint(port)}",
            ):
                return
            assert recovered is not None
            lab.guide.say(f"readings again after {recovered.at - undo:.1f} s")
            await asyncio.sleep(timing.settle_s)
            after = tap.readings(after=undo)
            reopened = [s for s in tap.states(after=undo) if s.state is SourceState.STREAMING]
            backoffs = [
                s.extra.get("retry_in_s")
                for s in tap.states(after=step)
                if s.state is SourceState.BACKING_OFF
            ]
            states = [s.state.value for s in tap.states(after=step)]
        summary = source.summary()

    seqs = [x.seq for x in before + after]
    r.measured = {
        "port": port,
        "protocol": c.protocol,
        "mode": c.mode if c.protocol == "peloton" else None,
        "timed_from": "step" if sim else "prompt",
        "time_to_lost_s": round(lost.at - step, 2),
        "lost_detail": getattr(lost.item, "detail", ""),
        # The port answering again (poll mode: the bike answers; a Peloton head unit then reads the
        # calibration table before it polls values, so the first reading comes a few seconds later).
        "time_to_streaming_s": round(streaming.at - undo, 2) if streaming is not None else None,
        "time_to_recover_s": round(recovered.at - undo, 2),
        "retries_in_s": backoffs,
        "readings_before": len(before),
        "readings_after": len(after),
        "last_seq_before": before[-1].seq if before else None,
        "first_seq_after": after[0].seq if after else None,
        "values_before": _last_values(before),
        "values_after": _last_values(after),
        "states": states,
        "reopened": bool(reopened) or bool(after),
        "counters": {k: summary[k] for k in ("opens", "open_failures", "port_losses") if k in summary},
    }
    r.check(summary.get("port_losses", 0) >= 1, "the source counted the port loss")
    r.check(
        bool(before and after) and seqs == sorted(set(seqs)) and after[0].seq > before[-1].seq,
        "sequence numbers continue across the replug (no restart, no duplicate)",
    )
    r.summary = (
        f"lost after {r.measured['time_to_lost_s']} s, readings again {r.measured['time_to_recover_s']} s "
        f"after the {'replug' if sim else 'prompt'}; seq {r.measured['last_seq_before']} -> "
        f"{r.measured['first_seq_after']}"
    )


def _last_values(readings: list[Reading]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for reading in readings:
        out[reading.kind.value] = reading.value
    return out


# --- calibration ------------------------------------------------------------------------------------


async def calibration(lab: Lab, r: ScenarioResult) -> None:
    c = lab.config
    if not c.serial:
        r.skip("no Peloton bike given: --serial PORT (--serial sim on the simulator)")
        return
    if c.protocol != "peloton":
        r.skip("Peloton bikes only: the DIY line protocol carries no resistance or calibration table")
        return
    sim = _simulated(c.serial)
    timing = lab.timing(sim)
    supported = factory_options()
    if not sim:
        hint = (
            " (a listening tap hears the table only while the tablet boots: reboot the tablet now, or "
            "give --calibration FILE)"
            if c.mode == "listen"
            else ""
        )
        await lab.guide.ready(f"pedal and turn the resistance knob through its range{hint}")
    async with open_device(lab, c.serial, "peloton") as sources:
        source = sources[0]
        async with Tap(source) as tap:
            first = await tap.wait(is_reading(Kind.RESISTANCE), timing.connect_s)
            if first is not None:
                await asyncio.sleep(timing.calibration_s)
            error = tap.error
        summary = source.summary()
    resistance = tap.readings(Kind.RESISTANCE)
    if not r.check(
        bool(resistance),
        f"resistance readings within {timing.connect_s:g} s" + (f": {error}" if error else ""),
    ):
        r.measured = {"resistance_readings": 0, "pct_reported": False, "calibration": None}
        return
    pcts = [x.pct for x in resistance if x.pct is not None]
    raws = [x.value for x in resistance if x.value is not None]
    origins = [x.extra["calibration"] for x in resistance if "calibration" in x.extra]
    table = origins[-1] if origins else NOT_REPORTED
    if origins and table is None:
        table = "none"
    r.measured = {
        "mode": c.mode,
        "resistance_readings": len(resistance),
        "pct_reported": bool(pcts),
        "pct_fraction": round(len(pcts) / len(resistance), 3),
        "pct_min": min(pcts) if pcts else None,
        "pct_max": max(pcts) if pcts else None,
        "raw_min": min(raws) if raws else None,
        "raw_max": max(raws) if raws else None,
        "calibration": table,
        "calibration_origins_seen": sorted({str(o) for o in origins}),
        "calibration_file": c.calibration,
        "calibration_file_supported": "calibration_file" in supported,
        "calibrations_read": summary.get("calibrations"),
    }
    if c.calibration is not None and "calibration_file" not in supported:
        lab.guide.say("this build cannot load a calibration file: --calibration was not used")
    r.check(
        bool(pcts),
        "resistance readings carry a percentage (a calibration table was seen or loaded"
        + ("; a tap hears it only at tablet boot: give --calibration FILE" if c.mode == "listen" else "")
        + ")",
    )
    r.summary = (
        f"{len(resistance)} resistance readings, pct "
        + (f"{min(pcts):g}..{max(pcts):g} %" if pcts else "absent")
        + f", table: {table}"
    )


# --- the DIY line sensor across the 70-minute mark --------------------------------------------------


async def line_clock_wrap(lab: Lab, r: ScenarioResult) -> None:
    spec = lab.config.line_spec
    if not spec:
        r.skip("no DIY line sensor given: --line PORT, or --protocol line (--serial sim on the simulator)")
        return
    if _simulated(spec):
        await _wrap_simulated(lab, r)
    else:
        await _wrap_real(lab, r, spec)


def wrap_sensor(
    tick_math: sensor_clock.TickMath, port: PtyPort | None = None
) -> tuple[float, float, LineSensor]:
    """(clock start ms, clock end ms, the simulated sensor) for the wrap scenario: booted just before
    the millis() overflow, riding past micros()'s wrap. Without a port only `records()` works."""
    start_ms = sensor_clock.MILLIS_OVERFLOW_MS - SIM_WRAP_LEAD_S * 1000
    end_ms = sensor_clock.MICROS_WRAP_MS + SIM_WRAP_TAIL_S * 1000
    seconds = math.ceil((end_ms - start_ms) / 1000)
    profile = RideProfile(tuple(BikeSample(SIM_WRAP_RPM, 0.0, 0) for _ in range(seconds)))
    sensor = LineSensor(
        cast(PtyPort, port),
        profile=profile,
        speed=SIM_WRAP_SPEED,
        device_id="sim-wrap",
        clock_start_ms=start_ms,
        tick_math=tick_math,
    )
    return start_ms, end_ms, sensor


def max_error_pct(rpms: list[float], expected: float) -> float | None:
    return round(max(abs(v - expected) / expected * 100 for v in rpms), 2) if rpms else None


def offline_error_pct(tick_math: sensor_clock.TickMath) -> float | None:
    """The largest cadence error a receiver computes from the simulated firmware's records (no I/O)."""
    _, _, sensor = wrap_sensor(tick_math)
    cadence = CrankCadence()
    rpms = [u.rpm for u in (cadence.on_record(rec) for _, rec in sensor.records()) if u and not u.held]
    return max_error_pct(rpms, SIM_WRAP_RPM)


def dips(values: list[float]) -> int:
    """Readings below half of both neighbours while pedalling: what one record spanning a clock jump
    looks like (a rider does not halve cadence for one second and come straight back)."""
    return sum(
        1
        for a, b, c in zip(values, values[1:], values[2:], strict=False)
        if a > 0 and c > 0 and b < 0.5 * min(a, c)
    )


async def _wrap_simulated(lab: Lab, r: ScenarioResult) -> None:
    timing = lab.timing(True)
    with tempfile.TemporaryDirectory(prefix="ridesync-lab-") as tmp:
        port = PtyPort(Path(tmp) / "cadence-wrap")
        port.plug()
        try:
            start_ms, end_ms, sensor = wrap_sensor(sensor_clock.TickMath.EXACT, port)
            source = LineSource(port.path, source_id="line-wrap")
            lab.guide.sim(
                f"a DIY cadence sensor booted {sensor_clock.clock_label(start_ms)} ago (clock_start_ms="
                f"{start_ms:.0f}), pedalled at {SIM_WRAP_RPM} rpm through "
                f"{sensor_clock.clock_label(end_ms)} at {SIM_WRAP_SPEED:g}x"
            )
            async with Tap(source) as tap:
                async with asyncio.timeout(timing.connect_s):
                    await source.port_open.wait()
                await sensor.run()
                await asyncio.sleep(0.3)  # the last lines in flight
            summary = source.summary()
        finally:
            port.close()
    records = sensor.records()
    ride_s_of_revs: dict[int, float] = {}
    for ride_s, rec in records:
        ride_s_of_revs.setdefault(rec.revs, ride_s)
    readings = [x for x in tap.readings(Kind.CADENCE) if x.value is not None]
    moving = [x for x in readings if not x.extra.get("held") and not x.extra.get("stopped")]
    rpms = [float(x.value) for x in moving if x.value is not None]

    def clock_ms(reading: Reading) -> float | None:
        ride_s = ride_s_of_revs.get(int(reading.extra.get("revs", -1)))
        return None if ride_s is None else start_ms + ride_s * 1000

    crossed: list[dict[str, Any]] = []
    for name, mark_ms in (MILLIS_MARK, MICROS_MARK):
        times = [clock_ms(x) for x in moving]
        crossed.append(
            {
                "mark": name,
                "at": sensor_clock.clock_label(mark_ms),
                "readings_before": sum(1 for t in times if t is not None and t < mark_ms),
                "readings_after": sum(1 for t in times if t is not None and t >= mark_ms),
            }
        )
    error = max_error_pct(rpms, SIM_WRAP_RPM)
    control = offline_error_pct(sensor_clock.TickMath.MILLIS_OVERFLOW)
    bad_lines = sum(summary.get(k, 0) for k in ("lines_bad_checksum", "lines_malformed", "lines_too_long"))
    r.measured = {
        "simulated": True,
        "clock_start": sensor_clock.clock_label(start_ms),
        "clock_end": sensor_clock.clock_label(end_ms),
        "clock_start_ms": round(start_ms),
        "speed": SIM_WRAP_SPEED,
        "tick_math": sensor.tick_math.value,
        "crossed": crossed,
        "records_sent": len(sensor.sent),
        "cadence_readings": len(readings),
        "cadence_expected_rpm": SIM_WRAP_RPM,
        "cadence_min_rpm": min(rpms) if rpms else None,
        "cadence_max_rpm": max(rpms) if rpms else None,
        "cadence_max_error_pct": error,
        "dips": dips(rpms),
        "resyncs": summary.get("resyncs"),
        "lines_lost": summary.get("lines_lost"),
        "lines_bad": bad_lines,
        "millis_overflow_firmware_max_error_pct": control,
    }
    r.check(len(readings) >= 0.9 * (len(records) - 1), "a cadence reading for (nearly) every record sent")
    r.check(
        all(m["readings_before"] > 0 and m["readings_after"] > 0 for m in crossed),
        "readings on both sides of both marks",
    )
    r.check(
        error is not None and error <= WRAP_TOLERANCE_PCT,
        f"cadence within {WRAP_TOLERANCE_PCT:g} % throughout",
    )
    r.check(summary.get("resyncs", 0) == 0, "no re-baseline (resync) across the marks")
    r.check(bad_lines == 0, "no bad lines")
    # The check above must be able to fail: the same ride from a firmware with the overflow does.
    r.check(
        control is not None and control > WRAP_TOLERANCE_PCT,
        "the same check catches a firmware using millis()*1024/1000",
    )
    r.summary = (
        f"{sensor_clock.clock_label(start_ms)} -> {sensor_clock.clock_label(end_ms)} of sensor clock: "
        f"{len(readings)} readings, {min(rpms, default=0):g}..{max(rpms, default=0):g} rpm "
        f"(rider {SIM_WRAP_RPM}), resyncs {summary.get('resyncs')}"
    )


async def _wrap_real(lab: Lab, r: ScenarioResult, spec: str) -> None:
    c = lab.config
    if c.line_run_min is None:
        r.skip(
            "a real sensor's clock cannot be fast-forwarded: run --line-run-min 72 right after powering it "
            "on, or power it on 68 minutes early and run --line-uptime-min 68 --line-run-min 4 "
            "(keep the cranks turning)"
        )
        return
    timing = lab.timing(False)
    run_s = c.line_run_min * 60
    first_ms = c.line_uptime_min * 60_000
    last_ms = first_ms + run_s * 1000
    crossed: list[dict[str, Any]] = [
        {"mark": name, "at": sensor_clock.clock_label(mark_ms)}
        for name, mark_ms in (MILLIS_MARK, MICROS_MARK)
        if first_ms < mark_ms < last_ms
    ]
    if not crossed:
        r.skip(
            f"the run covers minutes {c.line_uptime_min:g}..{c.line_uptime_min + c.line_run_min:g} of the "
            "sensor's uptime, not its 70th: run longer (--line-run-min) or power it on earlier "
            "(--line-uptime-min)"
        )
        return
    await lab.guide.ready(
        f"the line sensor on {spec}, powered on {c.line_uptime_min:g} min ago: keep the cranks turning "
        f"steadily for {c.line_run_min:g} minutes (a rider, or a drill on the crank arm)"
    )
    async with open_device(lab, spec, "line") as sources:
        source = sources[0]
        async with Tap(source) as tap:
            first = await tap.wait(is_reading(Kind.CADENCE), timing.connect_s)
            if not r.check(first is not None, f"cadence readings within {timing.connect_s:g} s"):
                if tap.error:
                    r.reason += f": {tap.error}"
                return
            start = time.monotonic()
            minute = 0
            while (elapsed := time.monotonic() - start) < run_s:
                await asyncio.sleep(min(60.0, run_s - elapsed))
                minute += 1
                recent = [x.value for x in tap.readings(Kind.CADENCE, after=time.monotonic() - 60) if x.value]
                lab.guide.say(
                    f"line sensor minute {minute}/{math.ceil(c.line_run_min)}: median "
                    f"{statistics.median(recent) if recent else 0:g} rpm, resyncs "
                    f"{source.summary().get('resyncs', 0)}"
                )
            summary = source.summary()
    readings = [x for x in tap.readings(Kind.CADENCE, after=start) if x.value is not None]
    moving = [
        float(x.value)
        for x in readings
        if x.value is not None and not x.extra.get("held") and not x.extra.get("stopped")
    ]
    gaps = [b.t - a.t for a, b in itertools.pairwise(readings)]
    per_minute: list[float | None] = []
    t0 = readings[0].t if readings else 0.0
    for m in range(math.ceil(run_s / 60)):
        window = [float(x.value) for x in readings if x.value and m * 60 <= x.t - t0 < (m + 1) * 60]
        per_minute.append(statistics.median(window) if window else None)
    r.measured = {
        "simulated": False,
        "port": spec,
        "uptime_at_start_min": c.line_uptime_min,
        "run_min": c.line_run_min,
        "crossed": crossed,
        "cadence_readings": len(readings),
        "cadence_per_minute_rpm": per_minute,
        "cadence_max_error_pct": None,  # no reference cadence on a bench: see dips and resyncs
        "dips": dips(moving),
        "max_gap_s": round(max(gaps), 2) if gaps else None,
        "resyncs": summary.get("resyncs"),
        "lines_lost": summary.get("lines_lost"),
    }
    r.check(summary.get("resyncs", 0) == 0, "no re-baseline (resync): the sensor's clock never jumped")
    r.check(dips(moving) == 0, "no one-record cadence dip (a clock jump inside one record)")
    r.check(bool(gaps) and max(gaps) <= LINE_MAX_GAP_S, f"no gap over {LINE_MAX_GAP_S:g} s between readings")
    r.check(all(0 <= v <= 250 for v in moving), "every cadence plausible (0..250 rpm)")
    r.summary = (
        f"{len(readings)} readings over {c.line_run_min:g} min across "
        f"{', '.join(m['at'] for m in crossed)}, resyncs {summary.get('resyncs')}, dips {dips(moving)}"
    )
