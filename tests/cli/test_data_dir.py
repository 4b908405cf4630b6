"""A damaged or missing data dir, as a user meets it: real `ridesync` processes on real files.

Every damage (garbage or truncated key file, a store or ledger file that is not a database, a data dir that
is a file or unreadable) ends in one line on stderr that names the file, exit status 2, and no traceback,
as a bad flag does. Missing signing keys are never regenerated silently: `serve` and `token issue` refuse
without `--init` and say so when `--init` created them. A key file others can read is warned about.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from engine.auth.tokens import KEY_FILE, KeyRing

TIMEOUT_S = 60
# Linux capabilities that let root ignore file permissions; dropped to test an unreadable dir as root.
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
PR_CAPBSET_DROP = 24


def _without_root_file_access() -> None:
    """In the child, before exec: no permission bypass, so root meets permissions as any user does."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def ridesync(argv: Sequence[str], *, confined: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        preexec_fn=_without_root_file_access if confined else None,
        stdin=subprocess.DEVNULL,
    )


def serve(data: Path, *extra: str, confined: bool = False) -> subprocess.CompletedProcess[str]:
    """`ridesync serve` on `data`: a refusal returns at once; a server that starts is stopped (SIGTERM)
    as soon as it prints `listening`, its output returned the same way."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--data", str(data), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_without_root_file_access if confined else None,  # noqa: PLW1509
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if first:
        listening = json.loads(first)
        assert listening["event"] == "listening", first
        # One request first: the server answers only once its loop waits, after its SIGTERM handler is
        # installed (`listening` is printed just before that).
        with urllib.request.urlopen(listening["url"] + "/healthz", timeout=TIMEOUT_S) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)


def assert_refused(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit 2, one JSON error line on stderr naming each of `names`, no traceback; the error text."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    error = json.loads(lines[0])["error"]
    for name in names:
        assert name in error, (name, error)
    assert "listening" not in proc.stdout
    return str(error)


def warnings(stderr: str) -> list[str]:
    """The `{"warning": text}` lines of a command's stderr (a server's JSON log lines are not these)."""
    out = []
    for line in stderr.splitlines():
        obj = json.loads(line) if line.startswith("{") else {}
        if isinstance(obj, dict) and set(obj) == {"warning"}:
            out.append(str(obj["warning"]))
    return out


def _keys(data: Path) -> Path:
    KeyRing.load_or_create(data)
    return data / KEY_FILE


def _garbage(path: Path, body: bytes = b"\x00\xffnot a database, not JSON either" * 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def _truncate(path: Path) -> None:
    body = path.read_bytes()
    path.write_bytes(body[: len(body) // 2])


def _a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


KEY_DAMAGE: dict[str, Callable[[Path], object]] = {
    "garbage": _garbage,
    "truncated": _truncate,
    "empty": lambda p: p.write_bytes(b""),
    "wrong shape": lambda p: p.write_text('{"current": "k1", "keys": {"k1": "00"}}'),
    "a directory": _a_directory,
}


@pytest.mark.parametrize("damage", sorted(KEY_DAMAGE))
def test_serve_on_a_damaged_key_file_names_it_and_exits_2(tmp_path: Path, damage: str) -> None:
    path = _keys(tmp_path)
    KEY_DAMAGE[damage](path)
    assert_refused(serve(tmp_path), str(path))
    assert_refused(serve(tmp_path, "--init"), str(path))  # --init never overwrites keys it cannot read


@pytest.mark.parametrize("damage", ["garbage", "truncated", "a directory"])
def test_token_issue_on_a_damaged_key_file_names_it_and_exits_2(tmp_path: Path, damage: str) -> None:
    path = _keys(tmp_path)
    KEY_DAMAGE[damage](path)
    for extra in ([], ["--json"], ["--init"]):
        argv = ["token", "issue", "--role", "bike", "--device", "bike-1", "--data", str(tmp_path), *extra]
        proc = ridesync(argv)
        assert_refused(proc, str(path))
        assert proc.stdout == ""


@pytest.mark.parametrize("name", ["ridesync.sqlite3", "idempotency.sqlite3"])
def test_serve_on_a_store_or_ledger_that_is_not_a_database_names_it(tmp_path: Path, name: str) -> None:
    _keys(tmp_path)
    path = tmp_path / "backend" / name
    _garbage(path)
    assert_refused(serve(tmp_path), str(path))


def test_serve_on_a_ledger_damaged_after_use_names_it(tmp_path: Path) -> None:
    """A real ledger, then its header overwritten: the error names the ledger, not just "not a database"."""
    _keys(tmp_path)
    assert serve(tmp_path).returncode == 0
    path = tmp_path / "backend" / "idempotency.sqlite3"
    assert path.stat().st_size > 0
    with path.open("r+b") as fh:
        fh.write(b"garbage garbage garbage!")
    assert_refused(serve(tmp_path), str(path))


@pytest.mark.parametrize("damage", ["garbage", "empty", "header"])
def test_serve_on_a_damaged_ride_directory_names_it(tmp_path: Path, damage: str) -> None:
    """The dashboard's ride directory (DIR/rides.sqlite3): not a database, emptied, or its header
    overwritten after a real server wrote it."""
    _keys(tmp_path)
    path = tmp_path / "rides.sqlite3"
    if damage == "garbage":
        _garbage(path)
    elif damage == "empty":
        _garbage(path, b"")
    else:
        assert serve(tmp_path).returncode == 0
        assert path.stat().st_size > 0
        with path.open("r+b") as fh:
            fh.write(b"garbage garbage garbage!")
    assert_refused(serve(tmp_path), str(path))


def test_serve_on_a_data_dir_that_is_a_file_names_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    assert_refused(serve(data, "--init"), str(data))
    argv = ["token", "issue", "--role", "bike", "--device", "bike-1", "--data", str(data), "--init"]
    assert_refused(ridesync(argv), str(data))


def _can_confine() -> bool:
    if os.geteuid() != 0:
        return True  # permissions already apply
    try:
        return subprocess.run(["true"], preexec_fn=_without_root_file_access, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(sys.platform != "linux" or not _can_confine(), reason="needs Linux capabilities as root")
def test_serve_on_an_unreadable_data_dir_names_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _keys(data)
    os.chmod(data, 0)
    try:
        assert_refused(serve(data, confined=True), str(data))
        argv = ["token", "issue", "--role", "bike", "--device", "bike-1", "--data", str(data)]
        assert_refused(ridesync(argv, confined=True), str(data))
        # A key file this user cannot read.
        os.chmod(data, 0o700)
        os.chmod(data / KEY_FILE, 0)
        assert_refused(serve(data, confined=True), str(data / KEY_FILE))
    finally:
        os.chmod(data, 0o700)


def test_serve_refuses_missing_keys_without_init(tmp_path: Path) -> None:
    data = tmp_path / "data"
    error = assert_refused(serve(data), str(data / KEY_FILE), "--init")
    assert "token" in error
    assert not (data / KEY_FILE).exists(), "no keys were created"
    # Keys gone from a data dir that has a backend store: the same refusal.
    (data / "backend").mkdir(parents=True)
    assert_refused(serve(data), str(data / KEY_FILE), "--init")


def test_serve_init_creates_keys_once_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = serve(data, "--init")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    created = warnings(first.stderr)
    assert len(created) == 1 and str(data / KEY_FILE) in created[0], first.stderr
    keys = (data / KEY_FILE).read_bytes()
    again = serve(data, "--init")  # --init on a data dir with keys keeps them
    assert again.returncode == 0 and warnings(again.stderr) == [], again.stderr
    assert (data / KEY_FILE).read_bytes() == keys
    assert serve(data).returncode == 0


def test_token_issue_refuses_missing_keys_without_init_and_warns_when_it_creates_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    argv = ["token", "issue", "--role", "bike", "--device", "bike-1", "--data", str(data)]
    assert_refused(ridesync(argv), str(data / KEY_FILE), "--init")
    assert not (data / KEY_FILE).exists()
    proc = ridesync([*argv, "--init"])
    assert proc.returncode == 0, proc.stderr
    warning = json.loads(proc.stderr)["warning"]
    assert str(data / KEY_FILE) in warning and "created" in warning
    assert KeyRing.load_or_create(data).verify(proc.stdout.strip()).device == "bike-1"
    again = ridesync(argv)
    assert again.returncode == 0 and again.stderr == "", again.stderr


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_warned_about(tmp_path: Path, mode: int) -> None:
    path = _keys(tmp_path)
    os.chmod(path, mode)
    argv = ["token", "issue", "--role", "bike", "--device", "bike-1", "--data", str(tmp_path)]
    for proc in (ridesync(argv), serve(tmp_path)):
        assert proc.returncode == 0, proc.stderr
        found = warnings(proc.stderr)
        assert len(found) == 1, proc.stderr
        text = found[0]
        assert str(path) in text and f"chmod 600 {path}" in text
    os.chmod(path, 0o600)
    assert ridesync(argv).stderr == ""


def _bike_token(tmp_path: Path) -> str:
    return KeyRing.load_or_create(tmp_path / "keys").issue("bike", "bike-1")


@pytest.mark.parametrize("command", ["ride", "app"])
def test_ride_and_app_on_a_damaged_local_store_name_it(tmp_path: Path, command: str) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys")
    role = "bike" if command == "ride" else "app"
    token = ring.issue(role, "dev-1")
    data = tmp_path / "data"
    path = data / f"{role}-dev-1" / "ridesync.sqlite3"
    _garbage(path)
    argv = [
        command,
        "--backend",
        "http://127.0.0.1:9",
        "--token",
        token,
        "--ride-id",
        "r1",
        "--data",
        str(data),
    ]
    argv += ["--hr", "sim"] if command == "ride" else []
    for extra in ([], ["--json"]):
        assert_refused(ridesync([*argv, *extra]), str(path))
    # A data dir that is a file.
    data.rename(tmp_path / "moved")
    data.write_text("x")
    assert_refused(ridesync(argv), str(data))


@pytest.mark.parametrize(
    "name", ["token-keys.json", "backend/ridesync.sqlite3", "backend/idempotency.sqlite3", "rides.sqlite3"]
)
def test_demo_on_a_damaged_data_dir_names_the_file(tmp_path: Path, name: str) -> None:
    """`ridesync demo --data DIR` creates what a new DIR lacks, and refuses what a used one has damaged."""
    _keys(tmp_path)
    _garbage(tmp_path / name)
    argv = ["demo", "--headless", "--json", "--duration", "5", "--riders", "1", "--data", str(tmp_path)]
    proc = ridesync(argv)
    assert_refused(proc, str(tmp_path / name))
