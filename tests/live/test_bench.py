"""`ridesync bench live` end to end at a tiny size: the harness works and reports both hubs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.bench import live
from tests.redis_process import REDIS_SERVER


@pytest.mark.slow
def test_bench_live_smoke() -> None:
    parser = argparse.ArgumentParser()
    live.add_arguments(parser)
    args = parser.parse_args(
        [
            "--configs",
            "2x5",
            "--warmup",
            "0.5",
            "--measure",
            "1.5",
            "--procs",
            "1",
            "--no-knee",
            "--probe-fraction",
            "1",
            "--relay-configs",
            "",
        ]
    )
    out = live.run(args)
    assert [r["impl"] for r in out["runs"]] == ["coalescing", "naive"]
    for r in out["runs"]:
        assert r["riders"] == 10 and r["connect_errors"] == 0
        assert r["latency_ms"]["n"] > 0
        assert r["deliveries_per_s"] > 0 and r["frames_per_s"] > 0
        assert r["hub_rss_mb"] > 0
    assert "naive_over_coalescing" in out["comparison"][0]


@pytest.mark.slow
def test_bench_live_relay_smoke() -> None:
    """Two hub processes over a real redis-server, every class's riders spread over both, batched messages."""
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server not found: install the Debian package `redis-server`")
    parser = argparse.ArgumentParser()
    live.add_arguments(parser)
    args = parser.parse_args(
        [
            *(
                "--configs",
                "",
                "--relay-configs",
                "2x6",
                "--hubs",
                "2",
                "--warmup",
                "0.5",
                "--measure",
                "1.5",
            ),
            *("--procs", "1", "--no-knee", "--probe-fraction", "1", "--metrics", "2", "--publish-batch"),
            *("--redis-server", REDIS_SERVER),
        ]
    )
    out = live.run(args)
    (r,) = out["runs"]
    assert r["impl"] == "coalescing+redis-relay" and r["hubs"] == 2 and r["connect_errors"] == 0
    assert r["latency_ms"]["n"] > 0 and r["frames_per_s"] > 0
    # Every class has riders on both hubs: batches flow both ways through redis, none malformed or dropped.
    assert r["relay"]["batches_received_per_s"] > 0 and r["relay"]["malformed_ignored"] == 0
    assert r["samples_per_s"] > 0 and len(r["per_hub_cpu_pct"]) == 2


@pytest.mark.slow
def test_ctrl_c_stops_the_bench_with_its_children_and_reports_what_was_measured() -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during the second point: the run
    stops promptly, no child process is left, the first point is printed, and the exit status says so."""
    cmd = [sys.executable, "-m", "engine.cli.main", "bench", "live", "--json", "--configs", "2x5"]
    cmd += ["--relay-configs", "", "--no-knee", "--procs", "1", "--warmup", "0.5", "--measure", "30"]
    # The first point measures for 30 s: interrupted within it, nothing has been measured yet. Started
    # with SIGINT ignored, as a background job of a non-interactive shell is: the bench re-enables it.
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, inherited)
    try:
        deadline = time.monotonic() + 60
        while len(_group(proc.pid)) < 3:  # the bench, its hub and its load generator
            assert time.monotonic() < deadline, "the bench never started its children"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the bench did not stop on SIGINT: {_describe(_group(proc.pid))}") from exc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["interrupted"] is True and report["points_measured"] == []
    deadline = time.monotonic() + 30
    while _group(proc.pid):
        assert time.monotonic() < deadline, f"children left behind: {_group(proc.pid)}"
        time.sleep(0.1)


def _describe(pids: list[int]) -> str:
    """Each process of the group as 'pid state wchan cmdline', for the assertion message."""
    rows = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")[:120]
            with open(f"/proc/{pid}/wchan") as fh:
                wchan = fh.read()
            with open(f"/proc/{pid}/status") as fh:
                status = dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
        except OSError:
            continue
        state, sig_blk, sig_ign, sig_cgt = (
            status.get(k, "?").strip() for k in ("State", "SigBlk", "SigIgn", "SigCgt")
        )
        rows.append(f"{pid} {state} {wchan} blk={sig_blk} ign={sig_ign} cgt={sig_cgt} {cmd}")
    return "; ".join(rows)


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry))
    return pids
