"""Fixtures for the conformance suites: implementations that need a real service get it here."""

from __future__ import annotations

from tests.support.redis import redis_server

__all__ = ["redis_server"]
