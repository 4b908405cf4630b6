"""`ridesync token issue|rotate`: signed device tokens; the signing keys live in the data dir and are created
only with `--init` (engine/cli/datadir.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.auth.tokens import KeyRing

MAX_TTL_S = 10 * 366 * 86400.0  # ten years; claims beyond ~31,000 years would not even verify


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("token", help="issue device tokens; rotate signing keys")
    actions = parser.add_subparsers(dest="token_action", metavar="ACTION")
    actions.required = True

    issue = actions.add_parser("issue", help="print a signed token for a device")
    issue.add_argument("--role", required=True, choices=["bike", "app", "viewer", "backend"])
    issue.add_argument("--device", required=True, help="device id (letters, digits and . _ : -)")
    issue.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="C",
        help="class the token may join; repeatable",
    )
    issue.add_argument(
        "--ride",
        dest="rides",
        action="append",
        default=None,
        metavar="R",
        help="ride the token may touch; repeatable (default: any)",
    )
    issue.add_argument(
        "--rider",
        default=None,
        metavar="NAME",
        help="who rides with this device: an app token and a bike token with the same rider let the app "
        "write the rides that bike starts",
    )
    issue.add_argument(
        "--name", default=None, metavar="TEXT", help="the rider's display name on the class page"
    )
    issue.add_argument(
        "--max-hr",
        type=int,
        default=None,
        metavar="BPM",
        help="the rider's max heart rate (100..250): the class page's zones are computed from it",
    )
    issue.add_argument(
        "--ttl", type=float, default=86400.0, metavar="S", help="lifetime in seconds (default 86400)"
    )
    issue.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="data dir holding the keys ($RIDESYNC_DATA or ./ridesync-data)",
    )
    issue.add_argument(
        "--init",
        action="store_true",
        help="create the signing keys if DIR has none (a new data dir); without it missing keys are an error",
    )
    issue.add_argument(
        "--json", action="store_true", help="print {token, claims} as JSON instead of the bare token"
    )
    issue.set_defaults(handler=_issue)

    rotate = actions.add_parser("rotate", help="add a new signing key; older keys keep verifying")
    rotate.add_argument("--data", default=None, metavar="DIR")
    rotate.set_defaults(handler=_rotate)


def _ring(data: str | None, *, init: bool = False) -> KeyRing:
    from pathlib import Path

    from engine.cli.datadir import open_keyring
    from engine.datadir import default_data_dir

    return open_keyring(Path(data) if data is not None else default_data_dir(), init=init)


def _issue(args: argparse.Namespace) -> int:
    from engine import ids
    from engine.auth.tokens import TokenError
    from engine.cli.main import CliError
    from engine.cli.output import emit

    # Arguments first, so a typo does not leave new keys behind in a fresh data dir.
    try:
        ids.check_device_id(args.device)
        for name in args.classes:
            ids.check_class_id(name)
        for name in args.rides or ():
            ids.check_ride_id(name)
    except ids.InvalidId as exc:
        raise CliError(str(exc)) from None
    if not 0 < args.ttl <= MAX_TTL_S:
        raise CliError(f"--ttl must be a number of seconds in (0, {MAX_TTL_S:g}]")
    ring = _ring(args.data, init=args.init)
    try:
        token = ring.issue(
            args.role,
            args.device,
            classes=args.classes,
            rides=args.rides,
            ttl_s=args.ttl,
            rider=args.rider,
            name=args.name,
            max_hr=args.max_hr,
        )
    except TokenError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        emit({"token": token, "claims": ring.verify(token).to_payload(), "kid": ring.current})
    else:
        print(token)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from engine.auth.tokens import TokenError
    from engine.cli.main import CliError
    from engine.cli.output import emit

    ring = _ring(args.data)
    try:
        current = ring.rotate()
    except (TokenError, OSError) as exc:
        raise CliError(f"cannot rotate the keys in {ring.path}: {exc}") from None
    emit({"current": current, "keys": sorted(ring.keys)})
    return 0
