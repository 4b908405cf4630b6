"""bumble's timeouts made to lose no cancellation on Python 3.11.

bumble waits for HCI responses, connections and ATT responses with `asyncio.wait_for(..., timeout)`.
On Python 3.11, `wait_for` swallows a cancellation that arrives in the same loop iteration as the awaited
result: it returns the result, and the task carries on as if never cancelled (fixed in 3.12, which
rewrote `wait_for` over `asyncio.timeout`). On the virtual radio every response comes back within
microseconds, so a task cancelled while it opens the simulator or connects to a strap often hits exactly
that window. A TaskGroup or a `gather` waiting for that task then waits for ever: a Ctrl-C'd
`ridesync ride --hr sim` hung in its sensor shutdown, with its strap still connected, until killed.

The fix gives bumble's modules (only theirs: the process's `asyncio` is left alone) `wait_for` with
3.12's semantics. bumble is pinned exactly in the lock; the import-time check below fails loudly if a
release stops reaching `asyncio` the way this relies on. Our own code does not use `wait_for` at all
(ruff bans it: `asyncio.timeout` instead).
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Awaitable
from typing import Any, TypeVar

import bumble.device
import bumble.gatt_client
import bumble.gatt_server
import bumble.host

T = TypeVar("T")

# The bumble modules that call `asyncio.wait_for` (hfp and the serial transport do too; the simulator
# does not use them).
PATCHED = (bumble.host, bumble.device, bumble.gatt_client, bumble.gatt_server)


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 (bumble passes timeout=)
    """`asyncio.wait_for` as Python 3.12 has it: TimeoutError after `timeout`, and a cancellation always
    propagates, even when the result arrived in the same loop iteration."""
    if timeout is None:
        return await aw
    async with asyncio.timeout(timeout):
        return await aw


class _Asyncio(types.ModuleType):
    """`asyncio` for bumble's modules: every name is the real one, except `wait_for`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def apply() -> None:
    """Give the bumble modules the safe `wait_for` (Python before 3.12 only; idempotent)."""
    if sys.version_info >= (3, 12):
        return
    shim = _Asyncio("asyncio", "asyncio for bumble, with a wait_for that loses no cancellation")
    shim.wait_for = wait_for  # type: ignore[attr-defined]
    for module in PATCHED:
        current = getattr(module, "asyncio", None)
        if isinstance(current, _Asyncio):
            continue
        if current is not asyncio:
            raise RuntimeError(
                f"{module.__name__} no longer imports asyncio as a module; adapters/ble/sim/cancel_safe.py "
                "must be revisited for this bumble release"
            )
        module.asyncio = shim  # type: ignore[attr-defined]


apply()
