"""The guard in a real `ridesync serve` process: its flags, and what its stderr shows for hostile requests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live.conftest import HANG_GUARD_S

# (Not `-m engine.cli.main`: run as __main__, that module's CliError is not the one `serve` raises.)
SERVE = (
    sys.executable,
    "-c",
    "import sys; from engine.cli.main import main; sys.exit(main())",
    "serve",
    "--port",
    "0",
)


def _read_to_eof(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def test_serve_flags_bound_a_half_open_request_and_log_bad_requests_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*SERVE, "--data", str(tmp_path), "--header-timeout", "0.3", "--max-pending-per-ip", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(json.loads(proc.stdout.readline())["url"].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) as s:
            s.sendall(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 400 " in _read_to_eof(s).split(b"\r\n", 1)[0]
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            assert _read_to_eof(s).startswith(b"HTTP/1.1 408")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert "Traceback" not in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert not [x for x in lines if x["level"] in ("warning", "error", "critical")]
    bad = [x for x in lines if x["msg"] == "bad request refused"]
    assert len(bad) == 1 and bad[0]["level"] == "info"
    assert bad[0]["client"] == "127.0.0.1" and "8190" in bad[0]["reason"]
    timeouts = [x for x in lines if "request head not received" in x["msg"]]
    assert len(timeouts) == 1 and timeouts[0]["level"] == "info" and timeouts[0]["client"] == "127.0.0.1"


@pytest.mark.parametrize(
    "flag", ["--header-timeout=0", "--body-timeout=-1", "--keepalive-timeout=0", "--max-pending-per-ip=0"]
)
def test_serve_refuses_a_limit_that_is_not_positive(tmp_path: Path, flag: str) -> None:
    run = subprocess.run(
        [*SERVE, "--data", str(tmp_path), flag],
        check=False,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert run.returncode == 2
    assert flag.split("=", maxsplit=1)[0] in run.stdout + run.stderr
