"""Who rides in a class, kept across server restarts: display names, max HRs, bike kinds and when each
class started.

The hub learns a rider's name and max HR from the token's `name`/`max_hr` claims and the publisher's
hello (the hello wins: `ridesync ride --name --max-hr` overrides the token), and the kind of bike from the
hello alone (`ridesync ride` says what it opened; engine/bike_kinds.py). The book remembers them per
(class, device) in a small JSON file in the data dir (`riders.json`), so that a rider who reconnects after
a restart, the class page and the results page keep the name. It also remembers when each class started:
the first rider's join, or the first join after the class stayed empty for `CLASS_GAP_S`.

Writes are rare (a hello per connection, a join or leave), atomic (temp file + rename), and a file that
cannot be read is logged and started afresh rather than stopping the server.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.bike_kinds import BIKE_KINDS

log = logging.getLogger(__name__)

RIDERS_FILE = "riders.json"
# A class empty for this long has ended: the next join starts a new class session (and its timer).
CLASS_GAP_S = 30 * 60.0
SEEN_SAVE_S = 60.0

Listener = Callable[[str, str, "Identity"], None]


@dataclass(frozen=True, slots=True)
class Identity:
    name: str | None = None
    max_hr: int | None = None
    bike: str | None = None  # engine/bike_kinds.py

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "max_hr": self.max_hr, "bike": self.bike}


class RiderBook:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._riders: dict[str, dict[str, Identity]] = {}
        self._classes: dict[str, dict[str, float]] = {}  # class -> {"started", "last_seen"}
        self._listeners: list[Listener] = []
        if path is not None:
            self._load(path)

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike[str]) -> RiderBook:
        return cls(Path(data_dir) / RIDERS_FILE)

    def _load(self, path: Path) -> None:
        try:
            obj = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning(
                "rider book unreadable, starting afresh", extra={"path": str(path), "error": f"{exc}"}
            )
            return
        riders = obj.get("riders", {}) if isinstance(obj, dict) else {}
        for class_id, devices in riders.items() if isinstance(riders, dict) else ():
            if not isinstance(devices, dict):
                continue
            for device, ident in devices.items():
                if isinstance(ident, dict):
                    name, max_hr, bike = ident.get("name"), ident.get("max_hr"), ident.get("bike")
                    self._riders.setdefault(class_id, {})[device] = Identity(
                        name if isinstance(name, str) else None,
                        max_hr if isinstance(max_hr, int) and not isinstance(max_hr, bool) else None,
                        # A file from before bikes had kinds has none; an unknown word is dropped.
                        bike if isinstance(bike, str) and bike in BIKE_KINDS else None,
                    )
        classes = obj.get("classes", {}) if isinstance(obj, dict) else {}
        for class_id, times in classes.items() if isinstance(classes, dict) else ():
            if isinstance(times, dict) and all(isinstance(v, int | float) for v in times.values()):
                self._classes[class_id] = {k: float(v) for k, v in times.items()}

    def _save(self) -> None:
        if self.path is None:
            return
        body = json.dumps(
            {
                "riders": {
                    c: {d: i.to_json() for d, i in devices.items()} for c, devices in self._riders.items()
                },
                "classes": self._classes,
            },
            separators=(",", ":"),
        )
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(body, "utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save the rider book", extra={"path": str(self.path), "error": str(exc)})

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def identity(self, class_id: str, device: str) -> Identity | None:
        return self._riders.get(class_id, {}).get(device)

    def remember(
        self, class_id: str, device: str, name: str | None, max_hr: int | None, bike: str | None = None
    ) -> Identity:
        """Merge what a token or a hello says about a rider (a None keeps what was known)."""
        old = self.identity(class_id, device) or Identity()
        new = Identity(
            name if name is not None else old.name,
            max_hr if max_hr is not None else old.max_hr,
            bike if bike is not None else old.bike,
        )
        if new != old:
            self._riders.setdefault(class_id, {})[device] = new
            self._save()
            for listener in self._listeners:
                listener(class_id, device, new)
        return new

    def joined(self, class_id: str, others_present: bool, now: float | None = None) -> float:
        """A rider joined the class: returns when the class (this session of it) started. A class nobody
        was in for CLASS_GAP_S starts again."""
        t = time.time() if now is None else now
        times = self._classes.get(class_id)
        if times is None or (not others_present and t - times.get("last_seen", 0.0) > CLASS_GAP_S):
            times = self._classes[class_id] = {"started": t, "last_seen": t}
            self._save()
        else:
            self._seen(times, t)
        return times["started"]

    def left(self, class_id: str, now: float | None = None) -> None:
        times = self._classes.get(class_id)
        if times is not None:
            self._seen(times, time.time() if now is None else now)

    def _seen(self, times: dict[str, float], t: float) -> None:
        # Written at most once a minute per class: a class of 2,000 riders joining must not mean 2,000 file
        # writes, and a minute is nothing against CLASS_GAP_S.
        times["last_seen"] = t
        if t - times.get("saved", 0.0) >= SEEN_SAVE_S:
            times["saved"] = t
            self._save()

    def class_started(self, class_id: str) -> float | None:
        times = self._classes.get(class_id)
        return None if times is None else times["started"]


__all__ = ["CLASS_GAP_S", "RIDERS_FILE", "Identity", "RiderBook"]
