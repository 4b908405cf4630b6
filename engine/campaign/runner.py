"""Runs one campaign by name in a temporary work dir that is removed afterwards, and times it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from engine.campaign.report import CampaignOptions, CampaignReport, Progress

CAMPAIGNS = ("security", "crash", "network", "fuzz", "soak")

Runner = Callable[..., Coroutine[Any, Any, CampaignReport]]


async def _interruptible(campaign: Coroutine[Any, Any, CampaignReport]) -> CampaignReport:
    """SIGTERM cancels the campaign like Ctrl-C does (asyncio.run's own SIGINT handling): the cancellation
    unwinds through every `async with`, which stops the processes and servers the campaign started."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await campaign
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def run_campaign(
    name: str,
    *,
    seed: int,
    long: bool = False,
    minutes: float | None = None,
    workdir: Path | None = None,
    quiet: bool = False,
    extra: Sequence[Any] = (),
    class_minutes: float | None = None,
    riders: int | None = None,
) -> CampaignReport:
    """`extra` is what the composition root injects (the fuzz campaign's adapter parsers). A campaign that
    raises returns its report so far with the error among its failures (so it fails, with a report)."""
    if name not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {name!r} (one of {', '.join(CAMPAIGNS)})")
    module = importlib.import_module(f"engine.campaign.{name}")
    runner: Runner = module.run
    with tempfile.TemporaryDirectory(prefix=f"ridesync-campaign-{name}-", dir=workdir) as tmp:
        options = CampaignOptions(
            seed=seed,
            long=long,
            workdir=Path(tmp),
            minutes=minutes,
            quiet=quiet,
            class_minutes=class_minutes,
            riders=riders,
        )
        progress = Progress(name, quiet)
        report = CampaignReport(name, seed, "long" if long else "short")
        t0 = time.monotonic()
        try:
            asyncio.run(_interruptible(runner(options, progress, report, *extra)))
        except Exception as exc:  # a campaign that broke still reports what it saw, and fails
            report.fail(f"the campaign stopped early: {exc!r}"[:500])
            progress(f"stopped early: {exc!r}")
        report.elapsed_s = time.monotonic() - t0
        progress(f"done: {report.held}/{report.injected} held, pass={report.passed}")
        return report
