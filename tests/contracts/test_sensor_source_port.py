"""The sensor source port's conformance suite: every `engine.readings.SensorSource` the adapters offer
passes the same tests, as automerge-repo's network adapters share one suite. Each implementation runs on
its real I/O path against a simulated device: the BLE strap source through real bleak on bumble's virtual
radio, the serial sources through real pyserial on a pty (Peloton bus in poll and listen mode, the DIY
line protocol). A new source adds one entry to `RIGS` and nothing else.

The contract: readings carry the source's id and strictly increasing sequence numbers; the link state is
reported (connecting, streaming; lost when the device goes away, streaming again when it is back, without
reusing a sequence number); garbage from the device changes nothing but the values it destroyed; and
cancelling the consumer stops the source, leaving no task of its own behind."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.ble.sim import Simulation
from adapters.serial.factory import open_serial_sources
from engine.readings import Reading, SensorSource, SourceState
from tests.support.ble import SUPERVISION_TIMEOUT_S, sim_source
from tests.support.serial import FAST as SERIAL_FAST
from tests.support.sources import Recorder, recording


@dataclass
class Rig:
    """A source on its real I/O path, and the controls of the simulated device behind it."""

    source: SensorSource
    break_link: Callable[[], None]  # the device goes away (out of range, cable pulled)
    restore_link: Callable[[], None]
    inject_garbage: Callable[[], Awaitable[None]]  # the device sends bytes that are not valid frames


RigFactory = Callable[[], AbstractAsyncContextManager[Rig]]

# Payloads no strap should send: empty, torn (a flag promising more than follows), and noise.
_noise = random.Random(16)
BAD_HRM = [b"", b"\x01", b"\x01\x48", b"\x10\x48\xb1", b"\x08\x48\x01"] + [
    _noise.randbytes(n) for n in range(1, 24, 3)
]


@asynccontextmanager
async def ble_strap() -> AsyncIterator[Rig]:
    sim = await Simulation.start(supervision_timeout_s=SUPERVISION_TIMEOUT_S)
    strap = await sim.add_strap(notify_on_subscribe=False)

    async def beat() -> None:
        # A strap notifies about once a second; faster here, so each test takes a fraction of a second.
        for i in itertools.count():
            await strap.notify(60 + i % 100)
            await asyncio.sleep(0.02)

    async def garbage() -> None:
        for payload in BAD_HRM:
            await strap.notify_raw(payload)

    try:
        async with asyncio.TaskGroup() as tg:
            beating = tg.create_task(beat(), name="contract-strap-beat")
            try:
                yield Rig(sim_source(sim, strap.address), strap.walk_out_of_range, strap.walk_back, garbage)
            finally:
                beating.cancel()
    finally:
        await sim.close()


def serial(protocol: str, mode: str, **options: Any) -> RigFactory:
    @asynccontextmanager
    async def rig() -> AsyncIterator[Rig]:
        async with open_serial_sources(
            "sim", protocol=protocol, mode=mode, speed=10, source_options={**SERIAL_FAST, **options}
        ) as sources:
            device = sources.simulators[0]

            async def garbage() -> None:
                # Armed on the simulator: noise before, truncation and bit flips inside its next frames.
                device.faults.spacing = 1
                device.faults.garbage, device.faults.truncate, device.faults.flip = 4, 2, 2

            yield Rig(sources[0], device.unplug, device.replug, garbage)

    return rig


RIGS: dict[str, RigFactory] = {
    "ble-strap": ble_strap,
    "serial-peloton-poll": serial("peloton", "poll", interval_s=0.05, reply_timeout_s=0.045),
    "serial-peloton-listen": serial("peloton", "listen"),
    "serial-line": serial("line", "poll"),
}


@pytest.fixture(params=sorted(RIGS))
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    async with RIGS[request.param]() as r:
        yield r


def seqs(rec: Recorder) -> list[int]:
    return [r.seq for r in rec.readings]


def states(rec: Recorder) -> list[SourceState]:
    return [e.state for e in rec.states]


def assert_seq_strictly_increasing(rec: Recorder) -> None:
    got = seqs(rec)
    assert got == sorted(set(got)), f"sequence numbers must be unique and increasing: {got}"


async def test_readings_carry_the_source_id_and_increasing_seq(rig: Rig) -> None:
    async with recording(rig.source) as rec:
        await rec.until(lambda r: len(r.readings) >= 5)
    assert all(isinstance(r, Reading) and r.source == rig.source.source_id for r in rec.readings)
    assert_seq_strictly_increasing(rec)
    # The link state comes first: connecting, then streaming before (or with) the first reading.
    assert states(rec)[0] is SourceState.CONNECTING
    first_reading = next(i for i, item in enumerate(rec.items) if isinstance(item, Reading))
    assert SourceState.STREAMING in [e.state for e in rec.items[:first_reading] if not isinstance(e, Reading)]


async def test_link_loss_is_reported_and_recovery_resumes_the_sequence(rig: Rig) -> None:
    async with recording(rig.source) as rec:
        await rec.until(lambda r: len(r.readings) >= 3)
        rig.break_link()
        await rec.until(lambda r: SourceState.LOST in states(r))
        before = len(rec.readings)
        lost_at = states(rec).index(SourceState.LOST)
        rig.restore_link()
        await rec.until(lambda r: len(r.readings) >= before + 3)
        await rec.until(lambda r: SourceState.STREAMING in states(r)[lost_at:])
    assert_seq_strictly_increasing(rec)
    assert SourceState.FAILED not in states(rec)


async def test_garbage_from_the_device_changes_nothing_else(rig: Rig) -> None:
    async with recording(rig.source) as rec:
        await rec.until(lambda r: len(r.readings) >= 3)
        n = len(rec.readings)
        await rig.inject_garbage()
        await rec.until(lambda r: len(r.readings) >= n + 8)
    assert_seq_strictly_increasing(rec)
    assert not {SourceState.LOST, SourceState.FAILED} & set(states(rec)), states(rec)


def running() -> Counter[str]:
    """The running tasks by coroutine: a simulated device's own transient waits (a new task per wait)
    count the same before and after, a task the source left behind does not."""
    return Counter(getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks() if not t.done())


async def test_cancelling_the_consumer_stops_the_source_and_its_tasks(rig: Rig) -> None:
    before = running()
    async with recording(rig.source) as rec:
        await rec.until(lambda r: len(r.readings) >= 2)
        task = rec.task
    assert task is not None and task.cancelled()
    # Whatever the source started for itself (readers, pollers, tickers) ends with it: give the loop a
    # moment to finish what was cancelled, then look.
    for _ in range(200):  # up to 2 s
        leftover = running() - before
        if not leftover:
            break
        await asyncio.sleep(0.01)
    assert dict(leftover) == {}
