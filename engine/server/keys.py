"""Typed keys of the shared aiohttp application, for every area that registers routes on it."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from engine.auth.tokens import KeyRing

DATA_DIR = web.AppKey("ridesync.data_dir", Path)
KEYRING = web.AppKey("ridesync.keyring", KeyRing)
# Per-application registry (not prometheus_client's global one), so tests can build many apps per process.
REGISTRY = web.AppKey("ridesync.registry", CollectorRegistry)
