"""Fault injection for simulated serial devices: what happens to the next frames on the wire.

Faults are armed by count ("flip a bit in the next 3 frames") so a test knows exactly how many it
caused; `injected` counts what was actually applied. A silent device answers nothing at all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

HEADS = frozenset({0xF1, 0xF5, 0xF7, 0xFE})
# Never a frame head, nor a line protocol's '$', newline or carriage return: noise that could pass for
# the start or end of a message would make one fault count as two (or none).
_GARBAGE_BYTES = bytes(b for b in range(256) if b not in HEADS and b not in b"$\n\r")


@dataclass
class Faults:
    """Armed faults, each applied to the next frame(s) the simulator sends, in this order of priority."""

    garbage: int = 0  # frames preceded by 1-20 bytes of noise (see _GARBAGE_BYTES)
    drop: int = 0  # frames never sent
    truncate: int = 0  # frames cut short (at least their header survives)
    flip: int = 0  # frames with one bit flipped in their payload/checksum region
    silent: bool = False  # answer nothing (poll mode), send nothing (emitters)
    # Clean frames between two faulted ones, so each fault is counted on its own by a receiver (two
    # faults back to back can look like one: a truncated frame running into a cut-short one).
    spacing: int = 0
    seed: int = 0
    injected: dict[str, int] = field(
        default_factory=lambda: {"garbage": 0, "drop": 0, "truncate": 0, "flip": 0}
    )
    garbage_bytes: int = 0
    damaged_bytes: int = 0  # bytes of truncated and bit-flipped frames that went on the wire

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._cooldown = 0

    @property
    def armed(self) -> bool:
        return bool(self.garbage or self.drop or self.truncate or self.flip)

    def apply(
        self, frame: bytes, *, header: int = 3, body: tuple[int, int] | None = None, avoid: bytes = b""
    ) -> tuple[bytes, bool]:
        """What goes on the wire for `frame`, and whether the frame itself went out intact.

        `header`: bytes a truncation keeps at least; `body`: the [start, end) range a bit flip may hit
        (default: after the header, before the last byte); `avoid`: bytes a flip must not create (a
        line protocol's '$' or newline would turn one fault into two).
        """
        rng = self._rng
        prefix = b""
        if self._cooldown > 0:
            self._cooldown -= 1
            return frame, True
        if self.armed:
            self._cooldown = self.spacing
        if self.garbage:
            self.garbage -= 1
            self.injected["garbage"] += 1
            prefix = bytes(rng.choice(_GARBAGE_BYTES) for _ in range(rng.randint(1, 20)))
            self.garbage_bytes += len(prefix)
        if self.drop:
            self.drop -= 1
            self.injected["drop"] += 1
            return prefix, False
        if self.truncate and len(frame) > header + 1:
            self.truncate -= 1
            self.injected["truncate"] += 1
            cut = frame[: rng.randint(header, len(frame) - 1)]
            self.damaged_bytes += len(cut)
            return prefix + cut, False
        if self.flip:
            start, end = body if body is not None else (header, len(frame) - 1)
            if end > start:
                self.flip -= 1
                self.injected["flip"] += 1
                b = bytearray(frame)
                while True:
                    pos, bit = rng.randrange(start, end), 1 << rng.randrange(8)
                    if b[pos] ^ bit not in avoid:
                        break
                b[pos] ^= bit
                self.damaged_bytes += len(b)
                return prefix + bytes(b), False
        return prefix + frame, True
