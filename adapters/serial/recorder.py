"""Recording a serial port to a raw capture (for `ridesync decode` and `ridesync sim replay`).

The capture is the bytes exactly as read; a sidecar `FILE.timing` gets one JSON line per read,
`{"offset": bytes_so_far, "t": seconds_since_start}`, so a replay can reproduce the line's timing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import serial


class RecordError(Exception):
    """The port or the output file could not be opened."""


@dataclass
class RecordResult:
    file: str
    bytes: int
    reads: int
    duration_s: float
    port_lost: str | None = None


def record(
    port: str,
    file: str | Path,
    *,
    baudrate: int,
    duration_s: float | None = None,
    timing: bool = True,
) -> RecordResult:
    """Blocking: records until `duration_s` passes, the port is lost, or KeyboardInterrupt."""
    path = Path(file)
    try:
        ser = serial.serial_for_url(port, baudrate=baudrate, timeout=0.1, exclusive=True)
    except (OSError, serial.SerialException) as exc:
        raise RecordError(f"cannot open {port}: {exc}") from None
    try:
        out = open(path, "wb")  # noqa: SIM115 - closed in the finally below, with the sidecar
        side = open(path.with_name(path.name + ".timing"), "w") if timing else None  # noqa: SIM115
    except OSError as exc:
        ser.close()
        raise RecordError(f"cannot write {path}: {exc.strerror or exc}") from None
    start = time.monotonic()
    result = RecordResult(str(path), 0, 0, 0.0)
    try:
        while duration_s is None or time.monotonic() - start < duration_s:
            try:
                data = ser.read(4096)
            except (OSError, serial.SerialException) as exc:
                result.port_lost = str(exc)
                break
            if not data:
                continue
            out.write(data)
            result.bytes += len(data)
            result.reads += 1
            if side is not None:
                side.write(
                    json.dumps({"offset": result.bytes, "t": round(time.monotonic() - start, 6)}) + "\n"
                )
    except KeyboardInterrupt:
        pass
    finally:
        result.duration_s = round(time.monotonic() - start, 3)
        out.close()
        if side is not None:
            side.close()
        ser.close()
    return result
