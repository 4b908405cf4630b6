"""Entry point of the `ridesync` command.

Each module in `engine.cli.commands` registers its subcommand. Handlers import their heavy dependencies
lazily so that `ridesync decode` does not pay for aiohttp or bumble.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable, Sequence

from engine.cli import commands

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A user-facing error: printed as one JSON object on stderr, exit status 2."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given `argv`, commands it does not select may register only their line in
    the top-level help (`register_line`), so that `ridesync token issue` does not import every benchmark
    (bumble, aiohttp, the demo) just to build `ridesync bench`'s sub-commands."""
    selected = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="ridesync",
        description="Multi-device state reconciliation for connected fitness.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register_line = getattr(module, "register_line", None)
        if register_line is not None and argv is not None and selected != info.name:
            register_line(sub)
        else:
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ridesync sensors | head` closes our stdout; that is the reader's choice, not our failure.
        return 0


if __name__ == "__main__":
    # `python -m engine.cli.main` runs this file as `__main__`, a second copy of the module: its CliError
    # would not be the one the commands raise (engine.cli.main.CliError), and every user error would
    # end in a traceback. Run the real module's main.
    from engine.cli.main import main as _main

    sys.exit(_main())
