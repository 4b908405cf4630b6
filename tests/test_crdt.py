"""engine.crdt is the only module that imports automerge, and it contains the bindings' hazards."""

from __future__ import annotations

import ast
import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crdt import CrdtDecodeError, CrdtDoc, SyncSession, actor_device_prefix, new_actor_id

ROOT = Path(__file__).resolve().parents[1]


def _imports_automerge(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "automerge" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "automerge":
            return True
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
            "__import__",
            "import_module",
        ):
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if any(isinstance(a, str) and a.split(".")[0] == "automerge" for a in args):
                return True
    return False


def test_only_engine_crdt_imports_automerge() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("engine", "adapters")
        if (ROOT / folder).exists()
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p != ROOT / "engine" / "crdt.py" and _imports_automerge(p)
    ]
    assert offenders == []
    assert _imports_automerge(ROOT / "engine" / "crdt.py")


def test_actor_ids_are_fresh_and_carry_the_device_prefix() -> None:
    ids = {new_actor_id("bike-1") for _ in range(100)}
    assert len(ids) == 100
    assert all(a.startswith(actor_device_prefix("bike-1")) and len(a) == 16 for a in ids)
    assert not new_actor_id("bike-2").startswith(actor_device_prefix("bike-1"))


def test_save_load_fork_merge_and_changes_since() -> None:
    a = CrdtDoc.new(new_actor_id("a"))
    a.put({"x": 1, "s": "hé", "b": b"\x00\x01", "f": 1.5, "t": True, "n": None})
    base = a.heads()
    fork = a.fork(new_actor_id("b"))
    fork.put({"y": 2})
    a.put({"z": 3})
    before = a.heads()
    assert a.merge(fork) == a.heads() != before
    assert [c.actor for c in a.changes_since(before)] == [fork.actor]
    assert a.items() == {"x": 1, "s": "hé", "b": b"\x00\x01", "f": 1.5, "t": True, "n": None, "y": 2, "z": 3}
    changes = a.changes_since(base)
    assert {c.actor for c in changes} == {a.actor, fork.actor}
    loaded = CrdtDoc.load(a.save(), new_actor_id("c"))
    assert loaded.items() == a.items() and loaded.heads() == a.heads()
    other = CrdtDoc.new(new_actor_id("d"))
    assert other.apply_changes(c.data for c in a.changes_since([])) == a.heads()
    assert other.items() == a.items()


def test_torn_tail_and_garbage_raise_typed_errors() -> None:
    a = CrdtDoc.new(new_actor_id("a"))
    a.put({"x": 1})
    snap = a.save()
    a.put({"y": 2})
    tail = b"".join(c.data for c in a.changes_since(CrdtDoc.load(snap, a.actor).heads()))
    assert CrdtDoc.load(snap + tail, a.actor).items() == {"x": 1, "y": 2}
    with pytest.raises(CrdtDecodeError):
        CrdtDoc.load(snap + tail[:-3], a.actor)
    with pytest.raises(CrdtDecodeError):
        CrdtDoc.load(b"\x00garbage", a.actor)
    with pytest.raises(CrdtDecodeError):
        SyncSession().receive(a, b"\x42garbage")
    assert a.items() == {"x": 1, "y": 2}


def test_values_outside_the_safe_set_are_refused_before_any_call() -> None:
    a = CrdtDoc.new(new_actor_id("a"))
    with pytest.raises(TypeError):
        a.put({"c": [1, 2]})  # type: ignore[dict-item]
    assert a.keys() == []


def test_sync_sessions_converge_two_documents() -> None:
    a, b = CrdtDoc.new(new_actor_id("a")), CrdtDoc.new(new_actor_id("b"))
    a.put({"x": 1})
    b.put({"y": 2})
    sa, sb = SyncSession(), SyncSession()
    for _ in range(10):
        m1 = sa.generate(a)
        if m1 is not None:
            sb.receive(b, m1)
        m2 = sb.generate(b)
        if m2 is not None:
            sa.receive(a, m2)
        if m1 is None and m2 is None:
            break
    assert a.heads() == b.heads() and a.items() == b.items() == {"x": 1, "y": 2}


