"""What every campaign hands back: its options, a report with the same shape for all of them, progress
lines on stderr, and the checks they share (a ride reconciled exactly once, a SQLite file that opens)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CampaignOptions:
    seed: int
    long: bool
    workdir: Path
    # Wall minutes for campaigns that run for a time (soak, network's long outage); None = the default.
    minutes: float | None = None
    quiet: bool = False
    # The soak's class length in ride-minutes (at --speed 10, a tenth of that in wall minutes); None = its
    # default.
    class_minutes: float | None = None
    riders: int | None = None  # the soak's riders; None = its default (3 short, 100 long)


class Progress:
    """Progress lines on stderr: `campaign NAME +12.3s: message`."""

    def __init__(self, name: str, quiet: bool = False) -> None:
        self.name = name
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.t0
            print(f"campaign {self.name} +{elapsed:.1f}s: {message}", file=sys.stderr, flush=True)


@dataclass
class Case:
    """One attack or fault: what was done, whether the system held, and what it answered."""

    name: str
    held: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"case": self.name, "held": self.held, "detail": self.detail}


@dataclass
class CampaignReport:
    campaign: str
    seed: int
    version: str  # "short" | "long"
    cases: list[Case] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    failures: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def case(self, name: str, held: bool, detail: str = "") -> Case:
        c = Case(name, bool(held), detail)
        self.cases.append(c)
        return c

    def fail(self, message: str) -> None:
        self.failures.append(message)

    @property
    def injected(self) -> int:
        return len(self.cases)

    @property
    def held(self) -> int:
        return sum(1 for c in self.cases if c.held)

    @property
    def passed(self) -> bool:
        return self.held == self.injected and self.lost == 0 and self.duplicated == 0 and not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "report": "campaign",
            "campaign": self.campaign,
            "seed": self.seed,
            "version": self.version,
            "injected": self.injected,
            "held": self.held,
            "not_held": [c.name for c in self.cases if not c.held],
            "lost": self.lost,
            "duplicated": self.duplicated,
            "failures": self.failures,
            "pass": self.passed,
            "elapsed_s": round(self.elapsed_s, 1),
            **self.details,
            "cases": [c.to_json() for c in self.cases],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False)


@dataclass(frozen=True)
class RideCheck:
    """A ride as the backend holds it against what its bike recorded."""

    ride_id: str
    recorded: int
    on_backend: int
    lost: int
    duplicated: int
    end_events_counted: int
    phase: str

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0 and self.duplicated == 0 and self.end_events_counted == 1
            and self.phase == "finalized"
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "ride_id": self.ride_id, "recorded": self.recorded, "on_backend": self.on_backend,
            "lost": self.lost, "duplicated": self.duplicated,
            "end_events_counted": self.end_events_counted, "phase": self.phase, "ok": self.ok,
        }  # fmt: skip


def check_ride(ride_id: str, view: dict[str, Any], device: str, recorded: int) -> RideCheck:
    """`view` is GET /v1/rides/{id}. Lost: declared or recorded seqs the backend lacks; duplicated:
    samples the backend counts beyond the distinct seqs the bike declared."""
    on_backend = int(view.get("samples", {}).get(device, 0))
    declared = view.get("declared", {}).get(device) or {}
    declared_count = int(declared.get("count", recorded))
    missing = view.get("missing_samples", {}).get(device)
    missing_n = len(missing) if isinstance(missing, list) else int(missing or 0)
    lost = max(recorded - on_backend, missing_n, 0)
    duplicated = max(on_backend - max(recorded, declared_count), 0)
    return RideCheck(
        ride_id=ride_id,
        recorded=recorded,
        on_backend=on_backend,
        lost=lost,
        duplicated=duplicated,
        end_events_counted=int(view.get("end_events_counted", 0)),
        phase=str(view.get("phase", "")),
    )


def sqlite_files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.sqlite3") if p.is_file())


def integrity_check(path: Path) -> str:
    """PRAGMA integrity_check on a SQLite file: "ok", or what is wrong (including "cannot open")."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute("PRAGMA integrity_check").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    return "; ".join(str(r[0]) for r in rows)
