"""A user-space TCP fault proxy: this machine has no `tc netem`
(docs/architecture.md#testing-without-hardware).

It relays bytes between clients and one target, so it works for HTTP and WebSocket alike, and injects:
- **drop**: a new connection is closed at once, before any byte reaches the target;
- **reset**: the connection is reset (RST, via SO_LINGER 0) after a random number of bytes;
- **cut**: the connection is closed cleanly (FIN) after a random number of bytes;
- **mid-message**: with `cut_mid_message`, a reset or cut lands exactly at its byte offset, splitting a
  read (for WebSocket, almost always mid-frame); otherwise it happens between reads;
- **stall**: a read is held back for a random time up to `stall_max` seconds;
- **bandwidth**: each direction of each connection is paced to `bandwidth` bytes per second;
- **partition** (runtime): nothing is forwarded in either direction and new connections are held until
  `heal()`: a black hole, as a dead Wi-Fi link looks to TCP; heartbeats must notice it.

Decisions come from `random.Random(f"{seed}:{connection number}")`, so a seed reproduces which
connections are dropped, reset or cut and at which byte. Stalls are drawn per read, and how the kernel
splits the stream into reads varies, so stall timing is not reproducible. Every injection is recorded
in `events` and logged.

Faults can change at runtime (`set_faults`, `partition`, `heal`, `reset_all`) or follow a schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

READ_SIZE: Final = 65536
# Pacing slices per second under a bandwidth cap: smooth enough, without a syscall per byte.
_PACE_SLICES_PER_S: Final = 20


class ChaosConfigError(ValueError):
    """Bad fault settings or schedule; the message names the field."""


@dataclass(frozen=True, slots=True)
class Faults:
    drop: float = 0.0
    reset: float = 0.0
    cut: float = 0.0
    # A reset or cut happens after a uniform number of bytes in [kill_min, kill_window], counting both
    # directions; raise kill_min to let handshakes through.
    kill_min: int = 1
    kill_window: int = 16384
    cut_mid_message: bool = False
    stall_probability: float = 0.0
    stall_max: float = 0.0
    # bytes per second, per connection and direction; None = unlimited
    bandwidth: int | None = None

    def __post_init__(self) -> None:
        for name in ("drop", "reset", "cut", "stall_probability"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ChaosConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.reset + self.cut > 1:
            raise ChaosConfigError("reset + cut must not exceed 1")
        if not isinstance(self.kill_min, int) or self.kill_min < 1:
            raise ChaosConfigError("kill_min must be a positive number of bytes")
        if not isinstance(self.kill_window, int) or self.kill_window < self.kill_min:
            raise ChaosConfigError("kill_window must be a number of bytes >= kill_min")
        if not isinstance(self.stall_max, (int, float)) or not 0 <= self.stall_max <= 3600:
            raise ChaosConfigError("stall_max must be in [0, 3600] seconds")
        if self.bandwidth is not None and (not isinstance(self.bandwidth, int) or self.bandwidth < 1):
            raise ChaosConfigError("bandwidth must be a positive number of bytes per second")
        if not isinstance(self.cut_mid_message, bool):
            raise ChaosConfigError("cut_mid_message must be a boolean")


@dataclass(frozen=True, slots=True)
class FaultEvent:
    t: float  # seconds since the proxy started
    conn: int
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 6), "conn": self.conn, "fault": self.kind, **self.detail}


@dataclass(slots=True)
class Stats:
    accepted: int = 0
    bytes_up: int = 0  # client → target
    bytes_down: int = 0  # target → client
    held: int = 0  # bytes read but held back by a partition
    open: int = 0


@dataclass(frozen=True, slots=True)
class ScheduleStep:
    at: float
    action: Literal["partition", "heal", "reset_all", "faults"]
    faults: dict[str, Any] = field(default_factory=dict)


_SCHEDULE_ACTIONS: Final = ("partition", "heal", "reset_all", "faults")


def parse_schedule(text: str) -> list[ScheduleStep]:
    """A JSON array of steps, e.g. `[{"at": 5, "partition": true}, {"at": 25, "heal": true},
    {"at": 30, "faults": {"reset": 0.5, "stall_max": 10}}]`; `at` is seconds after start."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChaosConfigError(f"schedule is not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ChaosConfigError("schedule must be a JSON array of steps")
    steps = []
    known = {f.name for f in dataclasses.fields(Faults)}
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ChaosConfigError(f"step {i} must be an object")
        at = item.get("at")
        if not isinstance(at, (int, float)) or isinstance(at, bool) or not 0 <= at < 10**7:
            raise ChaosConfigError(f"step {i}: 'at' must be a non-negative number of seconds")
        actions = [a for a in _SCHEDULE_ACTIONS if a in item]
        if len(actions) != 1 or set(item) - {"at", *_SCHEDULE_ACTIONS}:
            raise ChaosConfigError(
                f"step {i} must have 'at' and exactly one of {', '.join(_SCHEDULE_ACTIONS)}"
            )
        action = actions[0]
        faults: dict[str, Any] = {}
        if action == "faults":
            faults = item["faults"]
            if not isinstance(faults, dict) or set(faults) - known:
                raise ChaosConfigError(f"step {i}: 'faults' must be an object with keys from {sorted(known)}")
            Faults(**faults)  # validate now, not in the middle of a run
        steps.append(ScheduleStep(float(at), action, faults))  # type: ignore[arg-type]
    return sorted(steps, key=lambda s: s.at)


