"""Giving memory the server freed back to the operating system.

Why: glibc's malloc returns memory to the system only from the top of its heap. What is freed in the
middle stays mapped, and as later allocations reuse pieces of it, more of its pages become resident again:
the process's RSS creeps up towards its peak heap size while the memory in use stays flat. A class is such
a peak: each rider's sync WebSocket holds zlib compressor and decompressor states (hundreds of KB each,
through `malloc`), so a 100-rider class frees tens of MB at its end, scattered through the heap. Measured
over four 100-rider classes of the soak campaign (engine/campaign/soak.py), at the same phase of each (every
ride ended and released, no connection open): glibc's bytes in use 15 MB at every class, its heap 49-51 MB
mapped, and the heap's resident pages 34 -> 43 -> 46 MiB, i.e. RSS +3 % a class from free memory alone.
`malloc_trim(0)` releases the whole free pages inside the heap too (madvise), not only its top.

`HeapTrimmer` trims every `interval_s`, in a worker thread (ctypes releases the GIL, so the event loop
runs on; it waits only if it needs a lock glibc holds while it trims that arena). A trim costs ~2-3 ms
when there is little to give back and ~20 ms when a class's 130 MB are (measured with a fragmenting free,
tests/server/test_heap.py's pattern scaled up). Trimming only when RSS grew does not work: what a class
frees does not raise RSS, it only keeps it from falling. Counted in Prometheus. Where the C library has
no `malloc_trim` (musl, macOS) it says so once and does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def glibc_trim() -> Callable[[], None] | None:
    """`malloc_trim(0)` of the running process's glibc, or None when the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> None:
        trim(0)

    return call


def resident_bytes() -> int:
    """This process's RSS (Linux /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class TrimStats:
    trims: int = 0
    released_bytes: int = 0  # RSS before minus after, summed
    seconds: float = 0.0
    last_rss: int = 0  # RSS the last trim left


class HeapTrimmer:
    def __init__(
        self,
        interval_s: float,
        *,
        trim: Callable[[], None] | None,
        rss: Callable[[], int] = resident_bytes,
    ) -> None:
        """`trim` gives freed memory back (`glibc_trim()`); None where the C library cannot."""
        self.interval_s = interval_s
        self._trim = trim
        self._rss = rss
        self.stats = TrimStats()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def rss(self) -> int:
        return self._rss()

    def trim(self) -> bool:
        """Give freed heap back now (any thread); False where the C library cannot."""
        if self._trim is None:
            return False
        before = self._rss()
        started = time.perf_counter()
        self._trim()
        elapsed = time.perf_counter() - started
        after = self._rss()
        s = self.stats
        s.seconds += elapsed
        s.released_bytes += max(0, before - after)
        s.last_rss = after
        s.trims += 1
        log.debug("heap trimmed", extra={"rss_before": before, "rss_after": after, "seconds": elapsed})
        return True

    async def run(self) -> None:
        """Trim every `interval_s` until cancelled."""
        if self._trim is None:
            log.info("heap trimming unavailable: the C library has no malloc_trim")
            return
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.trim)


class HeapCollector(Collector):
    def __init__(self, trimmer: HeapTrimmer) -> None:
        self._trimmer = trimmer

    def collect(self) -> Iterator[Metric]:
        s = self._trimmer.stats
        yield CounterMetricFamily(
            "ridesync_heap_trims", "Times the server gave freed heap memory back (malloc_trim)", value=s.trims
        )
        yield CounterMetricFamily(
            "ridesync_heap_trim_released_bytes",
            "Resident memory the trims gave back (RSS before minus after)",
            value=s.released_bytes,
        )
        yield CounterMetricFamily(
            "ridesync_heap_trim_seconds", "Time spent in malloc_trim (in a worker thread)", value=s.seconds
        )
        yield GaugeMetricFamily(
            "ridesync_resident_bytes", "This process's resident memory (RSS)", value=self._trimmer.rss()
        )
