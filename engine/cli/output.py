"""Printing JSON lines: one object per line, flushed, so pipes and `jq` see readings as they happen."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


def emit(obj: dict[str, Any], stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
    out.flush()
