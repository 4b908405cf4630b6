"""The heart-rate strap scenarios: two straps at once, out of range and back, a power cycle, and a
process killed while connected (BlueZ keeps that connection; the rerun must find the strap anyway).

Each scenario drives the product's own `BleHeartRateSource` (the same objects `ridesync sensors` uses)
and records what it measured in a `ScenarioResult`. On the simulator the kit performs the physical
step itself (`Simulation` handles: range, strand); on a bench it prompts the human and waits for the
effect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from adapters.ble.scan import StrapNotFound
from adapters.ble.sim import SimStrap, Simulation
from adapters.ble.source import BleHeartRateSource
from engine.lab.context import SIM_SUPERVISION_TIMEOUT_S, Lab, Timing
from engine.lab.report import ScenarioResult
from engine.lab.tap import Tap, is_reading, is_state
from engine.readings import Contact, Kind, Reading, SourceState

# Real straps notify about once a second; slower than every 2 s or faster than 4 Hz is a fault.
MIN_RATE_HZ = 0.5
MAX_RATE_HZ_REAL = 4.0


def _straps(lab: Lab) -> list[BleHeartRateSource]:
    if lab.hr is None:
        return []
    return [s for s in lab.hr if isinstance(s, BleHeartRateSource)]


def _sim(lab: Lab) -> Simulation | None:
    return lab.hr.simulation if lab.hr is not None else None


def _label(index: int, source: BleHeartRateSource) -> str:
    return f"strap {index + 1} ({source.selector})"


def _sim_strap(sim: Simulation, source: BleHeartRateSource) -> SimStrap:
    return sim.strap(source.selector)


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def hr_stats(readings: list[Reading]) -> dict[str, Any]:
    """Notification count, rate, largest gap, median bpm and contact counts of heart-rate readings."""
    hr = [r for r in readings if r.kind is Kind.HEART_RATE]
    span = hr[-1].t - hr[0].t if len(hr) > 1 else 0.0
    gaps = [b.t - a.t for a, b in itertools.pairwise(hr)]
    values = [r.value for r in hr if r.value is not None]
    return {
        "notifications": len(hr),
        "rate_hz": _r((len(hr) - 1) / span) if span > 0 else None,
        "max_gap_s": _r(max(gaps)) if gaps else None,
        "bpm_median": statistics.median(values) if values else None,
        "contact": {c.value: sum(1 for r in hr if r.contact is c) for c in Contact},
        "rr_present_fraction": _r(sum(1 for r in hr if r.rr_s) / len(hr)) if hr else None,
    }


def _streaming_extra(tap: Tap, after: float | None = None) -> dict[str, Any]:
    """The `streaming` state's link facts (adapter, mtu, connect_s) from the first connect seen."""
    for state in tap.states(after=after):
        if state.state is SourceState.STREAMING and "connect_s" in state.extra:
            return {k: state.extra.get(k) for k in ("address", "adapter", "mtu", "connect_s")}
    return {}


def _last_failure(tap: Tap) -> str:
    """` (last: ...)` naming the source's last failed attempt, if it reported one."""
    failures = [s.detail for s in tap.states() if s.state is SourceState.BACKING_OFF]
    return f" (last: {failures[-1]})" if failures else ""


def _seq_continues(before: list[Reading], after: list[Reading]) -> bool:
    seqs = [r.seq for r in before + after]
    return bool(before and after) and seqs == sorted(set(seqs)) and after[0].seq > before[-1].seq


async def _first_reading(lab: Lab, r: ScenarioResult, taps: list[tuple[str, Tap]], timing: Timing) -> bool:
    """Wait until every tap has a heart-rate reading; fail the scenario naming those without."""
    ok = True
    for label, tap in taps:
        seen = await tap.wait(is_reading(Kind.HEART_RATE), timing.connect_s)
        if seen is None:
            if tap.error is not None:
                r.fail(f"{label} failed: {tap.error}")
            else:
                r.fail(f"{label} gave no heart rate within {timing.connect_s:g} s{_last_failure(tap)}")
            ok = False
    return ok


# --- two straps at once -----------------------------------------------------------------------------


