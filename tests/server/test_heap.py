"""Giving freed heap memory back (engine/server/heap.py): the trimmer's rule with its I/O injected, and
glibc's malloc_trim really lowering a process's RSS after a fragmenting free."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.server.heap import HeapTrimmer, glibc_trim

MiB = 1024 * 1024


class FakeProcess:
    def __init__(self) -> None:
        self.rss = 100 * MiB
        self.trims = 0
        self.third: asyncio.Future[None] | None = None

    def trim(self) -> None:  # runs in the trimmer's worker thread when it runs on its beat
        self.trims += 1
        self.rss -= 10 * MiB
        if self.trims == 3 and self.third is not None:
            self.third.get_loop().call_soon_threadsafe(self.third.set_result, None)


async def test_it_trims_every_interval_and_counts_what_it_gave_back() -> None:
    p = FakeProcess()
    t = HeapTrimmer(0.001, trim=p.trim, rss=lambda: p.rss)
    assert t.trim() and p.trims == 1 and t.stats.released_bytes == 10 * MiB and t.stats.last_rss == 90 * MiB
    p.third = asyncio.get_running_loop().create_future()
    task = asyncio.get_running_loop().create_task(t.run())
    try:
        async with asyncio.timeout(10):
            await p.third
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # A trim already in its worker thread runs to its end after the cancel (it signalled from inside the
        # C call, before its counters): wait for the thread, then compare.
        await asyncio.get_running_loop().shutdown_default_executor()
    assert t.stats.trims == p.trims and t.stats.released_bytes == 10 * MiB * p.trims


async def test_without_malloc_trim_it_does_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    t = HeapTrimmer(0.01, trim=None, rss=lambda: 1)  # a C library without malloc_trim (musl, macOS)
    assert not t.available and not t.trim()
    with caplog.at_level("INFO"):
        await t.run()  # returns at once instead of looping
    assert "heap trimming unavailable" in caplog.text


FRAGMENT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from engine.server.heap import glibc_trim, resident_bytes
blocks = [bytes(4096) for _ in range(20000)]  # 80 MB through malloc (each over pymalloc's 512 B)
keep = blocks[::50]  # 1 in 50 stays: no free run reaches the heap's top, so free() cannot shrink it
del blocks
before = resident_bytes()
glibc_trim()()
after = resident_bytes()
print(json.dumps({"before": before, "after": after, "kept": len(keep)}))
"""


@pytest.mark.skipif(glibc_trim() is None, reason="needs glibc (malloc_trim); this C library has none")
def test_malloc_trim_gives_back_what_a_fragmenting_free_left_resident() -> None:
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT, root], check=True, capture_output=True, text=True, timeout=60
    )
    m = json.loads(out.stdout)
    # ~78 MB were freed in the middle of the heap: free() kept it resident, malloc_trim gives most back.
    assert m["before"] > 60 * MiB and m["before"] - m["after"] > 40 * MiB, m
