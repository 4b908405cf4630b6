"""Replay a raw capture onto a pty at any speed.

Timing comes from the capture's sidecar (`FILE.timing`, written by `ridesync record`: one JSON line
`{"offset": bytes_so_far, "t": seconds_since_start}` per read) when there is one; otherwise the bytes are
paced at `rate` bytes per second of capture time (default 130 B/s, the average of a real Peloton bus:
a 4-byte request and its ~9-byte reply every 100 ms).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from adapters.serial.sim.pty_port import PtyPort, Unplugged

PELOTON_BUS_RATE = 130.0


class CaptureError(ValueError):
    """A capture or its timing file that cannot be replayed."""


def load_timing(path: Path, size: int) -> list[tuple[int, float]]:
    """(offset, t) marks from a sidecar file; offsets and times must not decrease."""
    marks: list[tuple[int, float]] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CaptureError(f"{path}: not a timing file") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            offset, t = int(obj["offset"]), float(obj["t"])
        except (ValueError, KeyError, TypeError):
            raise CaptureError(f"{path}:{n}: expected {{'offset': int, 't': float}}") from None
        if offset > size or (marks and (offset < marks[-1][0] or t < marks[-1][1])):
            raise CaptureError(f"{path}:{n}: offsets and times must increase and stay within the capture")
        marks.append((offset, t))
    return marks


class Replayer:
    def __init__(
        self,
        port: PtyPort,
        data: bytes,
        *,
        speed: float = 1.0,
        timing: list[tuple[int, float]] | None = None,
        rate: float = PELOTON_BUS_RATE,
        chunk: int = 64,
    ) -> None:
        if speed <= 0 or rate <= 0:
            raise ValueError("speed and rate must be > 0")
        self.port = port
        self.data = data
        self.speed = speed
        if timing is None:
            timing = [(min(i + chunk, len(data)), (i + chunk) / rate) for i in range(0, len(data), chunk)]
        self.timing = timing
        self.bytes_sent = 0
        self.bytes_unheard = 0
        self.done = asyncio.Event()

    @classmethod
    def from_file(
        cls, port: PtyPort, path: str | Path, *, speed: float = 1.0, rate: float = PELOTON_BUS_RATE
    ) -> Replayer:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from None
        sidecar = path.with_name(path.name + ".timing")
        timing = load_timing(sidecar, len(data)) if sidecar.exists() else None
        return cls(port, data, timing=timing, speed=speed, rate=rate)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        try:
            for offset, t in self.timing:
                await asyncio.sleep(max(0.0, start + t / self.speed - loop.time()))
                piece = self.data[sent:offset]
                sent = offset
                try:
                    self.bytes_sent += await self.port.write(piece)
                except Unplugged:
                    self.bytes_unheard += len(piece)
            if sent < len(self.data):
                self.bytes_sent += await self.port.write(self.data[sent:])
        finally:
            self.done.set()