async def two_straps(lab: Lab, r: ScenarioResult) -> None:
    straps, sim = _straps(lab), _sim(lab)
    if len(straps) < 2:
        r.skip(
            "needs two straps: name both, --hr ADDR1,ADDR2 (--hr sim:2 on the simulator)"
            if straps
            else "no strap given: --hr ADDR1,ADDR2 (--hr sim:2 on the simulator)"
        )
        return
    timing = lab.timing(sim is not None)
    if sim is None:
        await lab.guide.ready(
            "wear strap 1 and strap 2 (or bridge each one's electrodes with a damp cloth); "
            "no phone or watch may be connected to them"
        )
    pair = straps[:2]
    async with contextlib.AsyncExitStack() as stack:
        taps = [await stack.enter_async_context(Tap(s)) for s in pair]
        labelled = [(_label(i, s), t) for i, (s, t) in enumerate(zip(pair, taps, strict=True))]
        if not await _first_reading(lab, r, labelled, timing):
            return
        window = time.monotonic()
        lab.guide.say(f"both straps streaming; measuring for {timing.stream_s:g} s")
        await asyncio.sleep(timing.stream_s)
        end = time.monotonic()
    rows = []
    for i, (source, tap) in enumerate(zip(pair, taps, strict=True)):
        stats = hr_stats(tap.readings(after=window, before=end))
        lost = [s for s in tap.states(after=window, before=end) if s.state is SourceState.LOST]
        row = {
            "strap": i + 1,
            "selector": source.selector,
            **_streaming_extra(tap),
            **stats,
            "links_lost": len(lost),
            "malformed": source.stats.malformed,
        }
        rows.append(row)
        label = _label(i, source)
        r.check(stats["notifications"] > 0, f"{label} notified during the window")
        rate = stats["rate_hz"]
        r.check(rate is not None and rate >= MIN_RATE_HZ, f"{label} notifies at least every 2 s")
        if sim is None:
            r.check(rate is not None and rate <= MAX_RATE_HZ_REAL, f"{label} notifies at most 4 Hz")
            r.check(
                stats["contact"][Contact.NOT_DETECTED.value] < stats["notifications"],
                f"{label} reports skin contact (wet the electrodes)",
            )
        r.check(not lost, f"{label} kept its link while both streamed")
        r.check(source.stats.malformed == 0, f"{label} sent no malformed payload")
    r.measured = {"window_s": round(end - window, 2), "straps": rows}
    r.summary = "; ".join(
        f"strap {row['strap']} {row['rate_hz']} Hz, {row['bpm_median']} bpm, connect {row.get('connect_s')} s"
        for row in rows
    )


# --- out of range, power cycle -----------------------------------------------------------------------


async def out_of_range(lab: Lab, r: ScenarioResult) -> None:
    straps, sim = _straps(lab), _sim(lab)
    if not straps:
        r.skip("no strap given: --hr ADDR (--hr sim:2 on the simulator)")
        return
    strap = straps[0]
    label = _label(0, strap)

    def away() -> None:
        assert sim is not None
        _sim_strap(sim, strap).walk_out_of_range()

    async def back() -> None:
        assert sim is not None
        _sim_strap(sim, strap).walk_back()

    await _drop_and_recover(
        lab,
        r,
        ready=f"wear {label} (or carry it with its electrodes bridged) and be ready to walk away"
        + ("; strap 2 stays on the bench, worn" if len(straps) > 1 else ""),
        off_prompt=f"walk {label} out of range now: into another room or 20+ m away, and wait there",
        off_sim=f"{label} walks out of range (traffic dropped; the link ends after the "
        f"{SIM_SUPERVISION_TIMEOUT_S:g} s supervision timeout)",
        on_prompt=f"walk {label} back to the bench now",
        on_sim=f"{label} walks back into range",
        do_off=away,
        do_on=back,
    )


async def power_cycle(lab: Lab, r: ScenarioResult) -> None:
    straps, sim = _straps(lab), _sim(lab)
    if not straps:
        r.skip("no strap given: --hr ADDR (--hr sim:2 on the simulator)")
        return
    strap = straps[0]
    label = _label(0, strap)

    def off() -> None:
        # A strap without power simply vanishes from the radio: the central's link times out.
        assert sim is not None
        _sim_strap(sim, strap).walk_out_of_range()

    async def on() -> None:
        # Powered again, it advertises afresh; its old link has already timed out on both ends (a
        # rebooted strap does not resume a connection).
        assert sim is not None
        s = _sim_strap(sim, strap)
        await s.wait_idle()
        s.walk_back()

    await _drop_and_recover(
        lab,
        r,
        ready=f"wear {label}; be ready to switch it off (unclip the pod from the strap, or take its "
        "battery out)",
        off_prompt=f"switch {label} off now: unclip the pod or take out its battery, and keep it off",
        off_sim=f"{label} loses power (it vanishes from the radio)",
        on_prompt=f"switch {label} back on now: clip the pod back on (or put the battery back), "
        "electrodes wet",
        on_sim=f"{label} powers up and advertises again",
        do_off=off,
        do_on=on,
    )


