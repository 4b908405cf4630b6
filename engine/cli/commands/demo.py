"""`ridesync demo`: the group-class demo on embedded defaults (see engine/demo)."""

from __future__ import annotations

import argparse

from engine.cli.main import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run the group-class demo on simulated sensors, all local")
    parser.add_argument("--riders", type=int, default=8)
    parser.add_argument("--duration", type=float, default=None, help="seconds; default: until Ctrl-C")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise CliError("the group-class demo is not built yet (issue 8); try `ridesync decode hrm 1641b103`")
