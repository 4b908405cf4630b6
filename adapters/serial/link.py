"""One open serial port, read through pyserial-asyncio-fast, delivering timestamped chunks to a queue.

Several links may share one queue (listen mode taps two lines of the bus): the consumer then sees the
chunks of both ports in the order the event loop received them, which is what request/reply pairing
needs. A link that dies (unplugged, read error) puts a PortLost marker on the queue instead of raising
in a callback, so the source that owns it can report the loss as a state and reopen.

A write that hits a port already gone (a USB cable pulled between two polls: EIO on the tty) is the same
loss, not a crash: pyserial-asyncio-fast reports it to the event loop's exception handler, which logs an
error-level "Fatal write error" with a traceback, so `_SerialTransport` reports it as the loss it is.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import serial
import serial_asyncio_fast

from engine.backoff import Backoff

log = logging.getLogger(__name__)


class PortLost(Exception):
    """The port went away (unplugged, vanished, read or write error)."""

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(f"{port}: {reason}")
        self.port = port
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes as one read returned them, the wall-clock time they arrived, and which port (0 or 1)."""

    data: bytes
    t: float
    port: int


QueueItem = Chunk | PortLost


class SerialFatal(Exception):
    """A port error no retry can fix (the machine needs setting up): the source stops with one line."""


class PortPermissionDenied(SerialFatal):
    """EACCES opening the port: this user is not in the group that owns the device node."""


class _SerialTransport(serial_asyncio_fast.SerialTransport):
    """pyserial-asyncio-fast's transport, but a port that fails under a write is lost, not an error.

    asyncio's own transports treat a reset connection the same way (logged at debug, not passed to the
    loop's exception handler). `_fatal_error`/`_abort` are the library's (0.16) own; tests/serial checks
    that an unplug during a write still ends in one PortLost and no exception-handler call."""

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on serial transport") -> None:
        if not isinstance(exc, serial.SerialException | OSError):
            super()._fatal_error(exc, message)
            return
        # connection_lost(exc) follows from _abort: the link puts its PortLost on the queue there.
        log.debug("serial write failed; the port is gone", extra={"error": str(exc)})
        self._abort(exc)


class _Protocol(asyncio.Protocol):
    def __init__(self, link: SerialLink) -> None:
        self._link = link

    def data_received(self, data: bytes) -> None:
        self._link.queue.put_nowait(Chunk(data, time.time(), self._link.index))

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._on_lost(exc)


class SerialLink:
    def __init__(self, path: str, queue: asyncio.Queue[QueueItem], index: int) -> None:
        self.path = path
        self.queue = queue
        self.index = index
        self._transport: Any = None
        self._closing = False
        self.bytes_written = 0

    @classmethod
    async def open(
        cls,
        path: str,
        queue: asyncio.Queue[QueueItem],
        *,
        baudrate: int,
        index: int = 0,
        name: str | None = None,
    ) -> SerialLink:
        """Opens the port or raises OSError/serial.SerialException (the caller backs off and retries).
        `name`: the path the user gave, for messages, when `path` is the device node it resolved to."""
        link = cls(name or path, queue, index)
        loop = asyncio.get_running_loop()
        # What serial_asyncio_fast.create_serial_connection does for a local port, with our transport.
        ser = await loop.run_in_executor(
            None, functools.partial(serial.serial_for_url, path, baudrate=baudrate, exclusive=True)
        )
        transport = _SerialTransport(loop, _Protocol(link), ser)
        link._transport = transport
        # Whatever sat in the driver's buffer while nobody listened is stale: start from the live line.
        ser.reset_input_buffer()
        return link

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise PortLost(self.path, "port closed")
        try:
            self._transport.write(data)
        except (OSError, serial.SerialException) as exc:
            raise PortLost(self.path, f"write failed: {exc}") from exc
        self.bytes_written += len(data)

    def close(self) -> None:
        self._closing = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _on_lost(self, exc: Exception | None) -> None:
        if self._closing:
            return
        reason = str(exc) if exc is not None else "port closed"
        log.info("serial port lost", extra={"port": self.path, "reason": reason})
        self.queue.put_nowait(PortLost(self.path, reason))


# How every serial source reconnects to its port by default: 0.2 s doubling up to 5 s.
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 5.0


def backoff_delay(attempt: int, *, base: float, cap: float, rng: Any) -> float:
    """Full-jitter exponential backoff (engine/backoff.py), with a floor of base/4 that keeps a dead port
    from being hammered when the jitter draws near zero."""
    return max(base / 4, Backoff.capped(base, cap).delay(attempt, rng))
