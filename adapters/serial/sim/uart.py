"""What a UART receiving at the wrong baud rate makes of bytes sent at another: a pty has no baud rate, so
the simulators apply this to what they write when the reader's configured speed differs from theirs.

The sender's bytes become the line's bit stream (8N1: a low start bit, 8 data bits LSB first, a high stop
bit; idle high between writes). The receiver waits for the line to go low, then samples the middle of
each of its own bit periods: 8 data bits, then the stop bit. A low stop bit is a framing error; with
INPCK off (pyserial's setting for no parity) Linux still delivers such a byte as sampled, so it is kept.
Then the receiver waits for the next start bit after its stop-bit sample.
"""

from __future__ import annotations

import math


def _bits(data: bytes) -> list[int]:
    out: list[int] = []
    for b in data:
        out.append(0)
        out.extend((b >> i) & 1 for i in range(8))
        out.append(1)
    return out


def resample(data: bytes, sender_baud: int, receiver_baud: int) -> bytes:
    """The bytes a receiver at `receiver_baud` reads from `data` sent at `sender_baud` (8N1)."""
    if sender_baud <= 0 or receiver_baud <= 0:
        raise ValueError("baud rates must be positive")
    if sender_baud == receiver_baud:
        return bytes(data)
    bits = _bits(data)
    n = len(bits)
    ts = 1.0 / sender_baud
    tr = 1.0 / receiver_baud
    end = n * ts

    def level(t: float) -> int:
        k = int(t / ts)
        return bits[k] if 0 <= k < n else 1

    out = bytearray()
    t = 0.0
    while t < end:
        # the next moment the line is low: now, or the next sender bit boundary carrying a 0
        if level(t) == 1:
            k = math.floor(t / ts) + 1
            while k < n and bits[k] == 1:
                k += 1
            if k >= n:
                break
            t = k * ts
        start = t
        if level(start + tr / 2) == 1:  # a glitch, not a start bit
            t = start + tr / 2
            continue
        value = 0
        for i in range(8):
            value |= level(start + (1.5 + i) * tr) << i
        out.append(value)
        t = start + 9.5 * tr
    return bytes(out)
