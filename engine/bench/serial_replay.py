"""Replay throughput through a real pty and real pyserial: how fast can a ride be replayed losslessly?

A generated ride is played as a listen-mode bus (head unit and bike both talking) on a pty at doubling
speeds; the Peloton listen source decodes it. A run is lossless when every value the emitter sent came
out, in order, with no duplicate and no byte dropped on the pty. The emitter waits (up to 1 s) for room
on a full line, so an overloaded reader first shows as an achieved speed below the target.

Baseline, side by side at every speed: the same emitter and pty with a reader that only counts bytes
through the same pyserial transport, no decoding: what replay costs without the listen source. The
ratio compares the highest achieved lossless speeds.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "serial-replay"
HELP = "highest lossless replay speed of a ride through a pty + pyserial + listen decoder, with baseline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=int, default=1800, help="ride length to replay (default 1800)")
    parser.add_argument("--start-speed", type=float, default=60.0)
    parser.add_argument("--max-speed", type=float, default=16000.0)


async def _replay(ride_s: int, speed: float, tmp: Path, *, decode: bool) -> dict[str, Any]:
    """One replay. decode=True: through the listen source; False: the baseline, bytes only counted."""
    from adapters.serial.link import Chunk, QueueItem, SerialLink
    from adapters.serial.peloton_listen import PelotonListenSource
    from adapters.serial.sim.bus import BusEmitter, SentValue
    from adapters.serial.sim.profile import RideProfile
    from adapters.serial.sim.pty_port import PtyPort
    from engine.readings import Reading

    port = PtyPort(tmp / f"bus-{speed:g}-{decode}")
    port.plug()
    emitter = BusEmitter(
        port, profile=RideProfile.generated(ride_s, seed=1), speed=speed, table=None, lines="both"
    )
    got: list[SentValue] = []
    seqs: list[int] = []
    received = 0
    complete = asyncio.Event()
    opened = asyncio.Event()

    def check() -> None:
        if emitter.done.is_set() and (
            len(got) >= len(emitter.sent) if decode else received >= len(emitter.wire)
        ):
            complete.set()

    async def decoded() -> None:
        source = PelotonListenSource([port.path], source_id="bench")
        stream = source.stream()
        opener = asyncio.ensure_future(source.port_open.wait())
        opener.add_done_callback(lambda _: opened.set())
        async for item in stream:
            if isinstance(item, Reading) and item.value is not None:
                got.append(SentValue(item.kind, item.value))
                seqs.append(item.seq)
                check()

    async def raw() -> None:
        nonlocal received
        queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        link = await SerialLink.open(port.path, queue, baudrate=19200)
        opened.set()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Chunk):
                    received += len(item.data)
                    check()
        finally:
            link.close()

    try:
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(decoded() if decode else raw())
            await opened.wait()
            t0 = time.perf_counter()
            await emitter.run()
            check()
            try:
                async with asyncio.timeout(5):
                    await complete.wait()
            except TimeoutError:
                pass
            elapsed = time.perf_counter() - t0
            reader.cancel()
    finally:
        port.close()
    if decode:
        lossless = got == emitter.sent and seqs == list(range(1, len(seqs) + 1))
    else:
        lossless = received == len(emitter.wire)
    lossless = lossless and port.bytes_dropped == 0
    out: dict[str, Any] = {
        "target_speed": speed,
        "achieved_speed": round(ride_s / elapsed, 1),
        "lossless": lossless,
        "bytes_per_s": round(len(emitter.wire) / elapsed),
    }
    if decode:
        out["values"] = len(got)
        out["values_per_s"] = round(len(got) / elapsed)
    return out


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_raw: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="ridesync-bench-") as tmp:
        speed = args.start_speed
        while speed <= args.max_speed:
            decoded = await _replay(args.seconds, speed, Path(tmp), decode=True)
            raw = await _replay(args.seconds, speed, Path(tmp), decode=False)
            runs.append({"listen_source": decoded, "baseline_raw_transport": raw})
            if decoded["lossless"]:
                best = decoded
            if raw["lossless"]:
                best_raw = raw
            saturated = decoded["achieved_speed"] < 0.8 * speed and raw["achieved_speed"] < 0.8 * speed
            if not decoded["lossless"] or saturated:
                break
            speed *= 2
    out: dict[str, Any] = {"ride_s": args.seconds, "runs": runs}
    if best is not None and best_raw is not None:
        out["highest_lossless"] = {"listen_source": best, "baseline_raw_transport": best_raw}
        out["ratio_achieved_speed_vs_baseline"] = round(
            best["achieved_speed"] / best_raw["achieved_speed"], 3
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))
