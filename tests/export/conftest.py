"""Fixtures for the export tests: Garmin's TCX v2 schema (rides as data: tests/support/export_rides.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xmlschema

from tests.support.backend_server import make_server, server
from tests.support.processes import backend

__all__ = ["backend", "make_server", "server", "tcx_schema"]

# Debian's pytrainer package ships Garmin's TrainingCenterDatabasev2.xsd (it validates imported TCX files
# with it); no PyPI package does. RIDESYNC_TCX_XSD points at another copy of the same file.
DEBIAN_XSD = Path("/usr/share/pytrainer/schemas/GarminTrainingCenterDatabase_v2.xsd")


def tcx_xsd_path() -> Path | None:
    env = os.environ.get("RIDESYNC_TCX_XSD")
    if env:
        return Path(env)
    return DEBIAN_XSD if DEBIAN_XSD.is_file() else None


@pytest.fixture(scope="session")
def tcx_schema() -> xmlschema.XMLSchema:
    path = tcx_xsd_path()
    if path is None:
        pytest.skip(
            "Garmin's TCX v2 schema is not installed: `apt-get install pytrainer` (Debian ships "
            f"{DEBIAN_XSD}) or set RIDESYNC_TCX_XSD to a copy of TrainingCenterDatabasev2.xsd"
        )
    return xmlschema.XMLSchema(str(path))
