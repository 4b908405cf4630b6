"""Latest-value slots of one class: one record per rider, newest values only, versioned.

Pure and synchronous. Every change bumps the class version and stamps the rider's record with it, so
"every rider changed since version V" is a walk from the newest end of an ordered dict that stops at V.
A peer therefore needs only a cursor (the version it has seen) instead of a copy of every slot: its
latest-value slot for a rider is this record, read when the peer is next able to take a frame.

Display states per metric: "live" (a fresh number), "no_contact" (the sensor says it has no reading,
value null) and "stale" (nothing newer than the staleness limit, value null). A number is never frozen.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field

from engine.live.wire import HelloIn, SampleIn, StateIn

LIVE, NO_CONTACT, STALE = "live", "no_contact", "stale"
_dumps = json.dumps
DEFAULT_MAX_HR = 190
# A gap between two samples longer than this adds no energy and no zone time (as the ride policy's totals).
MAX_DT_S = 5.0
# Riders without a power meter are ranked by their time at zone 3 or above (zones from their own max HR).
HARD_ZONE = 3


def hr_zone(hr: float | None, max_hr: int) -> int:
    """Heart-rate zone 1..5 by percent of max HR (50-60-70-80-90 %), 0 when there is no live value."""
    if hr is None:
        return 0
    pct = hr / max_hr
    if pct < 0.6:
        return 1
    if pct < 0.7:
        return 2
    if pct < 0.8:
        return 3
    if pct < 0.9:
        return 4
    return 5


@dataclass(slots=True)
class MetricSlot:
    value: float | None
    t: float
    seq: int
    src: str
    contact: str | None
    state: str

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "v": self.value if self.state == LIVE else None,
            "t": round(self.t, 3),
            "seq": self.seq,
            "src": self.src,
            "state": self.state,
        }
        if self.contact is not None:
            out["contact"] = self.contact
        return out


@dataclass(slots=True)
class RiderSlot:
    device: str
    version: int = 0
    present: bool = True
    changed_at: float = 0.0
    name: str | None = None
    max_hr: int = DEFAULT_MAX_HR
    bike: str | None = None  # engine/bike_kinds.py: what the rider's hello said it rides
    metrics: dict[str, MetricSlot] = field(default_factory=dict)
    # Cumulative since the rider joined this hub's class: work done (J, power integrated over time, each
    # live power value held until the next one, at most MAX_DT_S), whether a power value ever came, and
    # the seconds spent at zone HARD_ZONE or above (each live heart rate's zone held until the next one).
    energy_j: float = 0.0
    has_power: bool = False
    hard_s: float = 0.0
    _last_pwr: tuple[float, float] | None = None  # (t, watts) of the last live power value
    _last_hr: tuple[float, int] | None = None  # (t, zone) of the last live heart rate
    # The encoded `"device":{...}` member, built once per change and shared by every frame carrying it.
    _fragment: str | None = None

    def live_value(self, metric: str) -> float | None:
        m = self.metrics.get(metric)
        return m.value if m is not None and m.state == LIVE else None

    def zone(self) -> int:
        return hr_zone(self.live_value("hr"), self.max_hr)

    def kj(self) -> float | None:
        return round(self.energy_j / 1000.0, 1) if self.has_power else None

    def accumulate(self, metric: str, value: float | None, t: float, live: bool) -> None:
        """Integrate a newly applied sample into the rider's output and zone time."""
        if metric == "pwr":
            if value is not None:
                self.has_power = True
            last = self._last_pwr
            if last is not None and 0.0 < t - last[0] <= MAX_DT_S:
                self.energy_j += last[1] * (t - last[0])
            self._last_pwr = (t, value) if live and value is not None else None
        elif metric == "hr":
            last_hr = self._last_hr
            if last_hr is not None and last_hr[1] >= HARD_ZONE and 0.0 < t - last_hr[0] <= MAX_DT_S:
                self.hard_s += t - last_hr[0]
            self._last_hr = (t, hr_zone(value, self.max_hr)) if live and value is not None else None

    def record(self) -> dict[str, object]:
        out: dict[str, object] = {"presence": "here" if self.present else "left"}
        if self.present:
            if self.name is not None:
                out["name"] = self.name
            if self.bike is not None:
                out["bike"] = self.bike
            out["zone"] = self.zone()
            out["max_hr"] = self.max_hr
            kj = self.kj()
            if kj is not None:
                out["kj"] = kj
            out["hard_s"] = round(self.hard_s)
            for key, m in self.metrics.items():
                out[key] = m.to_json()
        return out

    def fragment(self) -> str:
        """`"device":{record}`, exactly as json.dumps(record(), compact) would write it, built by hand:
        every sample changes its rider's fragment, and json.dumps of the nested dicts cost several times
        more than this (a test holds the two equal)."""
        frag = self._fragment
        if frag is None:
            head = _dumps(self.device)
            if not self.present:
                frag = head + ':{"presence":"left"}'
            else:
                parts = [head, ':{"presence":"here"']
                if self.name is not None:
                    parts.append(',"name":' + _dumps(self.name))
                if self.bike is not None:
                    parts.append(',"bike":' + _dumps(self.bike))
                parts.append(f',"zone":{self.zone()},"max_hr":{self.max_hr}')
                kj = self.kj()
                if kj is not None:
                    parts.append(f',"kj":{kj!r}')
                parts.append(f',"hard_s":{round(self.hard_s)}')
                for key, m in self.metrics.items():
                    v = "null" if m.value is None or m.state != LIVE else repr(m.value)
                    parts.append(
                        f',"{key}":{{"v":{v},"t":{round(m.t, 3)!r},"seq":{m.seq},"src":{_dumps(m.src)},'
                        f'"state":"{m.state}"'
                    )
                    if m.contact is not None:
                        parts.append(',"contact":' + _dumps(m.contact))
                    parts.append("}")
                parts.append("}")
                frag = "".join(parts)
            self._fragment = frag
        return frag


