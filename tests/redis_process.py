"""A real, throwaway redis-server for tests (the live lane's relay, the backend nodes' ride push): the
`redis_server` fixture skips, naming Debian's package, where the binary is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HANG_GUARD_S = 30.0
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NO_PERSISTENCE = ("--save", "", "--appendonly", "no", "--dir")


class RedisProcess:
    """A real, throwaway redis-server on a free loopback port (no persistence), restartable in place."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *NO_PERSISTENCE,
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server not found: install the Debian package `redis-server`")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
