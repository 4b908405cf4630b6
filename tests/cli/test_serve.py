"""`ridesync serve` as an operator meets it: what it prints once listening, and one server per data dir."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.datadir import SERVE_LOCK
from engine.cli.main import main
from tests.cli.test_data_dir import TIMEOUT_S, assert_refused, ridesync

SERVE = [sys.executable, "-m", "engine.cli.main", "serve", "--port", "0"]


def _start(data: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [*SERVE, "--data", str(data), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.communicate(timeout=TIMEOUT_S)
    return proc, json.loads(line)


def test_serve_prints_the_dashboard_url_and_the_viewer_token_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, listening = _start(data, "--init")
    try:
        assert listening["event"] == "listening"
        url = listening["url"]
        assert listening["dashboard_url"] == f"{url}/"
        command = listening["viewer_token_command"]
        assert command.startswith("ridesync token issue --role viewer --device ")
        assert f"--data {data}" in command
        # The command works as printed (with a class filled in) against this data dir.
        argv = command.split()[1:]
        argv[argv.index("CLASS")] = "spin-6am"
        issued = ridesync(argv)
        assert issued.returncode == 0, issued.stderr
        assert issued.stdout.startswith("rs1.")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT_S)


def test_second_serve_on_one_data_dir_is_refused_and_a_killed_one_frees_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, _ = _start(data, "--init")
    try:
        second = subprocess.run(
            [*SERVE, "--data", str(data)], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
        error = assert_refused(second, str(data), "in use", f"pid {first.pid}")
        assert SERVE_LOCK in error
    finally:
        first.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock with the fd
        first.communicate(timeout=TIMEOUT_S)
    third, listening = _start(data)
    third.send_signal(signal.SIGTERM)
    third.communicate(timeout=TIMEOUT_S)
    assert listening["event"] == "listening"


def test_serve_refuses_a_locked_data_dir_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    fd = os.open(data / SERVE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["serve", "--port", "0", "--data", str(data), "--init"]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err.splitlines()
    assert "in use by another ridesync serve" in json.loads(err[-1])["error"]
