"""Line-protocol events as the JSON objects `ridesync decode line` prints."""

from __future__ import annotations

from typing import Any

from adapters.serial.cadence import CadenceUpdate
from adapters.serial.line_protocol import CrankRecord, Ident, LineError, LineEvent, UnknownLine


def line_event_json(
    ev: LineEvent, update: CadenceUpdate | None, *, errors: bool = False
) -> dict[str, Any] | None:
    if isinstance(ev, CrankRecord):
        if update is None:
            return None
        return {
            "kind": "cadence",
            "value": update.rpm,
            "unit": "rpm",
            "stopped": update.stopped,
            "held": update.held,
            "revs": ev.revs,
            "seq": ev.seq,
        }
    if isinstance(ev, Ident):
        return {"kind": "device", "device_id": ev.device_id, "version": ev.version}
    if isinstance(ev, UnknownLine):
        return {"kind": "unknown_line", "type": ev.kind} if errors else None
    if errors and isinstance(ev, LineError):
        return {"kind": "error", "reason": ev.reason.value, "message": ev.message, "raw": ev.raw.hex()}
    return None