class ClassSlots:
    """The latest value of every rider in one class."""

    def __init__(self, class_id: str, stale_after_s: float = 3.0) -> None:
        self.class_id = class_id
        self.stale_after_s = stale_after_s
        self.version = 0
        self.riders: OrderedDict[str, RiderSlot] = OrderedDict()
        # Values replaced before any frame carried them: the coalescing at work (a metric, not an error).
        self.superseded = 0
        self._sent_version = 0
        # Lower bounds that let the sweep skip a class with nothing to do (most sweeps, most classes):
        # no value can turn stale before `_next_stale`, no departed rider is due to be forgotten before
        # `_first_left` + the forget delay. Both only ever move earlier between full scans.
        self._next_stale = math.inf
        self._first_left = math.inf

    def _touch(self, slot: RiderSlot, now: float) -> None:
        if slot.version > self._sent_version:
            self.superseded += 1
        self.version += 1
        slot.version = self.version
        slot.changed_at = now
        slot._fragment = None
        self.riders.move_to_end(slot.device)

    def mark_sent(self) -> None:
        """Everything up to the current version has gone out in a shared frame."""
        self._sent_version = self.version

    def join(self, device: str, now: float) -> RiderSlot:
        slot = self.riders.get(device)
        if slot is None:
            slot = RiderSlot(device)
            self.riders[device] = slot
        elif slot.present:
            return slot
        slot.present = True
        self._touch(slot, now)
        return slot

    def leave(self, device: str, now: float) -> None:
        slot = self.riders.get(device)
        if slot is None or not slot.present:
            return
        slot.present = False
        slot.metrics.clear()
        self._touch(slot, now)
        self._first_left = min(self._first_left, now)

    def apply(self, event: SampleIn | StateIn | HelloIn, now: float) -> bool:
        """Apply one publisher event; True when it changed what peers see."""
        slot = self.join(event.device, now)
        if isinstance(event, SampleIn):
            cur = slot.metrics.get(event.metric)
            # Latest wins by the sensor's own order: a late or replayed sample never overwrites a newer one.
            if cur is not None and cur.src == event.src and event.seq <= cur.seq:
                return False
            if cur is not None and event.t < cur.t:
                return False
            if event.value is None or event.contact == "not_detected":
                state = NO_CONTACT
            elif now - event.t > self.stale_after_s:
                state = STALE
            else:
                state = LIVE
            slot.metrics[event.metric] = MetricSlot(
                event.value, event.t, event.seq, event.src, event.contact, state
            )
            slot.accumulate(event.metric, event.value, event.t, state == LIVE)
            if state != STALE:
                self._next_stale = min(self._next_stale, event.t + self.stale_after_s)
        elif isinstance(event, StateIn):
            cur = slot.metrics.get(event.metric)
            if cur is None:
                if event.state == "ok":
                    return False
                slot.metrics[event.metric] = MetricSlot(None, event.t, 0, event.device, None, NO_CONTACT)
                self._next_stale = min(self._next_stale, event.t + self.stale_after_s)
            elif event.state == "no_contact":
                if cur.state != LIVE:
                    return False
                cur.state = NO_CONTACT
            else:
                return False  # "ok" shows once a fresh sample arrives, never by reviving an old number
        else:
            if event.name is not None:
                slot.name = event.name
            if event.max_hr is not None:
                slot.max_hr = event.max_hr
            if event.bike is not None:
                slot.bike = event.bike
        self._touch(slot, now)
        return True

    def sweep(self, now: float, forget_left_after_s: float) -> int:
        """Mark values older than the staleness limit stale; forget riders that left long ago."""
        if now <= self._next_stale and now - self._first_left <= forget_left_after_s:
            return 0
        changed = 0
        gone: list[str] = []
        stale_after = self.stale_after_s
        next_stale = first_left = math.inf
        for slot in list(self.riders.values()):
            if not slot.present:
                if now - slot.changed_at > forget_left_after_s:
                    gone.append(slot.device)
                else:
                    first_left = min(first_left, slot.changed_at)
                continue
            dirty = False
            for m in slot.metrics.values():
                if m.state == STALE:
                    continue
                if now - m.t > stale_after:
                    m.state = STALE
                    dirty = True
                else:
                    next_stale = min(next_stale, m.t + stale_after)
            if dirty:
                self._touch(slot, now)
                changed += 1
        for device in gone:
            del self.riders[device]
        self._next_stale, self._first_left = next_stale, first_left
        return changed

    def changed_since(self, cursor: int) -> list[RiderSlot]:
        """Riders whose record changed after version `cursor`, newest last. A fresh peer (cursor 0) gets
        only riders that are present: departures before it joined are not news to it."""
        out: list[RiderSlot] = []
        for slot in reversed(self.riders.values()):
            if slot.version <= cursor:
                break
            if cursor == 0 and not slot.present:
                continue
            out.append(slot)
        out.reverse()
        return out
