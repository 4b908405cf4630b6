"""A throwaway PostgreSQL cluster from Debian's `postgresql` binaries, for tests and benchmarks.

`PostgresCluster` runs `initdb` and `pg_ctl` from the newest `/usr/lib/postgresql/*/bin` in its own temp
dir, listening on loopback (a free port) and on a unix socket in that dir, with trust auth for the
`postgres` superuser. PostgreSQL refuses to run as root, so when this process is root the cluster runs as
the unprivileged `nobody` (its dir is chowned to it). `database()` creates a fresh database and returns
its `postgresql://` URL; `stop()` (or leaving the `with` block) stops the server and deletes everything.

`durable=False` turns fsync off: for correctness tests that restart nothing but the nodes; a benchmark
keeps the default (durable, as in production) so its commits per second mean something.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Self

PACKAGE = "postgresql"
_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (the message names the Debian package)."""


def find_bindir() -> Path:
    """The newest `/usr/lib/postgresql/<major>/bin` holding initdb and pg_ctl."""
    found = []
    for entry in glob.glob(_BIN_GLOB):
        bindir = Path(entry)
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            major = bindir.parent.name
            found.append((int(major) if major.isdigit() else 0, bindir))
    if not found:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries ({_BIN_GLOB}/initdb): install the Debian package `{PACKAGE}`"
        )
    return max(found)[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    def __init__(self, *, durable: bool = True, bindir: Path | None = None) -> None:
        self.bindir = bindir if bindir is not None else find_bindir()
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="ridesync-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._user: pwd.struct_passwd | None = None
        self._running = False

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        # As the unprivileged user when this process is root (initdb and postgres refuse root).
        user = self._user
        result = subprocess.run(
            args,
            check=False,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
            cwd=self.root,
        )
        if result.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()} {tail}"
            )

    def start(self) -> Self:
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("nobody")
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-instructions",
        )  # fmt: skip
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-k {self.root}",
            "-c max_connections=200",
            "-c shared_buffers=32MB",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        for attempt in range(5):
            self.port = _free_port()
            try:
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                    "-t", str(_START_TIMEOUT_S), "-o", " ".join([f"-p {self.port}", *options]), "start",
                )  # fmt: skip
                break
            except RuntimeError:
                # Another process took the free port between the probe and the bind: try another.
                if attempt == 4:
                    self._cleanup()
                    raise
        self._running = True
        return self

    def database(self, name: str | None = None) -> str:
        """Create a fresh database; returns its URL."""
        import psycopg  # the `postgres` extra: imported only where a cluster is used

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._running:
            self._running = False
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
