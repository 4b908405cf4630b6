"""Suite-wide pytest configuration. Area-specific fixtures live in each tests/<area>/conftest.py."""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.processes import ridesync_children

# CI runs on a shared 2-core machine: no hypothesis deadlines (timing is for benchmarks, not tests),
# and a fixed example budget so the suite's length is predictable.
settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "dev", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(autouse=True)
def _no_ridesync_process_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way (a hang guard ran out) must not leave its `ridesync ride` running: one
    once reconnected to its dead backend for the rest of the run, loading the machine for every later
    test. Torn down after every other fixture of the test (it is set up first)."""
    yield
    for pid in ridesync_children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        warnings.warn(f"a ridesync process (pid {pid}) outlived its test; killed", stacklevel=1)
