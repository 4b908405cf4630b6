"""Argument types shared by the subcommands: ports, HOST:PORT and backend URLs, checked while the command
line is parsed, so a bad value is argparse's one-line usage error (exit 2) and never a traceback from deep
inside a bind or a connect."""

from __future__ import annotations

import argparse
import math

from engine.store.location import StoreLocation, StoreLocationError, parse_store
from engine.urls import BackendUrlError, check_backend_url


def port(text: str) -> int:
    """A TCP port to listen on: 0..65535 (0 picks a free one)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r} (want 0..65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range (want 0..65535)")
    return value


def hostport(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:PORT` for IPv6) as (host, port); the port is 0..65535."""
    host, sep, number = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, port(number)


def backend_url(text: str) -> str:
    """A backend URL: http(s):// or ws(s)://HOST[:PORT] (engine/urls.py)."""
    try:
        return check_backend_url(text)
    except BackendUrlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def store(text: str) -> StoreLocation:
    """`sqlite:PATH` or `postgresql://USER@HOST[:PORT]/DATABASE` (engine/store/location.py)."""
    try:
        return parse_store(text)
    except StoreLocationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, a speed-up, a rate): `nan`, `inf`, 0 and negatives are usage errors."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number > 0 (a baud rate, a count)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """A logging level name, any case."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.upper()
