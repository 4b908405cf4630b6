"""The benchmark's processes as the machine sees them: CPU pinning, the open-file limit, and CPU and
memory read from /proc (exact even when a process is too busy to answer)."""

from __future__ import annotations

import contextlib
import os
import resource

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pin(cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, cpus)


def cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(hub CPUs, generator CPUs): the hub alone on one core, the load on the rest, as the live lane's
    prototypes were measured."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (OSError, AttributeError):
        return None, None
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu_s(pid: int) -> float:
    return sum(proc_cpu(pid))


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
