"""The security campaign's socket-level attacks: slow-loris, floods on the class hub (/live/v1), a
subscriber that never reads, and 1,000 connections opened and dropped. Raw sockets to 127.0.0.1 only;
every socket opened here is closed here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from engine.campaign.procs import LOOPBACK, proc_stats
from engine.live.connection import CLOSE_GRACE_S

# RSS growth (KiB) that counts as "memory pinned" by a publish flood, and by a ping flood (whose pongs,
# ~15 MB in the short version, must not all be buffered for a peer that never reads them).
FLOOD_RSS_BUDGET_KB = 48 * 1024
PING_RSS_BUDGET_KB = 4 * 1024
# Seconds a busy machine may add to the hub's own bound for closing a subscriber that never reads.
LOAD_SLACK_S = 5.0
# A flood stops sending after this long, whatever it has sent: the security campaign bounds every attack
# at 120 s, and a flood must leave time for its checks.
FLOOD_WITHIN_S = 75.0


def masked_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"\x11\x22\x33\x44"
) -> bytes:
    """A client frame (masked, as RFC 6455 requires of clients)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_open(
    port: int, path: str, *, protocol: str | None = None, rcvbuf: int | None = None
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket upgrade; returns the HTTP status and the stream (101 = upgraded)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
    )
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, reader, writer


def close_quietly(writer: asyncio.StreamWriter, *, reset: bool = False) -> None:
    with contextlib.suppress(OSError):
        if reset:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader, within_s: float, idle_s: float | None = None) -> bool:
    """Read (and discard) until EOF or reset; True if the peer closed within `within_s`. With `idle_s`,
    give up as soon as nothing arrives for that long (the peer is alive, just quiet)."""
    deadline = time.monotonic() + within_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            async with asyncio.timeout(min(left, idle_s or left)):
                chunk = await reader.read(65536)
            if not chunk:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True
    return False


async def healthz_s(port: int) -> float:
    """Seconds /healthz takes to answer (a raw request, no client pool); inf if it does not within 10 s."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n".encode())
            async with asyncio.timeout(10):
                line = await reader.readline()
        finally:
            close_quietly(writer)
    except (OSError, TimeoutError):
        return float("inf")
    return time.monotonic() - t0 if b" 200 " in line else float("inf")


@dataclass
class SlowLoris:
    """Half-open requests: headers started, never finished. The server must close them itself."""

    port: int
    count: int
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    readers: list[asyncio.StreamReader] = field(default_factory=list)
    opened_at: float = 0.0

    async def start(self) -> None:
        self.opened_at = time.monotonic()
        for i in range(self.count):
            reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
            path = "/v1/rides" if i % 2 else "/live/v1/classes/spin/ws"
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nX-Slow: ".encode())
            await writer.drain()
            self.readers.append(reader)
            self.writers.append(writer)

    async def closed_count(self, wait_until_s: float) -> int:
        """How many the server has closed by `wait_until_s` seconds after they were opened."""
        left = max(self.opened_at + wait_until_s - time.monotonic(), 0.5)
        results = await asyncio.gather(*(closed_by_peer(r, left) for r in self.readers))
        return sum(results)

    def close(self) -> None:
        for w in self.writers:
            close_quietly(w)


async def open_and_drop(port: int, total: int, batch: int = 100) -> int:
    """Open `total` connections in batches and drop them: half reset, half mid-request FIN."""
    done = 0
    for start in range(0, total, batch):
        writers = []
        for _ in range(min(batch, total - start)):
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection(LOOPBACK, port)
                writers.append(w)
        for i, w in enumerate(writers):
            if i % 2:
                with contextlib.suppress(OSError):
                    w.write(b"GET /v1/sync?ride=r HTTP/1.1\r\nHost: x\r\n")
            close_quietly(w, reset=not i % 2)
            done += 1
        await asyncio.sleep(0.05)
    return done


def _sample(seq: int) -> bytes:
    return json.dumps(
        {"type": "sample", "kind": "heart_rate", "v": 100 + seq % 80, "t": time.time(), "seq": seq}
    ).encode()


async def flood(
    port: int,
    path: str,
    frames: int,
    make: str,
    pid: int,
    *,
    chunk: int = 200,
    within_s: float = FLOOD_WITHIN_S,
) -> dict[str, object]:
    """Send `frames` frames (`make`: "ping" 125-byte pings, "publish" samples) without ever reading, for
    at most `within_s` seconds (building the frames is this process's CPU: on a busy machine the attack
    would otherwise outlast its own time limit); returns how many were sent, whether the server closed us
    or pushed back, and its RSS growth."""
    before = proc_stats(pid)["rss_kb"]
    status, reader, writer = await ws_open(port, path, rcvbuf=4096)
    sent, pushed_back, closed = 0, False, False
    deadline = time.monotonic() + within_s
    try:
        if status != 101:
            return {"status": status, "sent": 0, "closed": True, "pushed_back": False, "rss_growth_kb": 0}
        ping = masked_frame(0x9, b"p" * 125)
        while sent < frames and time.monotonic() < deadline:
            n = min(chunk, frames - sent)
            data = (
                ping * n
                if make == "ping"
                else b"".join(masked_frame(0x1, _sample(sent + i)) for i in range(n))
            )
            try:
                writer.write(data)
                async with asyncio.timeout(5):
                    await writer.drain()
            except TimeoutError:
                pushed_back = True  # the server stopped reading us: its buffers are bounded by ours
                break
            except OSError:
                closed = True
                break
            sent += n
        peak = proc_stats(pid)["rss_kb"]
        if not closed:
            closed = await closed_by_peer(reader, 3)
    finally:
        close_quietly(writer, reset=True)
    return {"status": status, "sent": sent, "closed": closed, "pushed_back": pushed_back,
            "rss_growth_kb": max(peak - before, 0)}  # fmt: skip


class StuckSubscriber:
    """A class subscriber on a raw socket that reads its upgrade answer and then never another byte (no
    stream reader buffering on its behalf): the hub must disconnect it, not queue for it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        self.sock.setblocking(False)

    async def open(self, port: int, path: str) -> int:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, (LOOPBACK, port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            self.sock,
            f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
        )
        head = b""
        while b"\r\n\r\n" not in head:
            async with asyncio.timeout(10):
                chunk = await loop.sock_recv(self.sock, 1)
            if not chunk:
                raise ConnectionResetError("closed during the upgrade")
            head += chunk
        return int(head.split(b" ", 2)[1])

    async def closed_by_peer(self, within_s: float) -> bool:
        """Wait, without reading a byte (reading would make it a subscriber that reads), until the hub has
        closed the connection: a reset, or its FIN. True if that happened within `within_s`."""
        poller = select.poll()
        # POLLIN is not asked for: the unread frames make the socket readable from the start.
        poller.register(self.sock, select.POLLRDHUP | select.POLLERR | select.POLLHUP)
        deadline = time.monotonic() + within_s
        while not poller.poll(0):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)  # polling the socket's state: nothing to await for a hangup unread
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def stuck_close_bound_s(stall_limit_s: float) -> float:
    """How long after bytes start waiting for a subscriber that never reads the hub has it closed: the stall
    limit, two looks of its watchdog (every stall limit / 4 at most), the Close frame's grace, and the
    slack a busy machine adds (engine/live/README.md, "the same write-buffer rule")."""
    return stall_limit_s + stall_limit_s / 2 + CLOSE_GRACE_S + LOAD_SLACK_S