async def _drop_and_recover(
    lab: Lab,
    r: ScenarioResult,
    *,
    ready: str,
    off_prompt: str,
    off_sim: str,
    on_prompt: str,
    on_sim: str,
    do_off: Callable[[], None],
    do_on: Callable[[], Any],
) -> None:
    """Strap 1 streams, loses its link through a physical step, gets it back through another; strap 2
    (if given) must stream on untouched throughout."""
    straps, sim = _straps(lab), _sim(lab)
    timing = lab.timing(sim is not None)
    strap = straps[0]
    control = straps[1] if len(straps) > 1 else None
    label = _label(0, strap)
    if sim is None:
        await lab.guide.ready(ready)
    async with contextlib.AsyncExitStack() as stack:
        tap = await stack.enter_async_context(Tap(strap))
        ctap = await stack.enter_async_context(Tap(control)) if control is not None else None
        taps = [(label, tap)] + ([(_label(1, control), ctap)] if control and ctap else [])
        if not await _first_reading(lab, r, taps, timing):
            return
        await asyncio.sleep(timing.settle_s)
        before = tap.readings(Kind.HEART_RATE)

        step = time.monotonic()
        if sim is not None:
            lab.guide.sim(off_sim)
            do_off()
        else:
            lab.guide.prompt(off_prompt, timing.lose_s)
        lost = await tap.wait(is_state(SourceState.LOST), timing.lose_s, after=step)
        stale = await tap.wait(is_state(SourceState.STALE), 0, after=step)
        if not r.check(lost is not None, f"{label}'s link was reported lost within {timing.lose_s:g} s"):
            if sim is not None:
                await _maybe_await(do_on())
            return
        assert lost is not None
        lab.guide.say(f"{label} reported lost after {lost.at - step:.1f} s")
        if sim is not None:
            await asyncio.sleep(timing.absent_s)

        undo = time.monotonic()
        if sim is not None:
            lab.guide.sim(on_sim)
            await _maybe_await(do_on())
        else:
            lab.guide.prompt(on_prompt, timing.recover_s)
        streaming = await tap.wait(is_state(SourceState.STREAMING), timing.recover_s, after=undo)
        recovered = await tap.wait(is_reading(Kind.HEART_RATE), timing.recover_s, after=undo)
        if not r.check(
            recovered is not None, f"{label} streamed again within {timing.recover_s:g} s of coming back"
        ):
            return
        assert recovered is not None
        lab.guide.say(f"{label} streaming again after {recovered.at - undo:.1f} s")
        await asyncio.sleep(timing.settle_s)
        end = time.monotonic()

    after = tap.readings(Kind.HEART_RATE, after=undo)
    states_after = [s.state.value for s in tap.states(after=step)]
    backoffs = [
        s.extra.get("retry_in_s") for s in tap.states(after=step) if s.state is SourceState.BACKING_OFF
    ]
    battery_after = [x.value for x in tap.readings(Kind.BATTERY, after=undo)]
    measured: dict[str, Any] = {
        "strap": strap.selector,
        "timed_from": "step" if sim is not None else "prompt",
        "time_to_lost_s": round(lost.at - step, 2),
        "time_to_stale_s": round(stale.at - step, 2) if stale is not None else None,
        "lost_detail": lost.item.detail if not isinstance(lost.item, Reading) else "",
        "time_to_streaming_s": round(streaming.at - undo, 2) if streaming is not None else None,
        "time_to_recover_s": round(recovered.at - undo, 2),
        "retries_in_s": backoffs,
        "readings_before": len(before),
        "readings_after": len(after),
        "bpm_before": _last_bpm(before),
        "bpm_after": _last_bpm(after),
        "last_seq_before": before[-1].seq if before else None,
        "first_seq_after": after[0].seq if after else None,
        "states": states_after,
        "battery_pct_after": battery_after[0] if battery_after else None,
    }
    if sim is not None:
        measured["supervision_timeout_s"] = SIM_SUPERVISION_TIMEOUT_S
    r.check(_seq_continues(before, after), f"{label}'s sequence numbers continue (no restart, no duplicate)")
    if control is not None and ctap is not None:
        c_lost = [s for s in ctap.states(after=step, before=end) if s.state is SourceState.LOST]
        c_meanwhile = ctap.readings(Kind.HEART_RATE, after=step, before=recovered.at)
        gaps = [
            b.t - a.t for a, b in itertools.pairwise(ctap.readings(Kind.HEART_RATE, after=step, before=end))
        ]
        measured["other_strap"] = {
            "strap": control.selector,
            "links_lost": len(c_lost),
            "readings_meanwhile": len(c_meanwhile),
            "max_gap_s": _r(max(gaps)) if gaps else None,
        }
        other = _label(1, control)
        r.check(not c_lost, f"{other} kept its link meanwhile")
        r.check(bool(c_meanwhile), f"{other} kept streaming meanwhile")
    r.measured = measured
    r.summary = (
        f"lost after {measured['time_to_lost_s']} s, streaming again {measured['time_to_recover_s']} s "
        f"after the {'step' if sim is not None else 'prompt'}; seq {measured['last_seq_before']} -> "
        f"{measured['first_seq_after']}"
    )


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value


