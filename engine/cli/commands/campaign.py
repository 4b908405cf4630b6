"""`ridesync campaign NAME`: security, crash, network, fuzz or soak; one JSON report, exit 0 only if held."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engine.campaign.runner import CAMPAIGNS

    p = sub.add_parser(
        "campaign",
        help="attack, crash, partition, fuzz or soak a local ridesync and report whether it held",
        description=(
            "Runs one campaign against processes it starts on 127.0.0.1 and removes afterwards. The short "
            "version (default) takes well under a minute; --long is the full campaign. Progress goes to "
            "stderr; the report (seed, injected, held, lost, duplicated, pass) to stdout. Exit 0 only if "
            "everything held."
        ),
    )
    p.add_argument("name", choices=CAMPAIGNS)
    p.add_argument("--seed", type=int, default=14, help="seed for every random choice (default 14)")
    p.add_argument("--long", action="store_true", help="the long version (minutes to an hour)")
    p.add_argument(
        "--minutes", type=float, default=None, metavar="M", help="wall minutes for soak/network (override)"
    )
    p.add_argument(
        "--class-minutes",
        type=float,
        default=None,
        metavar="M",
        help="soak: ride-minutes per class, classes back to back (default 45 long, 0.75 short)",
    )
    p.add_argument(
        "--riders",
        type=int,
        default=None,
        metavar="N",
        help="soak: riders (default 100 long, 3 short; fewer on a loaded machine)",
    )
    p.add_argument("--workdir", default=None, metavar="DIR", help="where the temporary data dirs go")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=_campaign)


def _campaign(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from engine.campaign.runner import run_campaign
    from engine.cli.main import CliError

    if args.minutes is not None and not args.minutes > 0:
        raise CliError("--minutes must be positive")
    if args.class_minutes is not None and not args.class_minutes > 0:
        raise CliError("--class-minutes must be positive")
    if args.riders is not None and not args.riders > 0:
        raise CliError("--riders must be positive")
    extra: tuple[object, ...] = ()
    if args.name == "fuzz":
        from engine.cli.fuzz_targets import adapter_targets

        extra = (adapter_targets(),)
    report = run_campaign(
        args.name,
        seed=args.seed,
        long=args.long,
        minutes=args.minutes,
        workdir=Path(args.workdir) if args.workdir else None,
        quiet=args.quiet,
        extra=extra,
        class_minutes=args.class_minutes,
        riders=args.riders,
    )
    if args.json:
        print(report.dumps(), flush=True)
    else:
        out = report.to_json()
        out.pop("cases")
        print(json.dumps(out, indent=2))
        for case in report.cases:
            if not case.held:
                print(f"NOT HELD: {case.name}: {case.detail}")
    return 0 if report.passed else 1
