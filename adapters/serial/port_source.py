"""What every serial source shares: open the port(s), run a session, report loss, reopen with backoff.

A source is an async iterator of Reading and SourceEvent (engine.readings.SensorSource). Its session
(one per successful open) is protocol-specific; this base owns the port lifecycle around it:

    CONNECTING -> (open fails) BACKING_OFF -> CONNECTING ...
               -> session: STREAMING, STALE, ... -> (PortLost) LOST -> BACKING_OFF -> CONNECTING ...

Readings carry the wall-clock arrival time of the bytes they were decoded from and a per-source seq that
only ever increases, across reconnects too, so a consumer can spot gaps and duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import serial

from adapters.serial.link import (
    RECONNECT_BASE_S,
    RECONNECT_CAP_S,
    PortLost,
    PortPermissionDenied,
    QueueItem,
    SerialLink,
    backoff_delay,
)
from engine.readings import Kind, Reading, SourceEvent, SourceItem, SourceState

log = logging.getLogger(__name__)


class PortSource:
    def __init__(
        self,
        paths: Sequence[str],
        *,
        source_id: str,
        baudrate: int,
        backoff_base_s: float = RECONNECT_BASE_S,
        backoff_cap_s: float = RECONNECT_CAP_S,
    ) -> None:
        if not 1 <= len(paths) <= 2:
            raise ValueError("a serial source reads one port, or two for a tapped bus")
        self.paths = tuple(paths)
        self._source_id = source_id
        self.baudrate = baudrate
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._rng = random.Random()
        self._seq = 0
        self._state: SourceState | None = None
        self._attempt = 0
        self.counters: dict[str, int] = {"opens": 0, "open_failures": 0, "port_losses": 0}
        # Set while the port is open: simulators and tests wait on it before sending bytes someone must hear.
        self.port_open = asyncio.Event()

    @property
    def source_id(self) -> str:
        return self._source_id

    def summary(self) -> dict[str, int]:
        """Counters for a lab report: port lifecycle here, protocol counters added by each mode."""
        return dict(self.counters)

    def reading(
        self, kind: Kind, value: float | None, t: float, *, pct: float | None = None, **extra: Any
    ) -> Reading:
        self._seq += 1
        # A session that decodes data has proved the port healthy: the next loss backs off from scratch.
        self._attempt = 0
        return Reading(
            t=t, source=self._source_id, seq=self._seq, kind=kind, value=value, pct=pct, extra=extra
        )

    def state(self, state: SourceState, detail: str = "", **extra: Any) -> SourceEvent | None:
        """A SourceEvent if the state changed (BACKING_OFF and LOST always report), else None."""
        if state is self._state and state not in (SourceState.BACKING_OFF, SourceState.LOST):
            return None
        self._state = state
        return SourceEvent(t=time.time(), source=self._source_id, state=state, detail=detail, extra=extra)

    async def stream(self) -> AsyncGenerator[SourceItem, None]:
        while True:
            # Resolved on every attempt: a /dev/serial/by-id link is removed on unplug and recreated on
            # replug pointing at whichever node the kernel gave the device this time (ttyUSB0, ttyUSB1).
            devices = resolve(self.paths)
            extra = {"device": ", ".join(devices)} if devices != list(self.paths) else {}
            ev = self.state(SourceState.CONNECTING, ", ".join(self.paths), **extra)
            if ev is not None:
                yield ev
            queue: asyncio.Queue[QueueItem] = asyncio.Queue()
            links: list[SerialLink] = []
            path = self.paths[0]
            try:
                for i, (path, device) in enumerate(zip(self.paths, devices, strict=True)):
                    links.append(
                        await SerialLink.open(device, queue, baudrate=self.baudrate, index=i, name=path)
                    )
            except (OSError, serial.SerialException) as exc:
                for link in links:
                    link.close()
                self.counters["open_failures"] += 1
                # EACCES before the port ever opened is a machine not set up: retrying cannot fix it.
                # After a replug it is udev not yet done giving the new node its group: retry.
                if getattr(exc, "errno", None) == errno.EACCES and self.counters["opens"] == 0:
                    message = permission_message(path)
                    failed = self.state(SourceState.FAILED, message, port=path)
                    if failed is not None:
                        yield failed
                    raise PortPermissionDenied(message) from exc
                async with contextlib.aclosing(self._back_off(f"cannot open: {exc}")) as waits:
                    async for item in waits:
                        yield item
                continue
            self.counters["opens"] += 1
            self.port_open.set()
            lost: PortLost | None = None
            try:
                async with contextlib.aclosing(self.session(links, queue)) as items:
                    async for item in items:
                        yield item
            except PortLost as exc:
                lost = exc
            finally:
                self.port_open.clear()
                for link in links:
                    link.close()
            if lost is None:  # a session only ends by losing its port
                continue
            self.counters["port_losses"] += 1
            ev = self.state(SourceState.LOST, lost.reason, port=lost.port)
            if ev is not None:
                yield ev
            async with contextlib.aclosing(self._back_off(lost.reason)) as waits:
                async for item in waits:
                    yield item

    async def _back_off(self, reason: str) -> AsyncGenerator[SourceItem, None]:
        delay = backoff_delay(self._attempt, base=self._backoff_base, cap=self._backoff_cap, rng=self._rng)
        self._attempt += 1
        ev = self.state(SourceState.BACKING_OFF, reason, retry_in_s=round(delay, 3))
        if ev is not None:
            yield ev
        await asyncio.sleep(delay)

    def session(
        self, links: list[SerialLink], queue: asyncio.Queue[QueueItem]
    ) -> AsyncGenerator[SourceItem, None]:
        """Decode (and, in poll mode, drive) the open port(s) until one is lost (raise PortLost)."""
        raise NotImplementedError


def resolve(paths: Sequence[str]) -> list[str]:
    """The device nodes the paths point at now (symlinks followed)."""
    return [os.path.realpath(p) for p in paths]


def permission_message(path: str) -> str:
    """One line naming the group that owns serial devices and the command that fixes it."""
    group = "dialout"
    with contextlib.suppress(OSError, KeyError):
        owner = grp.getgrgid(os.stat(path).st_gid).gr_name
        if owner in ("dialout", "uucp"):
            group = owner
    hint = "" if group != "dialout" else " (uucp on Arch Linux)"
    return (
        f"{path}: permission denied: add yourself to the {group} group{hint}: "
        f"sudo usermod -aG {group} $USER, then log out and back in"
    )


async def next_chunk(queue: asyncio.Queue[QueueItem], wait_s: float | None) -> QueueItem | None:
    """The next chunk or loss marker, or None when `wait_s` seconds pass in silence."""
    if wait_s is None:
        return await queue.get()
    try:
        async with asyncio.timeout(wait_s):
            return await queue.get()
    except TimeoutError:
        return None
