"""A stock automerge-repo client (Node, tests/interop/client.mjs) against our wire codec and session.

Needs `npm ci --prefix tests/interop` (node >= 20); skipped with that instruction otherwise."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.chaos.proxy import ChaosProxy
from engine.crdt import CrdtDoc, new_actor_id
from engine.sync import wire
from engine.sync.docid import new_document_id, to_url
from tests.support.server_harness import TOKEN, Hub, serve
from tests.sync.test_wire import GOLDEN_EXPECTED

HERE = Path(__file__).parent
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None or not (HERE / "node_modules/@automerge/automerge-repo").is_dir(),
    reason="needs node and `npm ci --prefix tests/interop`",
)
HANG_GUARD = 60


async def run_client(*args: str) -> dict[str, Any]:
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE, str(HERE / "client.mjs"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    lines = out.decode().strip().splitlines()
    assert lines, f"client printed nothing; stderr: {err.decode()[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit"] = proc.returncode
    return result


async def test_stock_client_syncs_both_ways() -> None:
    hub = Hub()
    doc_id = new_document_id()
    doc = CrdtDoc.new(new_actor_id("backend"))
    doc.put({"title": "ride 1", "target_watts": 180})
    hub.docs[doc_id] = doc
    async with asyncio.timeout(HANG_GUARD), serve(hub) as url:
        client = asyncio.create_task(
            run_client(
                "--url", url, "--token", TOKEN, "--doc", to_url(doc_id),
                "--set", "note=hello from node", "--set", "rating=4", "--wait-for", "server_ack=seen",
            )
        )  # fmt: skip
        await hub.wait_for(doc_id, "note", "hello from node")
        assert doc.get("rating") == 4
        doc.put({"server_ack": "seen"})
        await hub.broadcast(doc_id)
        result = await client
    assert result["ok"], result
    assert result["exit"] == 0
    assert result["document_id"] == doc_id
    assert result["doc"] == {
        "title": "ride 1",
        "target_watts": 180,
        "note": "hello from node",
        "rating": 4,
        "server_ack": "seen",
    }
    assert hub.joined == [result["peer_id"]]
    assert sorted(result["heads"]) != []


async def test_unknown_document_is_unavailable_to_a_stock_client() -> None:
    hub = Hub()
    async with asyncio.timeout(HANG_GUARD), serve(hub) as url:
        result = await run_client(
            "--url", url, "--token", TOKEN, "--doc", to_url(new_document_id()), "--expect-unavailable"
        )  # fmt: skip
    assert result["ok"] and result["unavailable"], result
    assert len(hub.joined) == 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


async def test_automerge_repo_decodes_our_frames() -> None:
    assert NODE is not None
    messages = [
        *GOLDEN_EXPECTED.values(),
        wire.Error("s", "c", "ünïcödé ✓ " * 50),
        wire.Join("p", supported_protocol_versions=None),
    ]
    frames = [wire.encode(m).hex() for m in messages]
    async with asyncio.timeout(HANG_GUARD):
        proc = await asyncio.create_subprocess_exec(
            NODE, str(HERE / "decode.mjs"), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate(json.dumps(frames).encode())
    assert proc.returncode == 0
    assert json.loads(out) == [_jsonable(wire.to_map(m)) for m in messages]


@pytest.mark.parametrize("fault", ["reset_all", "partition"])
async def test_stock_client_recovers_through_the_fault_proxy(fault: str) -> None:
    hub = Hub()
    doc_id = new_document_id()
    doc = CrdtDoc.new(new_actor_id("backend"))
    doc.put({"title": "ride 2"})
    hub.docs[doc_id] = doc
    async with asyncio.timeout(HANG_GUARD), serve(hub) as url:
        port = int(url.split(":")[2].split("/")[0])
        async with ChaosProxy(("127.0.0.1", port)) as proxy:
            client = asyncio.create_task(
                run_client(
                    "--url", f"ws://127.0.0.1:{proxy.port}/v1/sync", "--token", TOKEN,
                    "--doc", to_url(doc_id),
                    "--set", "note=before the fault", "--wait-for", "server_ack=after the fault",
                )
            )  # fmt: skip
            await hub.wait_for(doc_id, "note", "before the fault")
            if fault == "reset_all":
                # The link dies; the stock client reconnects and rejoins, then syncs what it missed.
                assert proxy.reset_all() == 1
                await proxy.wait_until(lambda: proxy.stats.accepted == 2 and proxy.stats.open == 1)
            else:
                # A black hole: nothing flows until it heals, then the same connection carries on.
                proxy.partition()
            doc.put({"server_ack": "after the fault"})
            await hub.broadcast(doc_id)
            proxy.heal()
            result = await client
    assert result["ok"], result
    assert result["doc"] == {"title": "ride 2", "note": "before the fault", "server_ack": "after the fault"}
    assert proxy.count("reset") == (1 if fault == "reset_all" else 0)
