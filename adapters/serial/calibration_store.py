"""Which resistance calibration table a Peloton source uses, where it came from, and where it is kept.

A passive tap usually hears only the bike's TX line, and the table (`F7 k` replies) crosses the bus only
when the tablet boots, so listen mode rarely sees it. Like PeloMon, which keeps the last table in EEPROM,
ridesync keeps the last table seen for each bike in the data dir (`<data>/calibration/<bike key>.json`)
and uses it until the bus shows a new one. `--calibration FILE` names a table explicitly.

Every resistance reading says which table gave its percent (`"calibration"`):
`"seen"` (crossed the bus in this run), `"stored:<file>"` (kept from an earlier run), `"file:<path>"`
(given with --calibration), or null (none known: `pct` is null too).

The bike key is `--bike-id` when given, else the port's `/dev/serial/by-id` name (stable across replugs
and reboots, unlike ttyUSB0), else the port's own name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path

from adapters.serial.peloton import CALIBRATION_ENTRIES, CalibrationTable

log = logging.getLogger(__name__)

BY_ID_DIR = Path("/dev/serial/by-id")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class CalibrationFileError(ValueError):
    """A calibration file that does not hold 31 strictly increasing raw values."""


def parse_table(text: str, where: str) -> CalibrationTable:
    """A table from JSON (`{"table": [...]}` as stored, or a bare list) or 31 numbers separated by
    commas or whitespace (e.g. pasted from `ridesync decode peloton`'s calibration_complete line)."""
    values: object
    try:
        values = json.loads(text)
    except ValueError:
        values = [v for v in re.split(r"[\s,]+", text.strip()) if v]
    if isinstance(values, dict):
        values = values.get("table")
    if not isinstance(values, list):
        raise CalibrationFileError(f"{where}: expected a list of {CALIBRATION_ENTRIES} raw values")
    try:
        raw = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise CalibrationFileError(f"{where}: raw values must be integers") from None
    try:
        return CalibrationTable(raw)
    except ValueError as exc:
        raise CalibrationFileError(f"{where}: {exc}") from None


def load_table_file(path: str | os.PathLike[str]) -> CalibrationTable:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CalibrationFileError(f"{path}: {exc.strerror or exc}") from None
    return parse_table(text, str(path))


def bike_key(port: str, bike_id: str | None = None, *, by_id_dir: Path = BY_ID_DIR) -> str:
    """The name a bike's table is kept under: see the module docstring."""
    if bike_id:
        key = bike_id
    elif Path(port).parent == by_id_dir or "/by-id/" in port:
        key = Path(port).name
    else:
        key = Path(port).name
        real = os.path.realpath(port)
        with contextlib.suppress(OSError):
            for link in sorted(by_id_dir.iterdir()):
                if os.path.realpath(link) == real:
                    key = link.name
                    break
    return _UNSAFE.sub("_", key).strip("._") or "bike"


class CalibrationStore:
    """One JSON file per bike key under `root` (the data dir's `calibration/`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str) -> CalibrationTable | None:
        path = self.path_for(key)
        try:
            return load_table_file(path)
        except CalibrationFileError as exc:
            if path.exists():
                log.warning("ignoring a stored calibration table", extra={"error": str(exc)})
            return None

    def save(self, key: str, table: CalibrationTable) -> Path:
        path = self.path_for(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"bike": key, "saved_at": time.time(), "table": list(table.raw)}) + "\n")
        tmp.replace(path)  # atomic: a crash leaves the old table or the new one, never half of one
        return path


class CalibrationKeeper:
    """The table a source uses and its origin; a table seen on the bus replaces it and is stored."""

    def __init__(
        self,
        *,
        file: str | os.PathLike[str] | None = None,
        store: CalibrationStore | None = None,
        key: str | None = None,
    ) -> None:
        self.store = store if key else None
        self.key = key
        self.table: CalibrationTable | None = None
        self.origin: str | None = None
        self.saved_to: Path | None = None
        if file is not None:
            self.table, self.origin = load_table_file(file), f"file:{file}"
        elif self.store is not None and self.key is not None:
            table = self.store.load(self.key)
            if table is not None:
                self.table, self.origin = table, f"stored:{self.store.path_for(self.key)}"

    def seen(self, table: CalibrationTable) -> None:
        """A complete table crossed the bus: it is the bike's truth from now on, and kept for next time."""
        self.table, self.origin = table, "seen"
        if self.store is None or self.key is None:
            return
        try:
            self.saved_to = self.store.save(self.key, table)
        except OSError as exc:
            log.warning("cannot store the calibration table", extra={"error": str(exc)})