class _Killed(Exception):
    pass


def _rst(writer: asyncio.StreamWriter) -> None:
    """Abort with SO_LINGER 0, so the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(slots=True)
class _Conn:
    num: int
    rng: random.Random
    kill: Literal["reset", "cut"] | None
    kill_at: int
    killed: bool = False
    forwarded: int = 0
    client: asyncio.StreamWriter | None = None
    upstream: asyncio.StreamWriter | None = None
    pace_free: dict[str, float] = field(default_factory=dict)


class ChaosProxy:
    def __init__(
        self,
        target: tuple[str, int],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        faults: Faults | None = None,
        seed: int | None = None,
        schedule: list[ScheduleStep] | None = None,
        on_event: Callable[[FaultEvent], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.listen = listen
        self.faults = faults if faults is not None else Faults()
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**63)
        self.schedule = schedule or []
        self.on_event = on_event
        # Injected so tests can check stall and pacing decisions without measuring time.
        self._sleep = sleep
        self._clock = clock
        self.events: list[FaultEvent] = []
        self.stats = Stats()
        self._healed = asyncio.Event()
        self._healed.set()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: dict[int, _Conn] = {}
        self._started = clock()

    # ---- lifecycle --------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.port}"

    async def start(self) -> None:
        self._started = self._clock()
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1])
        if self.port == self.target[1] and self.target[0] in {self.listen[0], "127.0.0.1", "localhost"}:
            # A proxy forwarding to itself would open connections until the process runs out of files.
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            raise ChaosConfigError(
                f"the proxy's target {self.target[0]}:{self.target[1]} is the proxy itself"
            )
        if self.schedule:
            self._spawn(self._run_schedule())
        log.info(
            "chaos proxy listening", extra={"listen": self.address, "target": self.target, "seed": self.seed}
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- runtime control --------------------------------------------------------------------------------

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> None:
        """Replace the faults, or change some fields: `set_faults(reset=0.5)`. Affects new connections
        (drop/reset/cut) and every read from now on (stall/bandwidth)."""
        base = faults if faults is not None else self.faults
        self.faults = dataclasses.replace(base, **changes) if changes else base
        self._record(0, "set_faults", dataclasses.asdict(self.faults))

    def partition(self) -> None:
        if self._healed.is_set():
            self._healed.clear()
            self._record(0, "partition")

    def heal(self) -> None:
        if not self._healed.is_set():
            self._healed.set()
            self._record(0, "heal")

    @property
    def partitioned(self) -> bool:
        return not self._healed.is_set()

    def reset_all(self) -> int:
        """Reset every open connection now; returns how many."""
        conns = list(self._conns.values())
        for conn in conns:
            self._kill(conn, "reset", reason="reset_all")
        return len(conns)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; it is re-checked whenever stats or events change."""
        while not predicate():
            changed = self._changed
            await changed.wait()

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.kind == kind)

    # ---- internals --------------------------------------------------------------------------------------

    def _record(self, conn: int, kind: str, detail: dict[str, Any] | None = None) -> None:
        event = FaultEvent(self._clock() - self._started, conn, kind, detail or {})
        self.events.append(event)
        log.info("chaos fault", extra=event.to_json())
        if self.on_event is not None:
            self.on_event(event)
        self._notify()

    def _notify(self) -> None:
        # Wake every waiter of the current generation; later waits use a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _run_schedule(self) -> None:
        for step in self.schedule:
            delay = step.at - (self._clock() - self._started)
            if delay > 0:
                await self._sleep(delay)
            if step.action == "partition":
                self.partition()
            elif step.action == "heal":
                self.heal()
            elif step.action == "reset_all":
                self.reset_all()
            else:
                self.set_faults(**step.faults)

    def _plan(self, num: int) -> tuple[_Conn, bool]:
        f = self.faults
        rng = random.Random(f"{self.seed}:{num}")
        # Always draw the same values in the same order, so one fault's probability does not shift
        # another's decisions for the same seed.
        drop_draw, kill_draw, kill_at = rng.random(), rng.random(), rng.randint(f.kill_min, f.kill_window)
        kill: Literal["reset", "cut"] | None = None
        if kill_draw < f.reset:
            kill = "reset"
        elif kill_draw < f.reset + f.cut:
            kill = "cut"
        return _Conn(num, rng, kill, kill_at), drop_draw < f.drop

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # stop() (Ctrl-C) cancelled this connection. End normally: on Python 3.11 asyncio's
            # start_server callback calls exception() on a cancelled handler task and logs the
            # CancelledError as an "Exception in callback" traceback.
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        conn, dropped = self._plan(self.stats.accepted)
        if dropped:
            self._record(conn.num, "drop")
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        conn.client = writer
        if conn.kill is not None:
            self._record(conn.num, "planned", {"kill": conn.kill, "at_byte": conn.kill_at})
        await self._healed.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            self._record(conn.num, "upstream_unreachable", {"error": str(exc)})
            _rst(writer)
            return
        conn.upstream = up_writer
        self._conns[conn.num] = conn
        self.stats.open += 1
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(conn, reader, up_writer, "up"))
                tg.create_task(self._pump(conn, up_reader, writer, "down"))
        except* (_Killed, OSError):
            pass
        finally:
            self._conns.pop(conn.num, None)
            self.stats.open -= 1
            for w in (writer, up_writer):
                if not w.transport.is_closing():
                    w.close()
            self._notify()

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        while True:
            await self._healed.wait()
            data = await reader.read(READ_SIZE)
            if not data:
                if writer.can_write_eof() and not writer.transport.is_closing():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            if not self._healed.is_set():
                self.stats.held += len(data)
                self._notify()
                await self._healed.wait()
                self.stats.held -= len(data)
            await self._maybe_stall(conn, direction)
            data = self._clip_for_kill(conn, data)
            if data:
                await self._forward(conn, writer, data, direction)
            if conn.kill is not None and not conn.killed and conn.forwarded >= conn.kill_at:
                await self._finish_kill(conn)

    async def _maybe_stall(self, conn: _Conn, direction: str) -> None:
        f = self.faults
        if f.stall_max <= 0 or f.stall_probability <= 0:
            return
        if conn.rng.random() < f.stall_probability:
            seconds = conn.rng.uniform(0, f.stall_max)
            self._record(conn.num, "stall", {"direction": direction, "seconds": round(seconds, 3)})
            await self._sleep(seconds)

    def _clip_for_kill(self, conn: _Conn, data: bytes) -> bytes:
        if conn.kill is None or conn.killed or conn.forwarded + len(data) < conn.kill_at:
            return data
        room = conn.kill_at - conn.forwarded
        if self.faults.cut_mid_message:
            return data[:room]
        # Kill between reads: this whole read is lost.
        conn.kill_at = conn.forwarded
        return b""

    async def _forward(self, conn: _Conn, writer: asyncio.StreamWriter, data: bytes, direction: str) -> None:
        bandwidth = self.faults.bandwidth
        if bandwidth is None:
            pieces = [data]
        else:
            step = max(1, bandwidth // _PACE_SLICES_PER_S)
            pieces = [data[i : i + step] for i in range(0, len(data), step)]
        for piece in pieces:
            if bandwidth is not None:
                now = self._clock()
                start = max(now, conn.pace_free.get(direction, now))
                conn.pace_free[direction] = start + len(piece) / bandwidth
                if start > now:
                    await self._sleep(start - now)
            writer.write(piece)
            await writer.drain()
            conn.forwarded += len(piece)
            if direction == "up":
                self.stats.bytes_up += len(piece)
            else:
                self.stats.bytes_down += len(piece)
        self._notify()

    async def _finish_kill(self, conn: _Conn) -> None:
        kind = conn.kill
        assert kind is not None
        if kind == "cut":
            # Let what we forwarded reach the peers before the FIN.
            for w in (conn.client, conn.upstream):
                if w is not None and not w.transport.is_closing():
                    with contextlib.suppress(OSError):
                        await w.drain()
        self._kill(conn, kind, reason="planned")
        raise _Killed

    def _kill(self, conn: _Conn, kind: Literal["reset", "cut"], *, reason: str) -> None:
        if conn.killed:
            return
        conn.killed = True
        self._record(conn.num, kind, {"after_bytes": conn.forwarded, "reason": reason})
        for w in (conn.client, conn.upstream):
            if w is None or w.transport.is_closing():
                continue
            if kind == "reset":
                _rst(w)
            else:
                w.close()


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ChaosConfigError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def load_schedule(path: str | Path) -> list[ScheduleStep]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ChaosConfigError(f"cannot read schedule {path}: {exc.strerror}") from None
    return parse_schedule(text)
