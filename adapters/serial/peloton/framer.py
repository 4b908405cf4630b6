"""Streaming framer for one line of the Peloton bus: bytes in, frames and discards out.

There is no escaping on this bus, so a frame is recognised by its head byte, its length, its terminator
and its checksum. After anything that fails those checks the framer drops bytes only up to the next
position where a frame could still start, so a valid frame that follows garbage is never lost.

A candidate at position p is judged VALID, INVALID or INCOMPLETE (not enough bytes yet). An invalid
candidate is classified by what comes after it:
- a possible frame starts inside its span: the candidate was cut short -> TruncatedFrame;
- otherwise, terminator in place but checksum wrong -> BadChecksum (typically a flipped bit);
- otherwise, a plausible header without its terminator -> MalformedFrame;
- no plausible header at all -> SkippedBytes (garbage).
`flush()` tells the framer the line went quiet (or the capture ended): an incomplete candidate will
never complete, so it is reported as truncated.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass

from adapters.serial.peloton.wire import (
    MAX_PAYLOAD,
    REPLY,
    REPLY_OVERHEAD,
    REQUEST_HEADS,
    REQUEST_LENGTH,
    TERMINATOR,
)

_HEAD = re.compile(rb"[\xf1\xf5\xf7\xfe]")


@dataclass(frozen=True, slots=True)
class RequestFrame:
    """Head unit -> bike. `head` is F5 (read), F7 (calibration entry `command`) or FE (startup)."""

    head: int
    command: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class ReplyFrame:
    command: int
    payload: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class SkippedBytes:
    raw: bytes


@dataclass(frozen=True, slots=True)
class BadChecksum:
    raw: bytes
    expected: int
    actual: int


@dataclass(frozen=True, slots=True)
class TruncatedFrame:
    raw: bytes


@dataclass(frozen=True, slots=True)
class MalformedFrame:
    """A plausible header whose terminator is not where its length says."""

    raw: bytes


Frame = RequestFrame | ReplyFrame
Discard = SkippedBytes | BadChecksum | TruncatedFrame | MalformedFrame
FramerEvent = Frame | Discard


@dataclass(slots=True)
class FramerCounters:
    """Every byte fed ends up in exactly one of: a good frame, bytes_skipped, or still buffered."""

    bytes_total: int = 0
    frames_ok: int = 0
    requests_ok: int = 0
    replies_ok: int = 0
    frames_bad_checksum: int = 0
    frames_truncated: int = 0
    frames_malformed: int = 0
    bytes_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _Verdict(enum.Enum):
    VALID = enum.auto()
    INCOMPLETE = enum.auto()
    NO_HEADER = enum.auto()
    BAD_TERMINATOR = enum.auto()
    BAD_CHECKSUM = enum.auto()


class PelotonFramer:
    """Sans-I/O framer. Feed it bytes from one line (or a capture of both); it never raises."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.counters = FramerCounters()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[FramerEvent]:
        self.counters.bytes_total += len(data)
        self._buf += data
        return self._drain(final=False)

    def flush(self) -> list[FramerEvent]:
        """The line went quiet or the input ended: whatever partial frame is buffered never completes."""
        return self._drain(final=True)

    def _judge(self, p: int) -> tuple[_Verdict, int]:
        buf = self._buf
        n = len(buf)
        head = buf[p]
        if head == REPLY:
            if p + 3 > n:
                return _Verdict.INCOMPLETE, 0
            length = buf[p + 2]
            if length > MAX_PAYLOAD:
                return _Verdict.NO_HEADER, 0
            size = length + REPLY_OVERHEAD
        elif head in REQUEST_HEADS:
            size = REQUEST_LENGTH
        else:
            return _Verdict.NO_HEADER, 0
        if p + size > n:
            return _Verdict.INCOMPLETE, size
        if buf[p + size - 1] != TERMINATOR:
            return _Verdict.BAD_TERMINATOR, size
        if sum(buf[p : p + size - 2]) & 0xFF != buf[p + size - 2]:
            return _Verdict.BAD_CHECKSUM, size
        return _Verdict.VALID, size

    def _next_start(self, p: int) -> int:
        """First position after p where a frame could still start (or the end of the buffer)."""
        buf = self._buf
        q = p + 1
        while True:
            m = _HEAD.search(buf, q)
            if m is None:
                return len(buf)
            q = m.start()
            verdict, _ = self._judge(q)
            if verdict is _Verdict.VALID or verdict is _Verdict.INCOMPLETE:
                return q
            q += 1

    def _drain(self, final: bool) -> list[FramerEvent]:
        buf = self._buf
        c = self.counters
        out: list[FramerEvent] = []
        p = 0
        skip_from = -1  # start of the current run of garbage, reported as one event
        n = len(buf)
        while p < n:
            head = buf[p]
            # Fast path for the common case, a complete valid frame right here (same checks as _judge).
            if head == REPLY:
                size = buf[p + 2] + REPLY_OVERHEAD if p + 2 < n else 0
            else:
                size = REQUEST_LENGTH if head in REQUEST_HEADS else 0
            end = p + size
            if (
                size
                and size <= MAX_PAYLOAD + REPLY_OVERHEAD
                and end <= n
                and buf[end - 1] == TERMINATOR
                and sum(buf[p : end - 2]) & 0xFF == buf[end - 2]
            ):
                if skip_from >= 0:
                    self._skip(out, skip_from, p)
                    skip_from = -1
                raw = bytes(buf[p:end])
                if head == REPLY:
                    out.append(ReplyFrame(raw[1], raw[3:-2], raw))
                    c.replies_ok += 1
                else:
                    out.append(RequestFrame(head, raw[1], raw))
                    c.requests_ok += 1
                c.frames_ok += 1
                p = end
                continue
            if head != REPLY and head not in REQUEST_HEADS:
                m = _HEAD.search(buf, p)
                q = len(buf) if m is None else m.start()
                skip_from = p if skip_from < 0 else skip_from
                p = q
                continue
            verdict, size = self._judge(p)
            if verdict is _Verdict.NO_HEADER:
                skip_from = p if skip_from < 0 else skip_from
                p = self._next_start(p)
                continue
            if verdict is _Verdict.INCOMPLETE and not final:
                break
            if skip_from >= 0:
                self._skip(out, skip_from, p)
                skip_from = -1
            if verdict is _Verdict.VALID:
                raw = bytes(buf[p : p + size])
                if head == REPLY:
                    out.append(ReplyFrame(raw[1], raw[3:-2], raw))
                    c.replies_ok += 1
                else:
                    out.append(RequestFrame(head, raw[1], raw))
                    c.requests_ok += 1
                c.frames_ok += 1
                p += size
                continue
            q = self._next_start(p)
            if not final and q < p + size and self._judge(q)[0] is _Verdict.INCOMPLETE:
                # Whether this candidate was cut short depends on a frame start we cannot judge yet;
                # deciding now would make the counts depend on how the bytes were chunked.
                break
            if verdict is _Verdict.INCOMPLETE or q < p + size:
                raw = bytes(buf[p:q])
                out.append(TruncatedFrame(raw))
                c.frames_truncated += 1
                c.bytes_skipped += len(raw)
            elif verdict is _Verdict.BAD_CHECKSUM:
                raw = bytes(buf[p : p + size])
                out.append(BadChecksum(raw, expected=sum(raw[:-2]) & 0xFF, actual=raw[-2]))
                c.frames_bad_checksum += 1
                c.bytes_skipped += size
                q = p + size
            else:
                raw = bytes(buf[p:q])
                out.append(MalformedFrame(raw))
                c.frames_malformed += 1
                c.bytes_skipped += len(raw)
            p = q
        if skip_from >= 0:
            self._skip(out, skip_from, p)
        del buf[:p]
        return out

    def _skip(self, out: list[FramerEvent], p: int, q: int) -> None:
        if q <= p:
            return
        raw = bytes(self._buf[p:q])
        self.counters.bytes_skipped += len(raw)
        out.append(SkippedBytes(raw))
