"""Real `ridesync` processes on loopback, owned by whoever starts them: `spawn` runs a subcommand and
collects its stdout JSON lines, `ServeProcess` is `ridesync serve` on a data dir that can be SIGKILLed and
restarted on the same port, `proc_stats` reads a process's RSS and open files from /proc.

The device and export tests (tests/support/processes.py) use these too: one home for them."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from engine.auth.tokens import KeyRing

RIDESYNC = [sys.executable, "-m", "engine.cli.main"]
LOOPBACK = "127.0.0.1"


@dataclass
class Proc:
    """A ridesync subprocess whose stdout JSON lines are collected as they arrive."""

    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    self.lines.append(obj)
            self.changed.set()
            self.changed = asyncio.Event()
        self.changed.set()

    async def wait_line(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            for line in self.lines:
                if predicate(line):
                    return line
            if self.reader is not None and self.reader.done():
                raise AssertionError(f"process ended without the line; got {self.lines[-5:]}")
            await self.changed.wait()

    async def finish(self) -> int:
        code = await self.proc.wait()
        if self.reader is not None:
            await self.reader
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; always reaps the process and its reader."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace_s):
                    await self.finish()
                return
            except TimeoutError:
                self.kill()
        await self.finish()

    @property
    def last(self) -> dict[str, Any]:
        return self.lines[-1]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


async def spawn(*args: str, stderr_path: Path | None = None) -> Proc:
    """`ridesync ARGS…` with stdout piped (JSON lines) and stderr appended to `stderr_path`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stderr: Any = stderr_path.open("ab") if stderr_path is not None else asyncio.subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(
            *RIDESYNC, *args, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
        )
    finally:
        if not isinstance(stderr, int):
            stderr.close()
    p = Proc(proc)
    p.reader = asyncio.ensure_future(p._read())
    return p


@contextlib.asynccontextmanager
async def owned(*procs: Proc) -> AsyncIterator[list[Proc]]:
    """Every process appended to the yielded list is stopped on the way out, however the block ends."""
    started = list(procs)
    try:
        yield started
    finally:
        for p in started:
            with contextlib.suppress(Exception):
                await asyncio.shield(p.stop(grace_s=5.0))


@dataclass
class ServeProcess:
    """`ridesync serve` on a data dir; `restart()` brings it back on the same port after a kill."""

    data: Path
    logs: Path
    port: int = 0
    proc: Proc | None = None
    extra: tuple[str, ...] = ()
    log_level: str = "WARNING"  # of its stderr, logs/serve.log

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        KeyRing.load_or_create(self.data)  # keys exist before serve starts, so tokens issued here verify
        self.proc = await spawn(
            "serve", "--host", LOOPBACK, "--port", str(self.port), "--data", str(self.data),
            "--log-level", self.log_level, *self.extra, stderr_path=self.logs / "serve.log",
        )  # fmt: skip
        async with asyncio.timeout(60):
            line = await self.proc.wait_line(lambda o: o.get("event") == "listening")
        self.port = int(line["url"].rsplit(":", 1)[1])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    async def killed(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None:
            self.proc.kill()
            await self.proc.finish()

    async def restart(self) -> None:
        await self.killed()
        await self.start()

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()

    async def __aenter__(self) -> ServeProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())

    def ring(self) -> KeyRing:
        return KeyRing.load_or_create(self.data)

    def token(self, role: str, device: str, **kw: Any) -> str:
        return issue_token(self.ring(), role, device, **kw)

    async def ride(self, ride_id: str, token: str) -> dict[str, Any]:
        status, body = await get_json(f"{self.url}/v1/rides/{ride_id}", token)
        if status != 200:
            raise AssertionError(f"GET /v1/rides/{ride_id}: {status} {body}")
        assert isinstance(body, dict)
        return body


def issue_token(ring: KeyRing, role: str, device: str, *, rider: str | None = None, **kw: Any) -> str:
    """A token from `ring`. `rider` (who rides with this device: an app token with the bike's rider may
    write that bike's ride) is passed only to key rings that know the claim; before rides had owners,
    any app could write any ride and the claim did not exist."""
    if rider is not None and "rider" in inspect.signature(ring.issue).parameters:
        kw["rider"] = rider
    return ring.issue(role, device, **kw)


async def get_json(url: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def proc_stats(pid: int) -> dict[str, int]:
    """RSS (KiB, /proc/PID/status VmRSS) and open file descriptors (/proc/PID/fd) of a live process."""
    rss_kb = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = 0
    return {"rss_kb": rss_kb, "fds": fds}
