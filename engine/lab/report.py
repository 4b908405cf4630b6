"""The lab kit's report: one JSON object for the whole run, and a short table for the human.

    {
      "kit": "ridesync lab", "version": 1, "ok": true, "interrupted": false,
      "started_utc": "...", "finished_utc": "...", "elapsed_s": 21.4,
      "simulated": {"hr": true, "serial": true, "line": true},
      "devices": {"hr": [...], "serial": {...} | null, "line": {...} | null},
      "summary": {"passed": 7, "failed": 0, "skipped": 0},
      "scenarios": {
        "<id>": {"title", "status": "passed"|"failed"|"skipped", "reason", "elapsed_s",
                 "summary": "<one line>", "measured": {...}, "checks": [{"check", "ok"}, ...]}
      }
    }

`reason` is empty when a scenario passed, names the first failed check when it failed, and says what
to give the kit when it was skipped. `KEY_MEASUREMENTS` names, per scenario, the measured values a
reader looks at first (and the tests check are present).
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

REPORT_VERSION = 1


class Status(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


# Scenario id -> (title, the measured keys a reader looks at first). The order is the run order.
SCENARIOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "two_straps": ("two straps at once", ("straps",)),
    "out_of_range": ("a strap walked out of range and back", ("time_to_lost_s", "time_to_recover_s")),
    "power_cycle": ("a strap power-cycled", ("time_to_lost_s", "time_to_recover_s")),
    "kill_rerun": (
        "the process killed and rerun (stale connection)",
        ("advertising_after_kill", "time_to_first_reading_s"),
    ),
    "serial_unplug": (
        "the USB serial adapter unplugged and replugged",
        ("time_to_lost_s", "time_to_recover_s"),
    ),
    "calibration": ("the Peloton calibration table seen or loaded", ("pct_reported", "calibration")),
    "line_clock_wrap": (
        "the DIY line sensor across the 70-minute tick overflow",
        ("cadence_max_error_pct", "resyncs", "crossed"),
    ),
}
KEY_MEASUREMENTS = {sid: keys for sid, (_title, keys) in SCENARIOS.items()}


@dataclass
class ScenarioResult:
    id: str
    status: Status = Status.PASSED
    reason: str = ""
    summary: str = ""
    measured: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def title(self) -> str:
        return SCENARIOS[self.id][0]

    def check(self, ok: bool, what: str) -> bool:
        """Record a pass/fail check; the first failed one becomes the reason."""
        self.checks.append({"check": what, "ok": bool(ok)})
        if not ok and self.status is not Status.SKIPPED:
            if self.status is Status.PASSED:
                self.reason = what
            self.status = Status.FAILED
        return ok

    def fail(self, reason: str) -> None:
        self.checks.append({"check": reason, "ok": False})
        if self.status is not Status.FAILED:
            self.reason = reason
        self.status = Status.FAILED

    def skip(self, reason: str) -> None:
        self.status = Status.SKIPPED
        self.reason = reason

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "status": self.status.value,
            "reason": self.reason,
            "elapsed_s": round(self.elapsed_s, 2),
            "summary": self.summary,
            "measured": self.measured,
            "checks": self.checks,
        }


@dataclass
class LabReport:
    devices: dict[str, Any]
    simulated: dict[str, bool]
    results: list[ScenarioResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.status is not Status.FAILED for r in self.results)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for r in self.results if r.status is s) for s in Status}

    def to_json(self) -> dict[str, Any]:
        finished = self.finished if self.finished is not None else time.time()
        return {
            "kit": "ridesync lab",
            "version": REPORT_VERSION,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "started_utc": _utc(self.started),
            "finished_utc": _utc(finished),
            "elapsed_s": round(finished - self.started, 2),
            "simulated": self.simulated,
            "devices": self.devices,
            "summary": self.counts(),
            "scenarios": {r.id: r.to_json() for r in self.results},
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        return path

    def print_table(self, out: TextIO, path: Path | None = None) -> None:
        counts = self.counts()
        elapsed = (self.finished or time.time()) - self.started
        out.write(
            f"\nridesync lab: {len(self.results)} scenarios, {counts['passed']} passed, "
            f"{counts['failed']} failed, {counts['skipped']} skipped ({elapsed:.1f} s)\n"
        )
        width = max((len(r.id) for r in self.results), default=8)
        out.write(f"  {'scenario':<{width}}  {'result':<7}  what was measured, or why not\n")
        for r in self.results:
            detail = r.summary if r.status is Status.PASSED else r.reason
            if r.status is Status.FAILED and r.summary:
                detail = f"{r.reason} ({r.summary})"
            out.write(f"  {r.id:<{width}}  {r.status.value:<7}  {detail}\n")
        if path is not None:
            out.write(f"report: {path}\n")
        out.flush()


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
