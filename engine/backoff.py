"""Retry policy for every network call: exponential backoff with full jitter and a cap (the one home of it:
the sync client, the live publisher, the Redis relay, the BLE and serial sources all wait by `Backoff`),
`Retry-After` honoured, and a classifier saying which HTTP statuses are worth retrying (the classifier of
aiohttp's exceptions is the device client's, engine/device/retry.py, so this module stays sans-I/O).

Full jitter (sleep uniformly in [0, min(cap, base·factor^attempt)]) spreads a crowd of reconnecting
devices over the whole window, so a backend that comes back is not hit by all of them at once.
The policy is pure: the caller owns the clock, the randomness and the sleeping.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

# A Retry-After of days is a server bug or hostile; never park a device for longer than this.
DEFAULT_RETRY_AFTER_CAP: Final = 3600.0
_MAX_HEADER_CHARS: Final = 64

RETRYABLE_STATUSES: Final = frozenset({429, 503})

_SHARED: Final = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.factor >= 1 and self.cap >= self.base):
            raise ValueError("need base > 0, factor >= 1 and cap >= base")
        if not all(math.isfinite(v) for v in (self.base, self.factor, self.cap)):
            raise ValueError("backoff parameters must be finite")

    @classmethod
    def capped(cls, base: float, cap: float) -> Backoff:
        """Doubling from `base` up to `cap`; a base above the cap waits up to the cap from the start."""
        return cls(base=min(base, cap), cap=cap)

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the jitter window for the `attempt`-th retry (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Compare in log space so a huge attempt count cannot overflow a float.
        if self.factor == 1 or attempt < math.log(self.cap / self.base, self.factor):
            return min(self.cap, self.base * self.factor**attempt)
        return self.cap

    def delay(
        self, attempt: int, rng: random.Random | None = None, retry_after: float | None = None
    ) -> float:
        """Seconds to wait before the next try: full jitter, but never less than a server's Retry-After.
        Without `rng`, a generator shared by this module's callers."""
        jittered = (rng or _SHARED).uniform(0.0, self.ceiling(attempt))
        if retry_after is None:
            return jittered
        return max(jittered, retry_after)


class Attempts:
    """Counts consecutive failures for one peer; reset after a success (e.g. a completed handshake)."""

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        self.backoff = backoff
        self.rng = rng if rng is not None else random.Random()
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        delay = self.backoff.delay(self.failures, self.rng, retry_after)
        self.failures += 1
        return delay

    def succeeded(self) -> None:
        self.failures = 0


def parse_retry_after(
    value: str | None, now: datetime, *, cap: float = DEFAULT_RETRY_AFTER_CAP
) -> float | None:
    """Seconds to wait according to a `Retry-After` header (RFC 9110 §10.2.3), or None if absent or
    unparseable. Accepts delta-seconds and HTTP-dates (IMF-fixdate, RFC 850, asctime; a date without a
    zone is GMT). A date in the past means "now" (0). The result is clamped to `cap`."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_CHARS:
        return None
    if text.isascii() and text.isdigit():
        return min(float(int(text)), cap)
    try:
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), cap)


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    # The server's minimum wait in seconds, when it sent a usable Retry-After.
    retry_after: float | None
    reason: str


def classify_status(status: int, retry_after: str | None, now: datetime) -> Decision:
    """HTTP outcome → retry decision. Only 429 and 503 are retryable, honouring Retry-After; other
    4xx/5xx mean the request itself is wrong or the server is broken in a way retrying won't fix."""
    if status < 400:
        return Decision(False, None, f"http {status}: not a failure")
    if status in RETRYABLE_STATUSES:
        return Decision(True, parse_retry_after(retry_after, now), f"http {status}: retryable")
    return Decision(False, None, f"http {status}: not retryable")
