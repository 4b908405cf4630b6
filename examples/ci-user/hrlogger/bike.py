"""Read a Peloton bike's bus with pyserial, as a passive tap on the bike's TX line (19200 8N1).

Reply frames are F1 <command> <length> <ASCII digits, least significant first> <checksum> F6, the
checksum being the sum of the bytes before it, mod 256. 0x41 is cadence (rpm), 0x44 power (0.1 W).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import serial

CADENCE, POWER = 0x41, 0x44


@dataclass
class BikeLog:
    cadence: list[int] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    bad_frames: int = 0
    unplugged: bool = False


def _frames(buf: bytearray, log: BikeLog) -> None:
    while True:
        start = buf.find(0xF1)
        if start < 0:
            buf.clear()
            return
        del buf[:start]
        if len(buf) < 3 or len(buf) < 3 + buf[2] + 2:
            return
        n = buf[2]
        frame = bytes(buf[: 3 + n + 2])
        if frame[-1] != 0xF6 or sum(frame[:-2]) & 0xFF != frame[-2]:
            log.bad_frames += 1
            del buf[:1]
            continue
        del buf[: len(frame)]
        digits = frame[3 : 3 + n][::-1]
        if not digits.isdigit():
            log.bad_frames += 1
            continue
        if frame[1] == CADENCE:
            log.cadence.append(int(digits))
        elif frame[1] == POWER:
            log.power_w.append(int(digits) / 10)


def read_bike(port: str, seconds: float) -> BikeLog:
    """Decode the bus for `seconds`; an unplugged cable ends the log early (`unplugged`)."""
    log = BikeLog()
    buf = bytearray()
    end = time.monotonic() + seconds
    try:
        with serial.Serial(port, 19200, timeout=0.1) as s:
            while time.monotonic() < end:
                buf += s.read(256)
                _frames(buf, log)
    except serial.SerialException:
        log.unplugged = True
    return log
