"""How `ridesync bench live` starts and waits for its child processes: a child that dies is an error at once,
and a Ctrl-C that arrives while a child is being forked is neither lost nor fatal to the child."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
from multiprocessing.connection import Connection

import pytest

from engine.bench.live import point


def _dies_before_connecting(ctl: Connection, *_args: object) -> None:
    os._exit(3)


def test_a_generator_that_dies_before_connecting_is_an_error_naming_its_exit_not_a_long_wait(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """The parent used to keep its copy of the child's pipe end, so a generator that died never read as
    EOF: the bench sat out the 300 s connect timeout."""
    monkeypatch.setattr(point, "gen_main", _dies_before_connecting)
    args = argparse.Namespace(procs=2, rate=1.0, seed=1, rider_mode="pub", metrics=1, publish_batch=False)
    gens: point.Procs = []
    try:
        with pytest.raises(
            RuntimeError, match=r"did not connect in time: the child process exited \(exit code 3\)"
        ):
            point._start_generators(
                mp.get_context("fork"), args, data_dir=str(tmp_path), conns=[], cpus=None, gens=gens
            )
        assert len(gens) == 2  # both were started, so both are in the list that gets stopped
    finally:
        point.stop_children(gens, [], None, hurry=True)
    assert all(not p.is_alive() for p, _c in gens)


def test_a_message_sent_just_before_the_child_exits_is_still_received(tmp_path: object) -> None:
    procs: point.Procs = []
    try:
        point.start_child(mp.get_context("fork"), _reports_and_exits, (), procs)
        (proc, conn) = procs[0]
        proc.join(30)
        assert proc.exitcode == 0
        assert point.receive(proc, conn, 30, "no report") == "done"
        with pytest.raises(RuntimeError, match=r"no more: the child process exited \(exit code 0\)"):
            point.receive(proc, conn, 30, "no more")
    finally:
        point.stop_children(procs, [], None, hurry=True)


def _reports_and_exits(ctl: Connection) -> None:
    ctl.send("done")


# In a fresh interpreter: at-fork hooks cannot be removed, and these would fire on every later fork of the
# test worker. The hooks deliver SIGINT at the worst moments a terminal's Ctrl-C can hit: in the parent while
# the logging module's at-fork hook runs (where an unblocked KeyboardInterrupt is printed as "Exception
# ignored" and lost), and in the child before it has set SIGINT aside.
_FORK_UNDER_CTRL_C = textwrap.dedent(
    """
    import json, multiprocessing as mp, os, signal, sys
    from engine.bench.live import point

    def kill_self():
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # bytecode, so that a deliverable signal is raised here, inside the hook

    os.register_at_fork(after_in_parent=kill_self, after_in_child=kill_self)

    def child(ctl):
        ctl.send("alive")
        ctl.recv()  # until the parent goes

    procs = []
    try:
        point.start_child(mp.get_context("fork"), child, (), procs)
        outcome = "not interrupted"
    except KeyboardInterrupt:
        outcome = "interrupted"
    proc, conn = procs[0]
    report = point.receive(proc, conn, 30, "the child did not report")
    point.stop_children([], procs, None, hurry=True)
    print(json.dumps({"parent": outcome, "children": len(procs), "child": report}))
    """
)


def test_ctrl_c_during_a_fork_reaches_the_parent_after_the_child_is_listed_and_spares_the_child() -> None:
    """Before, the parent's Ctrl-C was lost in the at-fork hook and the bench ran on; with the generator
    killed by the same Ctrl-C, it then waited for a report that never came (the CI run that hung)."""
    out = subprocess.run(
        [sys.executable, "-c", _FORK_UNDER_CTRL_C], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"parent": "interrupted", "children": 1, "child": "alive"}
    assert "Exception ignored" not in out.stderr and "KeyboardInterrupt" not in out.stderr
