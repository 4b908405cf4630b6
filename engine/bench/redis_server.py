"""A throwaway redis-server for the relay: loopback, a free port, no persistence. The one harness that
`ridesync bench live` (relay configurations) and the relay tests start, stop and restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

# No RDB snapshots, no AOF: a throwaway server writes nothing worth keeping.
EPHEMERAL = ("--save", "", "--appendonly", "no", "--loglevel", "warning", "--dir")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisNotFound(RuntimeError):
    """No redis-server binary on this machine."""


class RedisServer:
    """A real redis-server process on `port` (a free one by default), restartable in place."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        port: int | None = None,
        binary: str = "redis-server",
        cpus: set[int] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise RedisNotFound(f"{binary} not found: install the Debian package redis-server")
        self.binary = path
        self.workdir = str(workdir)
        self.port = port if port is not None else free_port()
        self.cpus = cpus
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING; if it does not, stop it and raise RuntimeError."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *EPHEMERAL, self.workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self.cpus:
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setaffinity(self.proc.pid, self.cpus)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.start_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