def test_a_real_panic_is_typed_and_the_poisoned_document_never_freed() -> None:
    # In a child process: if the graveyard did not hold the poisoned document, freeing it would segfault.
    script = textwrap.dedent(
        """
        import gc, sys
        from automerge.core import ROOT, ScalarType
        from engine import crdt
        doc = crdt.CrdtDoc.new(crdt.new_actor_id("x"))
        doc.put({"a": 1})
        def write_counter():
            with doc._doc.transaction() as tx:
                tx.put(ROOT, "c", ScalarType.Counter, 1)
        try:
            doc._call(write_counter, mutating=True)
        except crdt.CrdtPanic as exc:
            print("panic", type(exc).__name__)
        assert doc.poisoned and crdt.graveyard_size() == 1
        try:
            doc.keys()
        except crdt.CrdtPoisoned:
            print("poisoned")
        del doc
        gc.collect()
        print("alive")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["panic", "CrdtPanic", "poisoned", "alive"]


def test_a_js_counter_is_detected_and_reading_it_is_a_typed_panic() -> None:
    # In a child process, so the real panic cannot disturb this one and a missed graveyard would segfault.
    script = textwrap.dedent(
        """
        import gc
        from engine import crdt
        from tests.support.automerge_js import JS_COUNTER_DOC
        doc = crdt.CrdtDoc.load(JS_COUNTER_DOC, crdt.new_actor_id("x"))
        print("counters", doc.counters_since([]))
        print("keys", ",".join(doc.keys()))
        try:
            doc.get("c")
        except crdt.CrdtPanic:
            print("panic", doc.poisoned)
        del doc
        gc.collect()
        print("alive")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["counters", "True", "keys", "c,title", "panic", "True", "alive"]


def test_plain_documents_have_no_counters() -> None:
    doc = CrdtDoc.new(new_actor_id("a"))
    doc.put({"title": "Counter(5) is a fine title", "n": 5})
    assert not doc.counters_since([])


def _exchange(a: CrdtDoc, b: CrdtDoc) -> list[bytes]:
    """Every message of a full sync between `a` and `b` (both directions)."""
    sa, sb = SyncSession(), SyncSession()
    messages = []
    for _ in range(20):
        m = sa.generate(a)
        if m is not None:
            messages.append(m)
            sb.receive(b, m)
        r = sb.generate(b)
        if r is not None:
            messages.append(r)
            sa.receive(a, r)
        if m is None and r is None:
            return messages
    raise AssertionError("no convergence")


def test_inspect_sync_message_reads_what_the_bindings_write() -> None:
    """The gate reads a message's changes from its bytes before Automerge sees it: the reader must agree
    with the bindings on v1 and v2 messages, plain and deflated change chunks and whole documents."""
    from engine.crdt import inspect_sync_message

    a = CrdtDoc.new(new_actor_id("a"))
    for i in range(6):
        a.put({f"k{i}": "z" * (i * 400)})  # over ~256 bytes Automerge deflates a change
    b = CrdtDoc.new(new_actor_id("b"))
    start = a.heads()
    messages = _exchange(a, b)
    infos = [inspect_sync_message(m) for m in messages]
    assert any(i.documents for i in infos), "a first sync of a whole document sends it as one chunk"
    assert all(i.carries_changes == bool(i.changes or i.documents) for i in infos)
    # Incremental: change chunks, hashes as Automerge computes them, deflated ones included.
    base = a.heads()
    a.put({"big": "y" * 5000})
    a.put({"small": 1})
    new = a.changes_since(base)
    msgs = _exchange(a, b)
    seen = [h for m in msgs for h, _ in inspect_sync_message(m).changes]
    assert seen == [c.hash for c in new]
    assert any(c.data[8] == 2 for c in new), "one change travels deflated"
    sizes = [s for m in msgs for _, s in inspect_sync_message(m).changes]
    assert sizes[0] > 5000
    # The opening message carries nothing, only heads (and a Bloom filter).
    first = inspect_sync_message(messages[0])
    assert not first.carries_changes and list(first.heads) == start and first.need == ()


def test_inspect_sync_message_refuses_what_it_cannot_read() -> None:
    from engine.crdt import inspect_sync_message

    truncated = b"\x42\x00\x00\x00\x01\x05abc"
    not_a_chunk = b"\x42\x00\x00\x00\x01\x03abc"
    for bad in (b"", b"\x41", b"\x42", b"\x42\x01", truncated, not_a_chunk):
        with pytest.raises(CrdtDecodeError):
            inspect_sync_message(bad)
    # A count far beyond the bytes present fails on the bytes, not on the count.
    with pytest.raises(CrdtDecodeError):
        inspect_sync_message(b"\x42\xff\xff\xff\xff\x0f")


def test_inspect_sync_message_counts_chunk_types_it_does_not_know() -> None:
    from engine.crdt import inspect_sync_message
    from tests.support.hostile import sync_message

    future = b"\x85\x6f\x4a\x83" + b"\x00" * 4 + b"\x07" + b"\x03abc"
    info = inspect_sync_message(sync_message([future]))
    assert info.carries_changes and len(info.changes) == 1 and info.changes[0][1] == len(future)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x42", b"\x43", b"\x42\x00\x00\x00\x01"]))
def test_inspect_sync_message_raises_only_decode_errors(tail: bytes, head: bytes) -> None:
    from engine.crdt import inspect_sync_message

    with contextlib.suppress(CrdtDecodeError):
        inspect_sync_message(head + tail)


def test_append_maps_is_one_change_and_checks_every_value_before_writing() -> None:
    """The nested layout the store benchmark's baseline stores samples as (engine/bench/store.py)."""
    from automerge.core import ROOT, Document

    doc = CrdtDoc.new(new_actor_id("maps"))
    doc.append_maps("samples", [{"hr": 120, "t": 1.5}, {"hr": 121}])
    heads = doc.heads()
    doc.append_maps("samples", [{"hr": 122}])
    assert len(doc.changes_since([])) == 2 and len(doc.changes_since(heads)) == 1
    before = doc.heads()
    with pytest.raises(TypeError):
        doc.append_maps("samples", [{"hr": 123}, {"hr": object()}])  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="64-bit"):
        doc.append_maps("samples", [{"hr": 2**63}])
    assert doc.heads() == before  # nothing of a refused call was written
    raw = Document.load(doc.save())
    found = raw.get(ROOT, "samples")
    assert found is not None
    rows = found[1]
    assert raw.length(rows) == 3
    last = raw.get(rows, 2)
    assert last is not None and raw.get(last[1], "hr")[0][1] == 122  # type: ignore[index]
