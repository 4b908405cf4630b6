"""`ridesync bench NAME`: benchmarks that print JSON and run their baseline side by side in the same run.

Each module (or package, like `engine.bench.live`) in `engine.bench` that exposes NAME and `run` is one
benchmark: it exposes NAME, HELP, `add_arguments(parser)` and
`run(args) -> dict`. Only ratios between a measurement and its in-run baseline are meaningful on a noisy
shared machine, so every result should carry both.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from typing import Any, Protocol, cast


class Benchmark(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> dict[str, Any]: ...


def _benchmarks() -> list[Benchmark]:
    from engine import bench

    found = []
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{bench.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found.append(cast(Benchmark, module))
    return found


HELP = "run a benchmark next to its baseline; prints JSON"


def register_line(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Only `bench`'s line in the top-level help: listing the benchmarks imports every one of them (~0.9 s
    of bumble, aiohttp and the demo), which a command line that is not `ridesync bench …` never needs."""
    sub.add_parser("bench", help=HELP)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("bench", help=HELP)
    names = parser.add_subparsers(dest="bench", metavar="NAME")
    names.required = True
    for bm in _benchmarks():
        p = names.add_parser(bm.NAME, help=bm.HELP)
        p.add_argument("--json", action="store_true", help="one compact JSON object instead of indented JSON")
        bm.add_arguments(p)
        p.set_defaults(handler=_handler(bm))


def _handler(bm: Benchmark) -> Any:
    def handle(args: argparse.Namespace) -> int:
        result = {"benchmark": bm.NAME, **bm.run(args)}
        print(json.dumps(result, separators=(",", ":")) if args.json else json.dumps(result, indent=2))
        return 0

    return handle
