"""The data dir as commands meet it: checked before use, its signing keys opened (never created silently),
and every problem turned into one line that names the file (a CliError: exit 2, as a bad flag).

Signing keys (`DIR/token-keys.json`) are created only on request: `ridesync serve --init` or `ridesync
token issue --init` on a new data dir. Every token was signed with those keys, so a command that found
none (a typo in `--data`, a volume that did not mount, a file deleted by mistake) and made new ones would
orphan every issued token; instead it refuses and says to pass `--init`. When `--init` does create keys,
a warning line says so. A key file that users other than its owner may read is used, with a warning
naming the file and the fix (`chmod 600 FILE`): refusing would take a running fleet down over a
permission that only an operator can judge.

Warnings are one JSON line on stderr, `{"warning": text}`, beside errors' `{"error": text}`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from engine.auth.tokens import KeyFileDamaged, KeyFileError, KeyRing, KeysMissing
from engine.cli.main import CliError

# What a data dir that `ridesync serve` ran on holds besides its keys.
USED_MARKS = ("backend",)


def warn(text: str) -> None:
    print(json.dumps({"warning": text}), file=sys.stderr, flush=True)


def os_error(exc: OSError, what: str = "") -> CliError:
    """A CliError naming the file an OSError was about (a data dir problem, not a traceback)."""
    name = exc.filename if exc.filename is not None else what
    reason = exc.strerror or str(exc)
    return CliError(f"cannot use {name}: {reason}" if name else reason)


def check_data_dir(data_dir: Path) -> None:
    """Refuse a data dir that exists but is not a directory this user may read and write. A missing one
    is fine here (whoever needs it creates it)."""
    try:
        is_dir = data_dir.is_dir()
        exists = is_dir or os.path.lexists(data_dir)
    except OSError as exc:
        raise os_error(exc, str(data_dir)) from None
    if not exists:
        # A parent that cannot be searched hides the dir itself: say so rather than "does not exist".
        parent = data_dir.parent
        if parent.is_dir() and not os.access(parent, os.X_OK):
            raise CliError(f"cannot use data dir {data_dir}: {os.strerror(errno.EACCES)} ({parent})")
        return
    if not is_dir:
        raise CliError(f"data dir {data_dir} is not a directory")
    if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise CliError(
            f"cannot use data dir {data_dir}: {os.strerror(errno.EACCES)} "
            f"(it must be readable and writable by uid {os.geteuid()})"
        )


def open_keyring(data_dir: Path, *, init: bool) -> KeyRing:
    """The data dir's signing keys. Missing keys are created only with `init` (with a warning line);
    damaged or unreadable ones are a CliError naming the file, `init` or not."""
    check_data_dir(data_dir)
    try:
        ring = KeyRing.load(data_dir)
    except KeysMissing as exc:
        if not init:
            used = [name for name in USED_MARKS if (data_dir / name).exists()]
            hint = (
                f"{data_dir} was used before (it has {', '.join(used)}): restore the key file from a backup, "
                "or run with --init to start over with new keys (every token issued so far stops verifying)"
                if used
                else f"if {data_dir} is a new data dir, run again with --init to create them (tokens issued "
                "with other keys will not verify here)"
            )
            raise CliError(
                f"no signing keys: {exc}. Tokens are signed with the keys in this file; {hint}"
            ) from None
        try:
            ring = KeyRing.create(data_dir)
        except KeyFileError as exc:
            raise CliError(str(exc)) from None
        warn(
            f"created new signing keys in {ring.path}; only tokens issued from this data dir verify "
            "against them"
        )
    except KeyFileDamaged as exc:
        raise CliError(
            f"{exc}; restore it from a backup (every issued token was signed with it), or move it away "
            "and run with --init to start over"
        ) from None
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    mode = ring.exposed()
    if mode is not None:
        warn(
            f"signing key file {ring.path} is readable by other users (mode {mode:04o}): anyone who can "
            f"read it can sign tokens; fix: chmod 600 {ring.path}"
        )
    return ring


SERVE_LOCK = "serve.lock"


@contextlib.contextmanager
def serving_lock(data_dir: Path) -> Iterator[Path]:
    """Hold `DIR/serve.lock` exclusively while a backend serves from `data_dir`: a second `ridesync serve`
    (or `demo --data`) on the same dir is refused with a CliError naming the holder's pid, rather than
    running beside the first and answering `unknown_ride` for the rides it holds.

    The lock is flock(2) on an open file: the kernel releases it when the descriptor closes, so a
    server killed with SIGKILL leaves no stale lock behind (the file itself stays, harmless)."""
    import fcntl

    path = data_dir / SERVE_LOCK
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise os_error(exc, str(path)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise CliError(
                f"data dir {data_dir} is in use by another ridesync serve{who}: {path} is locked; stop that "
                "one, or give this one its own --data"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)
