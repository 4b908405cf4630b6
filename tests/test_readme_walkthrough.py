"""README.md's "Backend, class hub and devices" walkthrough, run command by command exactly as printed.

The shell block is read from README.md; each command runs through bash with the venv's `ridesync` first
on PATH, in an empty temporary directory (so `--data ./ridesync-data` and friends land there). The only
change is the port numbers, swapped for free ones: several checkouts share this machine. Commands that
end in `&` are started in the background, as a shell would, and stopped at the end. The Redis line runs
when Debian's `redis-server` is installed (on a free port too).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SECTION = "### Backend, class hub and devices"
READY_S = 30.0
STEP_TIMEOUT_S = 240


def walkthrough() -> list[str]:
    """The section's shell block as logical commands: continuations joined, comment lines dropped."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "no shell block under " + SECTION
    commands: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        commands.append(pending + line)
        pending = ""
    return commands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def strip_comment(command: str) -> str:
    """A trailing `# ...` comment (outside quotes), as the shell would ignore it."""
    out, quote = [], ""
    for i, ch in enumerate(command):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).rstrip()


def wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server on port {port} exited with {proc.returncode}"
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)  # polling interval; the wait is for the condition, bounded by READY_S
    raise AssertionError(f"nothing answered /healthz on port {port} within {READY_S} s")


def last_json(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stdout[-2000:]
    obj = json.loads(lines[-1])
    assert isinstance(obj, dict)
    return obj


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_readme_walkthrough_runs_as_printed(
    tmp_path: Path, background: list[subprocess.Popen[bytes]]
) -> None:
    commands = walkthrough()
    assert any(c.startswith("ridesync serve --port 8750") for c in commands), commands
    redis = shutil.which("redis-server")
    ports = {"8750": free_port(), "8751": free_port(), "8752": free_port(), "6379": free_port()}
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RIDESYNC_DATA", None)
    outputs: dict[str, dict[str, Any]] = {}
    redis_started = False

    def substitute(command: str) -> str:
        for printed, port in ports.items():
            command = re.sub(rf"\b{printed}\b", str(port), command)
        return command

    def start(command: str, port: int | None, log: str) -> None:
        with (tmp_path / log).open("ab") as err:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command}"], cwd=tmp_path, env=env, stdout=err, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        background.append(proc)
        if port is not None:
            wait_healthy(port, proc)

    for printed in commands:
        command = substitute(strip_comment(printed))
        if "--relay" in command:
            if redis is None:
                continue  # the relay needs Debian's redis-server; everything else has run
            if not redis_started:
                start(f"redis-server --port {ports['6379']} --save '' --appendonly no", None, "redis.log")
                redis_started = True
        if command.endswith("&"):
            for i, part in enumerate(p.strip() for p in command.split("&") if p.strip()):
                port = re.search(r"--port (\d+)", part)
                start(part, int(port.group(1)) if port else None, f"background-{len(background)}-{i}.log")
            continue
        assignment = re.fullmatch(r"([A-Z_]+)=\$\((.*)\)", command)
        script = assignment.group(2) if assignment else command
        done = subprocess.run(
            ["bash", "-c", script],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
        )
        assert done.returncode == 0, (printed, done.returncode, done.stdout[-2000:], done.stderr[-2000:])
        if assignment:
            env[assignment.group(1)] = done.stdout.strip()
        elif done.stdout.lstrip().startswith("{"):
            outputs[command.split()[0] + " " + command.split()[1]] = last_json(done.stdout)

    ride, app, view, pushed = (
        outputs[k] for k in ("ridesync ride", "ridesync app", "curl -H", "ridesync sync")
    )
    assert (
        ride["samples_recorded"] == 1800
        and ride["sync_state"] == "reconciled"
        and ride["phase"] == "finalized"
    )
    # The app ran after the ride was finalized: the title still changes, the end still counts once.
    assert app["shared"]["title"] == "Hill climb" and app["sync_state"] == "reconciled"
    assert app["end_events_counted"] == 1 and app["end_post"]["ok"]
    assert view["phase"] == "finalized" and view["shared"]["title"] == "Hill climb"
    assert view["samples"] == {"bike-1": 1800} and view["end_events_counted"] == 1
    assert view["totals"]["duration_s"] == 1800.0
    assert pushed["ok"] is True and [r["sync_state"] for r in pushed["rides"]] == ["reconciled"]
    assert (tmp_path / "ridesync-data").is_dir() and (tmp_path / "bike-data").is_dir()
