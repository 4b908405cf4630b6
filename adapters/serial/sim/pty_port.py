"""A simulated device's end of a real pty pair, published at a stable path that survives replugging.

The simulator holds the master end; the adapter opens the slave with real pyserial, by the path of a
symlink this class manages. `unplug()` closes the pty (the adapter sees a read error, as with a USB
cable pulled) and removes the link; `plug()` makes a new pty and points the same link at it, so the
adapter can reopen the path it knows.

A pty has no baud rate, but it keeps the termios settings the adapter gave its end, and on Linux the
master shares them with the slave: `reader_baud()` reads the speed the adapter configured (pyserial's
`baudrate`) through the master, so a simulator can garble what it sends when the two disagree
(sim/uart.py), as a real UART would.

The simulator also keeps its own slave fd open: otherwise reading the master fails with EIO whenever the
adapter has its end closed (between reconnects), which is not how a device behaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
import tty
from pathlib import Path

_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
    if hasattr(termios, f"B{rate}")
}


class Unplugged(Exception):
    """The simulated device is unplugged: nothing to read or write until `plug()`."""


class PtyPort:
    def __init__(self, link: str | os.PathLike[str]) -> None:
        self.link = Path(link)
        self._master = -1
        self._slave = -1
        self._plugged = asyncio.Event()
        self._unplugged = asyncio.Event()  # a fresh one per plug: set when that pty goes away
        self._generation = 0
        self.bytes_written = 0
        self.bytes_dropped = 0  # written while the line was full: lost, as on a real line

    @property
    def path(self) -> str:
        """The stable path an adapter opens."""
        return str(self.link)

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    @property
    def tty_name(self) -> str:
        return os.ttyname(self._slave) if self._slave >= 0 else ""

    def reader_baud(self) -> int | None:
        """The baud rate the adapter set on its end of the pty, None if unplugged or not a known speed."""
        if self._master < 0:
            return None
        try:
            speed = termios.tcgetattr(self._master)[5]
        except termios.error:
            return None
        return _SPEEDS.get(speed)

    def plug(self) -> None:
        if self.plugged:
            return
        master, slave = os.openpty()
        # Raw mode from the start: no echo, no newline translation, before any adapter configures it.
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)  # atomic: an adapter never sees a half-made link
        self._generation += 1
        self._unplugged = asyncio.Event()
        self._plugged.set()

    def unplug(self) -> None:
        if not self.plugged:
            return
        self._plugged.clear()
        self._unplugged.set()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        loop = _running_loop()
        if loop is not None:
            loop.remove_reader(self._master)
            loop.remove_writer(self._master)
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    def close(self) -> None:
        self.unplug()

    async def wait_plugged(self) -> None:
        await self._plugged.wait()

    async def read(self, n: int = 4096) -> bytes:
        """Bytes the adapter wrote. Raises Unplugged if the port is (or gets) unplugged meanwhile."""
        while True:
            if not self.plugged:
                raise Unplugged(self.path)
            fd, generation = self._master, self._generation
            try:
                data = os.read(fd, n)
            except BlockingIOError:
                await self._wait_fd(fd, generation, writable=False)
                continue
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    raise Unplugged(self.path) from exc
                raise
            if data:
                return data

    async def write(self, data: bytes, *, block_s: float = 1.0) -> int:
        """Send bytes to the adapter. Waits up to `block_s` for room on a full line, then drops the rest
        (counted in bytes_dropped), as a real UART would keep transmitting into the void."""
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_s
        sent = 0
        while sent < len(view):
            if not self.plugged:
                raise Unplugged(self.path)
            fd, generation = self._master, self._generation
            try:
                sent += os.write(fd, view[sent:])
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    raise Unplugged(self.path) from exc
                raise
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.bytes_dropped += len(view) - sent
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wait_fd(fd, generation, writable=True)
        self.bytes_written += sent
        return sent

    async def _wait_fd(self, fd: int, generation: int, *, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(True)

        add, remove = (
            (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
        )
        add(fd, ready)
        unplugged: asyncio.Future[bool] = asyncio.ensure_future(self._unplugged.wait())
        try:
            await asyncio.wait([fut, unplugged], return_when=asyncio.FIRST_COMPLETED)
        finally:
            unplugged.cancel()
            if self._master == fd:
                remove(fd)
        if generation != self._generation or not self.plugged:
            raise Unplugged(self.path)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