def _last_bpm(readings: list[Reading]) -> float | None:
    values = [r.value for r in readings[-5:] if r.value is not None]
    return statistics.median(values) if values else None


# --- killed while connected, rerun -------------------------------------------------------------------


async def kill_rerun(lab: Lab, r: ScenarioResult) -> None:
    straps, sim = _straps(lab), _sim(lab)
    if not straps:
        r.skip("no strap given: --hr ADDR (--hr sim:2 on the simulator)")
        return
    timing = lab.timing(sim is not None)
    strap = straps[0]
    label = _label(0, strap)
    measured: dict[str, Any] = {"strap": strap.selector}
    r.measured = measured

    if sim is not None:
        # The first run: the product's source connects and streams; then its process "dies" holding
        # the link. The simulated adapter keeps such a connection as BlueZ does, and the strap stops
        # advertising.
        async with Tap(strap) as first:
            seen = await first.wait(is_reading(Kind.HEART_RATE), timing.connect_s)
        if not r.check(seen is not None, f"the first run streamed {label}"):
            return
        adapter = _sim_adapter_index(strap)
        lab.guide.sim(
            f"a first run holds {label} and its process is killed (SIGKILL): the adapter keeps the link"
        )
        await sim.strand(_sim_strap(sim, strap), adapter=adapter)
        central = sim.adapters[adapter].central
        measured["first_run"] = "in-process; the simulated adapter keeps its connection (strand)"
        measured["stale_connection_after_kill"] = central.stranded_connection(strap.selector)
    else:
        await lab.guide.ready(
            f"keep {label} worn; the kit starts a second ridesync process, kills it while it is "
            "connected, and runs again"
        )
        killed = await _run_and_kill(lab, strap, timing)
        measured.update(killed)
        error = killed.get("first_run_error")
        if not r.check(
            killed.get("killed_while_streaming", False),
            f"a separate run streamed {label} before the kill" + (f": {error}" if error else ""),
        ):
            return

    measured["advertising_after_kill"] = await _advertising(strap, timing.probe_s)
    if measured["advertising_after_kill"]:
        lab.guide.say(
            f"{label} advertises after the kill: this stack dropped the dead run's link itself "
            "(the stale case did not occur)"
        )
    elif sim is None:
        lab.guide.say(f"{label} is silent after the kill: the stack kept the dead run's connection")

    # The rerun: a fresh source, as a new process has (no device remembered, sequence from 1).
    rerun = BleHeartRateSource(strap.selector, adapter=strap.adapter, settings=strap.settings)
    lab.guide.say(f"rerunning: a new source for {label}")
    start = time.monotonic()
    async with Tap(rerun) as tap:
        streaming = await tap.wait(is_state(SourceState.STREAMING), timing.recover_s)
        first_hr = await tap.wait(is_reading(Kind.HEART_RATE), timing.recover_s)
        attempts = [s for s in tap.states() if s.state is SourceState.CONNECTING]
        failures = [s.detail for s in tap.states() if s.state is SourceState.BACKING_OFF]
        error = tap.error
    measured["time_to_streaming_s"] = round(streaming.at - start, 2) if streaming else None
    measured["time_to_first_reading_s"] = round(first_hr.at - start, 2) if first_hr else None
    measured["connect_attempts"] = len(attempts)
    measured["failed_attempts"] = failures[:5]
    if first_hr is not None and isinstance(first_hr.item, Reading):
        measured["first_seq_after_rerun"] = first_hr.item.seq
    if sim is not None:
        central = sim.adapters[_sim_adapter_index(strap)].central
        measured["stale_connection_after_rerun"] = central.stranded_connection(strap.selector)
        r.check(
            measured["stale_connection_after_kill"], "the killed run's connection outlived it (as on BlueZ)"
        )
        r.check(not measured["advertising_after_kill"], f"{label} stopped advertising while held")
        r.check(not measured["stale_connection_after_rerun"], "the rerun closed the stale connection")
    why = f": {error}" if error else (f" (last failure: {failures[-1]})" if failures else "")
    r.check(first_hr is not None, f"the rerun streamed {label} within {timing.recover_s:g} s{why}")
    r.summary = (
        f"advertising after kill: {str(measured['advertising_after_kill']).lower()}; rerun streaming after "
        f"{measured['time_to_first_reading_s']} s, {len(attempts)} attempt(s)"
    )


