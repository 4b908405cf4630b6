"""Where `ridesync rides` reads rides from: a backend's HTTP API, or a replica's own data dir.

A data dir is read from a consistent copy of its SQLite file (SQLite's online backup, through a read-only
connection) opened with the engine's `ReplicaStore`, so reading never writes to the replica, even while
its bike or app is running: opening a store binds a fresh actor and replays unfolded raw samples, and
that happens on the copy. The copy shows what the replica would show if it restarted now.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.export import ExportError, export, from_docs
from engine.ride.schema import Role
from engine.store import ReplicaStore, StoreError
from engine.store.db import DB_NAME

ROLE_ORDER = {Role.BACKEND.value: 0, Role.BIKE.value: 1, Role.APP.value: 2}
TIMEOUT_S = 30.0


class RidesError(Exception):
    """A one-line, user-facing error (unknown ride, unreachable backend, refused token, …)."""


# -- a backend ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendSource:
    url: str
    token: str

    def _get(self, path: str) -> tuple[bytes, str]:
        base = self.url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise RidesError(f"--backend must be an http:// or https:// URL, got {self.url!r}")
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                return resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raise RidesError(_http_error(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RidesError(f"cannot reach the backend at {base}: {reason}") from None

    def _json(self, path: str) -> dict[str, Any]:
        body, _ = self._get(path)
        try:
            obj = json.loads(body)
        except ValueError:
            raise RidesError(f"the backend sent something that is not JSON for {path}") from None
        if not isinstance(obj, dict):
            raise RidesError(f"the backend sent an unexpected answer for {path}")
        return obj

    def list(self) -> list[dict[str, Any]]:
        """Every ride the token reads, page by page (`GET /v1/rides` pages them; `next` continues)."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            query = "" if after is None else f"?after={_quote(after)}"
            page = self._json(f"/v1/rides{query}")
            rides = page.get("rides")
            if isinstance(rides, list):
                out.extend(r for r in rides if isinstance(r, dict))
            cursor = page.get("next")
            if cursor is None:
                return out
            # Ride ids only grow page by page: a backend that sends anything else would loop us forever.
            if not isinstance(cursor, str) or (after is not None and cursor <= after):
                raise RidesError(f"the backend sent a bad page cursor for /v1/rides: {cursor!r}")
            after = cursor

    def show(self, ride_id: str) -> dict[str, Any]:
        return self._json(f"/v1/rides/{_quote(ride_id)}")

    def export(self, ride_id: str, fmt: str) -> bytes:
        body, _ = self._get(f"/v1/rides/{_quote(ride_id)}/export?format={urllib.parse.quote(fmt)}")
        return body


def _quote(ride_id: str) -> str:
    return urllib.parse.quote(ride_id, safe="")


def _http_error(exc: urllib.error.HTTPError) -> str:
    code, detail = "", ""
    with contextlib.suppress(Exception):
        body = json.loads(exc.read())
        if isinstance(body, dict):
            code, detail = str(body.get("error") or ""), str(body.get("detail") or "")
    if exc.code == 404 and code == "unknown_ride":
        return f"unknown ride: {detail}" if detail else "unknown ride"
    what = {401: "the backend refused the token", 403: "the token may not read this"}.get(
        exc.code, "the backend answered"
    )
    reason = ": ".join(part for part in (code, detail) if part) or str(exc.reason)
    return f"{what} ({exc.code} {reason})"


# -- a replica's data dir -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replica:
    path: Path
    device: str
    role: str

    @property
    def label(self) -> str:
        return f"{self.role}:{self.device}"


def find_replicas(data: Path) -> list[Replica]:
    """The replica stores in `data`: the dir itself if it holds one, else each subdir that does
    (`ridesync ride`/`app`/`serve` keep theirs in `bike-<device>/`, `app-<device>/`, `backend/`).
    Backend first, then bikes, then apps."""
    if not data.is_dir():
        raise RidesError(f"--data {data}: no such directory")
    candidates = [data] if (data / DB_NAME).is_file() else sorted(p for p in data.iterdir() if p.is_dir())
    found = []
    for path in candidates:
        if not (path / DB_NAME).is_file():
            continue
        identity = _identity(path / DB_NAME)
        if identity is not None:
            found.append(Replica(path, *identity))
    if not found:
        raise RidesError(f"--data {data}: no ridesync replica store here ({DB_NAME} in it or a subdir)")
    return sorted(found, key=lambda r: (ROLE_ORDER.get(r.role, 9), r.device))


def _identity(db_file: Path) -> tuple[str, str] | None:
    try:
        with contextlib.closing(sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return None
    device, role = rows.get("device_id"), rows.get("role")
    return (device, role) if isinstance(device, str) and isinstance(role, str) else None


@contextlib.contextmanager
def open_copy(replica: Replica) -> Iterator[ReplicaStore]:
    """The replica's store, opened on a consistent copy in a temporary dir (module docstring)."""
    with tempfile.TemporaryDirectory(prefix="ridesync-rides-") as tmp:
        source = replica.path / DB_NAME
        try:
            with (
                contextlib.closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as src,
                contextlib.closing(sqlite3.connect(Path(tmp) / DB_NAME)) as dst,
            ):
                src.backup(dst)
            store = ReplicaStore(Path(tmp), device_id=replica.device, role=Role(replica.role))
        except (sqlite3.Error, StoreError, ValueError) as exc:
            raise RidesError(f"{replica.path}: cannot read the replica's store: {exc}") from None
        try:
            yield store
        finally:
            store.close()


@dataclass(frozen=True)
class DataSource:
    data: Path

    def list(self) -> list[dict[str, Any]]:
        out = []
        for replica in find_replicas(self.data):
            with open_copy(replica) as store:
                for ride_id in store.rides():
                    status = store.sync_status(ride_id)
                    out.append(
                        {
                            "ride_id": ride_id,
                            "phase": store.phase(ride_id).label,
                            "sync_state": status.state.value,
                            "sync_reason": status.reason or None,
                            "updated": status.updated,
                            "replica": replica.label,
                        }
                    )
        return out

    @contextlib.contextmanager
    def _holding(self, ride_id: str) -> Iterator[tuple[Replica, ReplicaStore]]:
        for replica in find_replicas(self.data):
            with open_copy(replica) as store:
                if store.has_ride(ride_id):
                    yield replica, store
                    return
        raise RidesError(f"unknown ride: no replica in {self.data} holds a ride {ride_id!r}")

    def show(self, ride_id: str) -> dict[str, Any]:
        with self._holding(ride_id) as (replica, store):
            out = store.ride_json(ride_id)
            out["sync_state"] = out["sync"]["state"]
            out["sync_reason"] = out["sync"]["reason"] or None
            out["replica"] = replica.label
            return out

    def export(self, ride_id: str, fmt: str) -> bytes:
        with self._holding(ride_id) as (_, store):
            try:
                return export(from_docs(store.ride_docs(ride_id)), fmt)
            except ExportError as exc:
                raise RidesError(f"cannot export ride {ride_id} as {fmt}: {exc}") from None
