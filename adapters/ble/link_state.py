"""The strap link's state machine, sans-I/O: the adapter reports what happened, the machine answers
with the state events a consumer should see and, after a failure, how long to wait before retrying.

    IDLE --connecting--> CONNECTING --subscribed--> STREAMING --link_lost--> BACKING_OFF
                             |                                                  ^   |
                             +-----------------connect_failed-------------------+   |
                         CONNECTING <-------------------connecting------------------+
    any --stopped--> IDLE  (the stream was closed; a later stream starts from here)

STALE and NO_CONTACT are signal states reported while STREAMING; the link itself is still up.

Rules that keep a flaky strap from turning into a reconnect storm (bleak #1402):
* one connect at a time: `connecting` is refused unless the link is idle or backing off;
* every failure waits a full-jitter exponential backoff, capped;
* the backoff only resets after a link that really streamed (a measurement arrived and the link held
  for `stable_after_s`), so a strap that connects and drops at once keeps backing off further.

Staleness and contact are states, never numbers: no measurement for `stale_after_s` gives STALE with
the time of the last one; a strap reporting "contact not detected" gives NO_CONTACT.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from engine.backoff import Backoff
from engine.readings import Contact, SourceEvent, SourceState


class LinkStateError(RuntimeError):
    """The adapter drove the machine out of order (a bug in the adapter, not a radio problem)."""


class Phase(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    BACKING_OFF = "backing_off"


@dataclass(frozen=True, slots=True)
class RetryAfter:
    delay_s: float
    attempt: int


@dataclass
class StrapLinkMachine:
    source_id: str
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=30.0))
    stale_after_s: float = 3.0
    stable_after_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)

    phase: Phase = Phase.IDLE
    attempt: int = 0
    last_measurement_t: float | None = None
    streaming_since: float | None = None
    stale: bool = False
    contact: Contact | None = None
    _measured_this_link: bool = False

    def _event(self, t: float, state: SourceState, detail: str = "", **extra: object) -> SourceEvent:
        return SourceEvent(t=t, source=self.source_id, state=state, detail=detail, extra=dict(extra))

    def _require(self, *allowed: Phase) -> None:
        if self.phase not in allowed:
            names = ", ".join(p.value for p in allowed)
            raise LinkStateError(f"{self.source_id}: in {self.phase.value}, expected one of {names}")

    # --- link events --------------------------------------------------------------------------------

    def connecting(self, now: float) -> list[SourceEvent]:
        self._require(Phase.IDLE, Phase.BACKING_OFF)
        self.phase = Phase.CONNECTING
        return [
            self._event(now, SourceState.CONNECTING, f"attempt {self.attempt + 1}", attempt=self.attempt + 1)
        ]

    def subscribed(self, now: float, **extra: object) -> list[SourceEvent]:
        self._require(Phase.CONNECTING)
        self.phase = Phase.STREAMING
        self.streaming_since = now
        self.stale = False
        self.contact = None
        self._measured_this_link = False
        return [self._event(now, SourceState.STREAMING, "connected and subscribed", **extra)]

    def connect_failed(self, now: float, reason: str) -> tuple[list[SourceEvent], RetryAfter]:
        self._require(Phase.CONNECTING)
        return self._back_off(now, [], reason)

    def link_lost(self, now: float, reason: str) -> tuple[list[SourceEvent], RetryAfter]:
        self._require(Phase.STREAMING, Phase.CONNECTING)
        held = now - self.streaming_since if self.streaming_since is not None else 0.0
        if self.phase is Phase.STREAMING and self._measured_this_link and held >= self.stable_after_s:
            self.attempt = 0
        lost = self._event(now, SourceState.LOST, reason, last_measurement_t=self.last_measurement_t)
        self.streaming_since = None
        return self._back_off(now, [lost], reason)

    def _back_off(
        self, now: float, events: list[SourceEvent], reason: str
    ) -> tuple[list[SourceEvent], RetryAfter]:
        retry = RetryAfter(self.backoff.delay(self.attempt, self.rng), self.attempt + 1)
        self.attempt += 1
        self.phase = Phase.BACKING_OFF
        events.append(
            self._event(
                now,
                SourceState.BACKING_OFF,
                f"retry in {retry.delay_s:.2f} s after: {reason}",
                retry_in_s=round(retry.delay_s, 3),
                attempt=retry.attempt,
            )
        )
        return events, retry

    def stopped(self, now: float) -> list[SourceEvent]:
        """The adapter stopped the source (stream closed). It may start again later, from IDLE."""
        was = self.phase
        self.phase = Phase.IDLE
        self.streaming_since = None
        self.stale = False
        self.contact = None
        self._measured_this_link = False
        if was is Phase.IDLE:
            return []
        return [self._event(now, SourceState.CLOSED, "source stopped")]

    # --- signal events ------------------------------------------------------------------------------

    def measurement(self, now: float, contact: Contact) -> list[SourceEvent]:
        """A measurement arrived. Returns state changes: back from stale, contact lost or restored."""
        self._require(Phase.STREAMING)
        events: list[SourceEvent] = []
        self.last_measurement_t = now
        self._measured_this_link = True
        if self.stale:
            self.stale = False
            events.append(self._event(now, SourceState.STREAMING, "measurements resumed"))
        if contact is Contact.NOT_DETECTED and self.contact is not Contact.NOT_DETECTED:
            events.append(self._event(now, SourceState.NO_CONTACT, "strap reports no skin contact"))
        elif contact is Contact.DETECTED and self.contact is Contact.NOT_DETECTED:
            events.append(self._event(now, SourceState.STREAMING, "contact restored"))
        self.contact = contact
        return events

    def tick(self, now: float) -> list[SourceEvent]:
        """Time passed with the link up: STALE once no measurement came for `stale_after_s`."""
        if self.phase is not Phase.STREAMING or self.stale:
            return []
        since = self.last_measurement_t if self._measured_this_link else self.streaming_since
        if since is None or now - since < self.stale_after_s:
            return []
        self.stale = True
        return [
            self._event(
                now,
                SourceState.STALE,
                f"stale since {since:.3f}: no measurement for {now - since:.1f} s",
                stale_since=since,
            )
        ]
