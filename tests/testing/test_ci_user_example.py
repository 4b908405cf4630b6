"""examples/ci-user, an outside project using the plugin, passes: run as its own pytest session.

Its own rootdir and configuration (examples/ci-user/pyproject.toml), the plugin found through the
`pytest11` entry point of the installed ridesync, exactly as in a user's CI. The repo's pytest never
collects examples/ (testpaths are tests and hw_tests), so it runs once, here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ci-user"


@pytest.mark.slow
def test_ci_user_example_passes() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "--ridesync-seed", "7"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "ridesync: seed 7" in out  # the plugin was loaded through its entry point
    assert " passed" in out and "failed" not in out
