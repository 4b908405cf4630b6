"""Peloton bus events as the JSON objects `ridesync decode peloton` prints (a contract:
docs/architecture.md#interfaces-others-rely-on)."""

from __future__ import annotations

from typing import Any

from adapters.serial.peloton import (
    BadChecksum,
    BadPayload,
    Cadence,
    CalibrationComplete,
    CalibrationEntry,
    CalibrationRejected,
    MalformedFrame,
    PelotonEvent,
    Power,
    Resistance,
    SkippedBytes,
    StartupReply,
    TruncatedFrame,
    UnknownReply,
    UnpairedCalibration,
)


def peloton_event_json(ev: PelotonEvent, *, errors: bool = False) -> dict[str, Any] | None:
    """The JSON line for a decoded event, None for events that print nothing (frames themselves)."""
    if isinstance(ev, Cadence):
        return {"kind": "cadence", "value": ev.rpm, "unit": "rpm"}
    if isinstance(ev, Power):
        return {"kind": "power", "value": ev.watts, "unit": "W"}
    if isinstance(ev, Resistance):
        out: dict[str, Any] = {"kind": "resistance", "value": ev.raw, "unit": "raw"}
        if ev.pct is not None:
            out["pct"] = ev.pct
        return out
    if isinstance(ev, CalibrationEntry):
        return {"kind": "calibration", "index": ev.index, "value": ev.raw, "unit": "raw"}
    if isinstance(ev, CalibrationComplete):
        return {"kind": "calibration_complete", "table": list(ev.table.raw)}
    if isinstance(ev, CalibrationRejected):
        return {"kind": "calibration_rejected", "reason": ev.reason}
    if isinstance(ev, StartupReply):
        return {"kind": "startup", "command": f"0x{ev.command:02x}", "payload": ev.payload.hex()}
    if isinstance(ev, UnknownReply):
        return {"kind": "unknown_reply", "command": f"0x{ev.command:02x}", "payload": ev.payload.hex()}
    if isinstance(ev, BadPayload):
        return {"kind": "bad_payload", "command": f"0x{ev.command:02x}", "payload": ev.payload.hex()}
    if isinstance(ev, UnpairedCalibration):
        return {"kind": "unpaired_calibration", "value": ev.raw, "unit": "raw"}
    if errors:
        if isinstance(ev, SkippedBytes):
            return {"kind": "discard", "reason": "garbage", "raw": ev.raw.hex()}
        if isinstance(ev, BadChecksum):
            return {
                "kind": "discard",
                "reason": "bad_checksum",
                "raw": ev.raw.hex(),
                "expected": ev.expected,
                "actual": ev.actual,
            }
        if isinstance(ev, TruncatedFrame):
            return {"kind": "discard", "reason": "truncated", "raw": ev.raw.hex()}
        if isinstance(ev, MalformedFrame):
            return {"kind": "discard", "reason": "malformed", "raw": ev.raw.hex()}
    return None
