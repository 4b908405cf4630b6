"""Runs one campaign by name in a temporary work dir that is removed afterwards, and times it."""

from __future__ import annotations

import asyncio
import importlib
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from engine.campaign.report import CampaignOptions, CampaignReport, Progress

CAMPAIGNS = ("security", "crash", "network", "fuzz", "soak")

Runner = Callable[..., Coroutine[Any, Any, CampaignReport]]


def run_campaign(
    name: str,
    *,
    seed: int,
    long: bool = False,
    minutes: float | None = None,
    workdir: Path | None = None,
    quiet: bool = False,
    extra: Sequence[Any] = (),
) -> CampaignReport:
    """`extra` is what the composition root injects (the fuzz campaign's adapter parsers)."""
    if name not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {name!r} (one of {', '.join(CAMPAIGNS)})")
    module = importlib.import_module(f"engine.campaign.{name}")
    runner: Runner = module.run
    with tempfile.TemporaryDirectory(prefix=f"ridesync-campaign-{name}-", dir=workdir) as tmp:
        options = CampaignOptions(seed=seed, long=long, workdir=Path(tmp), minutes=minutes, quiet=quiet)
        progress = Progress(name, quiet)
        t0 = time.monotonic()
        report = asyncio.run(runner(options, progress, *extra))
        report.elapsed_s = time.monotonic() - t0
        progress(f"done: {report.held}/{report.injected} held, pass={report.passed}")
        return report
