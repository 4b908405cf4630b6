"""One Role: the token's and the ride documents' are the same enum, so nothing bridges them."""

from __future__ import annotations

from engine.auth import tokens
from engine.ride import schema
from engine.roles import Role


def test_token_and_document_roles_are_one_enum() -> None:
    assert tokens.Role is Role
    assert schema.Role is Role
    assert [r.value for r in Role] == ["bike", "app", "backend", "viewer"]
