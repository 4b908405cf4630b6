"""The guard in a real `ridesync serve` process: its flags, and what its stderr shows for hostile requests."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import HANG_GUARD_S

# (Not `-m engine.cli.main`: run as __main__, that module's CliError is not the one `serve` raises.)
SERVE = (
    sys.executable,
    "-c",
    "import sys; from engine.cli.main import main; sys.exit(main())",
    "serve",
    "--port",
    "0",
    "--init",
)


def _log_records(err: str) -> list[dict[str, object]]:
    """The JSON log records on a server's stderr (the --init warning about new keys is not one)."""
    parsed = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [x for x in parsed if "level" in x]


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
    # Log records (the --init warning line about new keys is not one).
    lines = [
        x for x in (json.loads(line) for line in err.splitlines() if line.startswith("{")) if "level" in x
    ]
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


def test_clients_resetting_during_a_websocket_upgrade_are_info_lines_not_tracebacks(tmp_path: Path) -> None:
    """A device that vanishes in the middle of its /v1/sync or live upgrade (a partition, Wi-Fi) is normal
    life: each is one INFO line, never an ERROR traceback (the sync endpoint once returned a response it
    had not prepared, and aiohttp logged "Call .prepare() first")."""
    proc = subprocess.Popen(
        [*SERVE, "--data", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(json.loads(proc.stdout.readline())["url"].rsplit(":", 1)[1])
        token = subprocess.run(
            [*SERVE[:3], "token", "issue", "--role", "bike", "--device", "b1", "--class", "c1",
             "--data", str(tmp_path)],
            check=True, capture_output=True, text=True, timeout=HANG_GUARD_S,
        ).stdout.strip()  # fmt: skip
        upgrade = (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        for path in (f"/v1/sync?ride=r1&token={token}", f"/live/v1/classes/c1/ws?token={token}") * 10:
            s = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n".encode())
            # Close with RST, at once: the server meets a reset transport mid-upgrade.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_to_eof(s).startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert "Traceback" not in err
    # Log records (the --init warning line about new keys is not one).
    lines = [
        x for x in (json.loads(line) for line in err.splitlines() if line.startswith("{")) if "level" in x
    ]
    assert not [x for x in lines if x["level"] in ("warning", "error", "critical")], lines
