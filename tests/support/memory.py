"""Helpers for the tests that a closed connection is freed by reference counting alone (`ridesync serve`
freezes the cycle collector's startup objects and runs it rarely, so a connection left in a reference
cycle stays in memory): a bounded wait for a server's handler to let go, and a failure message naming
who still holds an object."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import struct
from collections.abc import Callable, Iterator
from socket import SO_LINGER, SOL_SOCKET

import aiohttp


@contextlib.contextmanager
def cycle_collector_off() -> Iterator[None]:
    """Collect what is garbage now, then keep the cycle collector off for the block: whatever is freed in
    it is freed by reference counting alone, as it must be in `ridesync serve`."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def referrers(obj: object, depth: int = 4) -> str:
    """Who still refers to `obj`, and who refers to those, `depth` levels up (the failure message)."""
    lines: list[str] = []
    seen = {id(obj)}
    level: list[object] = [obj]
    for d in range(depth):
        found: list[object] = []
        for o in level:
            for ref in gc.get_referrers(o):
                if id(ref) in seen or ref is level or ref is found:
                    continue
                seen.add(id(ref))
                found.append(ref)
                lines.append(f"{'  ' * d}{type(ref).__name__} -> {type(o).__name__}: {repr(ref)[:120]}")
        level = found
    return "\n".join(lines)


async def handler_finished(*refs: Callable[[], object]) -> None:
    """Let a server's handler task finish after the server dropped the peer: until every referent is
    gone, at most 10 s (a bounded wait for state, not a timing check; the caller asserts on what is left)."""
    for _ in range(200):
        if all(r() is None for r in refs):
            return
        await asyncio.sleep(0.05)


def vanish(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Drop a client's TCP connection without a close frame, with a reset (SO_LINGER 0, then close): a
    peer that vanishes, as the server sees it."""
    sock = ws.get_extra_info("socket")
    assert sock is not None
    sock.setsockopt(SOL_SOCKET, SO_LINGER, struct.pack("ii", 1, 0))
    ws._conn.transport.abort()  # type: ignore[union-attr]


def hang_up(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close a client's TCP connection without a close frame, with a FIN (a process that exits or is
    killed: its kernel closes the socket): the server reads end-of-stream where a frame should be."""
    ws._conn.transport.close()  # type: ignore[union-attr]