def _sim_adapter_index(strap: BleHeartRateSource) -> int:
    name = strap.adapter.name
    return int(name[3:]) if name.startswith("sim") and name[3:].isdigit() else 0


async def _advertising(strap: BleHeartRateSource, probe_s: float) -> bool:
    """Whether the strap is seen advertising within `probe_s` (on the strap's adapter)."""
    try:
        await strap.adapter.scanner().find(strap.selector, probe_s)
    except StrapNotFound:
        return False
    return True


async def _run_and_kill(lab: Lab, strap: BleHeartRateSource, timing: Timing) -> dict[str, Any]:
    """A separate `ridesync sensors` process streams the strap; it is killed (SIGKILL) once streaming."""
    # The `ridesync` entry point itself (`python -m engine.cli.main` would load the CLI module twice).
    entry = "import sys; from engine.cli.main import main; sys.exit(main())"
    cmd = [sys.executable, "-c", entry, "sensors", "--hr", strap.selector]
    if lab.config.adapters:
        cmd += ["--adapter", lab.config.adapters]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out: dict[str, Any] = {"first_run": " ".join(["ridesync", *cmd[3:]]), "killed_while_streaming": False}
    assert proc.stdout is not None and proc.stderr is not None
    errors: collections.deque[str] = collections.deque(maxlen=3)

    async def drain(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            if text := line.decode(errors="replace").strip():
                errors.append(text)

    draining = asyncio.create_task(drain(proc.stderr))
    try:
        async with asyncio.timeout(timing.connect_s):
            while line := await proc.stdout.readline():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if item.get("kind") == Kind.HEART_RATE.value:
                    out["killed_while_streaming"] = True
                    break
    except TimeoutError:
        out["first_run_error"] = f"no heart rate from it within {timing.connect_s:g} s"
    finally:
        if not out["killed_while_streaming"]:
            # It ended by itself (its output closed) or never streamed: let it say why and exit.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await proc.wait()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await draining
        draining.cancel()
    out["first_run_exit"] = proc.returncode
    if out["killed_while_streaming"]:
        lab.guide.say(f"killed the separate run (pid {proc.pid}, SIGKILL) while it streamed")
        return out
    if "first_run_error" not in out:
        exited = f"it exited with status {proc.returncode}"
        out["first_run_error"] = _error_text(errors[-1]) if errors else exited
    lab.guide.say(f"the separate run never streamed: {out['first_run_error']}")
    return out


def _error_text(line: str) -> str:
    """The message of a `{"error": ...}` line (how ridesync reports a fatal error), else the line."""
    try:
        obj = json.loads(line)
    except ValueError:
        return line
    return str(obj["error"]) if isinstance(obj, dict) and "error" in obj else line
