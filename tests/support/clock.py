"""A settable clock for code that takes `clock=`."""

from __future__ import annotations


class Clock:
    """A settable clock, so fold intervals and timestamps are explicit in tests."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
