"""Real processes on loopback: `ridesync serve`, `ridesync ride`, `ridesync app`, and the fault proxy
(in the test's own event loop) between them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.auth.tokens import KeyRing
from tests.backend.server import make_server, server

__all__ = ["make_server", "server"]

RIDESYNC = [sys.executable, "-m", "engine.cli.main"]
HANG_GUARD_S = 120


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
    def last(self) -> dict[str, Any]:
        return self.lines[-1]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


def _log_file(path: Path | None) -> Any:
    return path.open("ab") if path is not None else asyncio.subprocess.DEVNULL


async def spawn(*args: str, stderr_path: Path | None = None) -> Proc:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stderr = _log_file(stderr_path)
    try:
        proc = await asyncio.create_subprocess_exec(
            *RIDESYNC, *args, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
        )
    finally:
        if stderr_path is not None and not isinstance(stderr, int):
            stderr.close()
    p = Proc(proc)
    p.reader = asyncio.ensure_future(p._read())
    return p


@dataclass
class Backend:
    """`ridesync serve` on a data dir; `restart()` brings it back on the same port after a kill."""

    data: Path
    logs: Path
    port: int = 0
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await spawn(
            "serve", "--port", str(self.port), "--data", str(self.data), "--log-level", "WARNING",
            stderr_path=self.logs / "serve.log",
        )  # fmt: skip
        line = await self.proc.wait_line(lambda o: o.get("event") == "listening")
        self.port = int(line["url"].rsplit(":", 1)[1])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.proc.returncode is None:
            self.proc.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.finish()
            except TimeoutError:
                self.proc.kill()
                await self.proc.finish()

    def token(self, role: str, device: str, *, rider: str | None = None) -> str:
        return KeyRing.load_or_create(self.data).issue(role, device, rider=rider)

    async def ride(self, ride_id: str, token: str) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.url}/v1/rides/{ride_id}", headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    logs = tmp_path / "logs"
    logs.mkdir()
    b = Backend(data=tmp_path / "server", logs=logs)
    KeyRing.load_or_create(b.data)  # keys exist before serve starts, so tokens issued here verify
    await b.start()
    try:
        yield b
    finally:
        await b.stop()
