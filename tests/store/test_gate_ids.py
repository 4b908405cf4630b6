"""The gate's shared-document key check uses `fullmatch`: `$` would let `edit.<actor>.<n>\\n` through."""

from __future__ import annotations

from engine.ride import schema
from engine.ride.schema import Role, shared_ref

from .test_gate import RIDE, Open, push


def _edit(device: str) -> str:
    return schema.dumps(
        {"field": "title", "value": "x", "t": 1.0, "device": device, "role": "app", "seen": None}
    )


def test_an_edit_key_with_a_trailing_newline_is_refused(open_replica: Open) -> None:
    app = open_replica("app", role=Role.APP)
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    ref = shared_ref(RIDE)
    doc = app.ensure_doc(ref)
    doc.put({f"edit.{app.actor.hex()}.1\n": _edit("app-1")})
    result = push(doc, backend, ref, "app-1", Role.APP)
    assert not result.accepted and "is not allowed" in result.reason
    assert backend.doc(ref.doc_id).keys() == []


def test_a_well_formed_edit_key_is_accepted(open_replica: Open) -> None:
    app = open_replica("app", role=Role.APP)
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    ref = shared_ref(RIDE)
    doc = app.ensure_doc(ref)
    doc.put({f"edit.{app.actor.hex()}.1": _edit("app-1")})
    assert push(doc, backend, ref, "app-1", Role.APP).accepted
