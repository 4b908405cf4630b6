"""`RidesyncBackend`: a real `ridesync serve` process on loopback, with its own data dir and keys.

Started as a subprocess of the test's Python (`python -m engine.cli.main serve --port 0 --init`), so what
a test talks to is exactly what production runs: the sync endpoint, the HTTP API, the class hub. Tokens
are signed with the data dir's keys (`token(role, device, ...)`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from engine.auth.tokens import KeyRing
from engine.urls import ws_url

_URL = re.compile(r"https?://[\w.\-\[\]:]+")
START_TIMEOUT_S = 30.0


class BackendStartError(RuntimeError):
    """`ridesync serve` exited or printed no URL; the message carries its stderr."""


class RidesyncBackend:
    """A running `ridesync serve`: `url`, `data_dir`, `token(...)`, and the class hub's `ws_url(...)`."""

    def __init__(self, data_dir: str | os.PathLike[str], *, extra_args: Iterable[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = self.data_dir / "serve.log"
        self._log: IO[bytes] = open(self._log_path, "ab")  # noqa: SIM115  # closed in close()
        cmd = [sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--data", str(self.data_dir)]
        if not (self.data_dir / "token-keys.json").exists():
            cmd.append("--init")
        self.proc = subprocess.Popen(
            [*cmd, *extra_args], stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL
        )
        self.url = self._wait_for_url()
        self._keys = KeyRing.load(self.data_dir)
        # Drain stdout so the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True, name="ridesync-serve-stdout").start()

    def _wait_for_url(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        seen: list[str] = []
        while time.monotonic() < deadline:
            raw = self.proc.stdout.readline()
            if not raw:
                break
            line = raw.decode(errors="replace").strip()
            seen.append(line)
            with contextlib.suppress(ValueError, AttributeError):
                url = json.loads(line).get("url")
                if isinstance(url, str):
                    return url.rstrip("/")
            match = _URL.search(line)
            if match and "listening" in line.lower():
                return match.group(0).rstrip("/")
        self.close()
        err = self._log_path.read_text(errors="replace")[-2000:]
        raise BackendStartError(f"ridesync serve did not start: stdout {seen!r}, stderr {err!r}")

    def _drain(self) -> None:
        out = self.proc.stdout
        if out is not None:
            with contextlib.suppress(ValueError, OSError):
                for _ in out:
                    pass

    @property
    def host_port(self) -> str:
        return self.url.split("://", 1)[1]

    def token(
        self,
        role: str,
        device: str,
        *,
        classes: Iterable[str] = (),
        rider: str | None = None,
        rides: Iterable[str] | None = None,
        ttl_s: float = 86400.0,
    ) -> str:
        """A device token signed with this backend's keys (roles: bike, app, viewer, backend)."""
        return self._keys.issue(role, device, classes=classes, rides=rides, ttl_s=ttl_s, rider=rider)

    def ws_url(self, class_id: str, token: str | None = None, *, mode: str | None = None) -> str:
        """The class hub's WebSocket URL (`mode`: pub, sub or pubsub; the token as a query parameter)."""
        query = [f"mode={mode}"] if mode else []
        if token is not None:
            query.append(f"token={token}")
        return ws_url(self.url, f"/live/v1/classes/{class_id}/ws", "&".join(query))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class RidesyncHub:
    """The live lane of a `RidesyncBackend` (the class hub runs inside `ridesync serve`)."""

    def __init__(self, backend: RidesyncBackend) -> None:
        self.backend = backend
        self.url = backend.url

    def ws_url(self, class_id: str, token: str | None = None, *, mode: str | None = None) -> str:
        return self.backend.ws_url(class_id, token, mode=mode)

    def token(self, role: str, device: str, class_id: str, **kwargs: object) -> str:
        """A token for one class (bike and app tokens may publish, viewer tokens subscribe)."""
        rider = kwargs.get("rider")
        return self.backend.token(role, device, classes=[class_id], rider=str(rider) if rider else None)

    def class_url(self, class_id: str) -> str:
        """`GET` this (with a token) for the class as a fresh subscriber first sees it."""
        return f"{self.url}/live/v1/classes/{class_id}"
