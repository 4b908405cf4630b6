"""The stock automerge-repo Node client (tests/interop/client.mjs) against the real `ridesync serve`:
it joins with a device token, finds a ride's shared document, writes a schema-conformant edit that the
bike receives, and sees the bike's edits and the bike's own document.

Needs node >= 20 and `npm ci --prefix tests/interop` (node_modules); skipped with that reason otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.auth.tokens import KeyRing
from engine.campaign.sync_client import SyncClient
from engine.ride.samples import Sample
from engine.ride.schema import Role
from engine.store import ReplicaStore

HERE = Path(__file__).parent
NODE = shutil.which("node")
pytestmark = [
    pytest.mark.skipif(
        NODE is None or not (HERE / "node_modules/@automerge/automerge-repo").is_dir(),
        reason="needs node and npm packages: `npm ci --prefix tests/interop` (no tests/interop/node_modules)",
    ),
    pytest.mark.slow,
]
HANG_GUARD = 60
RIDE = "ride-interop"


async def _serve(data: Path) -> AsyncIterator[str]:
    """`ridesync serve` on a free port; its JSON log goes to serve.log next to the data dir."""
    log = open(data.parent / "serve.log", "wb")  # noqa: ASYNC230, SIM115  # closed in finally
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--data", str(data), "--init",
        stdout=asyncio.subprocess.PIPE, stderr=log, env={**os.environ, "RIDESYNC_DATA": str(data)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        assert line, "ridesync serve printed nothing"
        yield json.loads(line)["url"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        log.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, KeyRing]]:
    data = tmp_path / "server"
    async for url in _serve(data):
        yield url, KeyRing.load_or_create(data)


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


async def test_stock_client_edits_a_ride_with_the_real_server(
    served: tuple[str, KeyRing], tmp_path: Path
) -> None:
    url, ring = served
    bike = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride(RIDE, t=1_795_000_000.0)
    bike.append_samples(
        RIDE, [Sample(seq=i, t=1_795_000_000.0 + i, hr=130, contact="detected") for i in range(20)]
    )
    bike.fold(RIDE)
    title_key = bike.edit_shared(RIDE, "title", "Tempo intervals")
    app_token = ring.issue("app", "app-node", rides=[RIDE])
    ws_url = url.replace("http://", "ws://") + "/v1/sync"
    async with asyncio.timeout(HANG_GUARD), SyncClient(url, ring.issue("bike", "bike-1"), bike, RIDE) as bc:
        await bc.open_ride()
        async with aiohttp.ClientSession() as http:
            # Wait until the backend holds the bike's edit (it lists the ride's documents then).
            while True:
                async with http.get(
                    f"{url}/v1/rides/{RIDE}", headers={"Authorization": f"Bearer {app_token}"}
                ) as r:
                    body = await r.json() if r.status == 200 else {}
                if body.get("shared", {}).get("title") == "Tempo intervals":
                    break
                await _next_message(bc)
            async with http.get(f"{url}/v1/rides/{RIDE}/docs", params={"token": app_token}) as r:
                docs = {d["kind"]: d["url"] for d in (await r.json())["docs"]}
        title_json = json.dumps(bike.doc(_shared(bike)).get(title_key))
        # The bike's next edit key is predictable (its actor, counter 2): the node client waits for it,
        # which the bike writes only after it received the node client's edit: a round trip both ways.
        ack_key = f"edit.{bike.actor.hex()}.2"
        client = asyncio.create_task(
            run_client(
                "--url", ws_url, "--token", app_token, "--doc", docs["shared"],
                "--edit", "notes=from the node app", "--device", "app-node", "--role", "app",
                "--wait-for", f"{title_key}={title_json}", "--wait-key", ack_key,
            )
        )  # fmt: skip
        # The bike receives the stock client's edit through the backend, and the policy accepts it.
        await bc.wait_for(lambda: bike.view(RIDE).shared.get("notes") == "from the node app" or client.done())
        assert bike.edit_shared(RIDE, "rating", 5) == ack_key
        await bc.push()
        result = await client
        assert result["ok"], result
        assert result["exit"] == 0
        # The stock client also reads the bike's own document.
        seen = await run_client(
            "--url", ws_url, "--token", app_token, "--doc", docs["bike"], "--wait-for", "device=bike-1"
        )  # fmt: skip
        assert seen["ok"], seen
    view = bike.view(RIDE)
    assert view.shared == {"title": "Tempo intervals", "notes": "from the node app", "rating": 5}
    assert json.loads(result["saw"][ack_key])["value"] == 5
    assert [e for e in result["edited"] if e.startswith("edit.")]
    assert seen["doc"]["role"] == "bike"
    bike.close()


async def test_stock_client_cannot_pose_as_the_backend(served: tuple[str, KeyRing], tmp_path: Path) -> None:
    """A stock client whose edit claims the backend role is refused: the server sends an error and closes,
    and the edit never reaches the ride."""
    url, ring = served
    bike = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride(RIDE, t=1_795_000_000.0)
    async with asyncio.timeout(HANG_GUARD), SyncClient(url, ring.issue("bike", "bike-1"), bike, RIDE) as bc:
        await bc.open_ride()
        token = ring.issue("app", "app-node", rides=[RIDE])
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{url}/v1/rides/{RIDE}/docs", params={"token": token}) as r:
                    docs = {d["kind"]: d["url"] for d in (await r.json())["docs"]} if r.status == 200 else {}
                if "shared" in docs:
                    break
                await _next_message(bc)
        result = await run_client(
            "--url", url.replace("http://", "ws://") + "/v1/sync", "--token", token, "--doc", docs["shared"],
            "--edit", "title=forged", "--device", "backend", "--role", "backend",
            "--wait-for", "never=seen", "--timeout-ms", "4000",
        )  # fmt: skip
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/v1/rides/{RIDE}", params={"token": token}) as r,
        ):
            body = await r.json()
    assert not result["ok"]
    assert "title" not in body["shared"]
    bike.close()


async def _next_message(client: SyncClient) -> None:
    """Wait until the backend sent the bike one more message (it answers every change it merged), or a
    moment: its last message may have arrived while the caller was reading the backend's state over HTTP,
    and waiting for one more after that would wait for ever. The test's hang guard bounds it all."""
    seen = client.received
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.wait_for(lambda: client.received > seen)


def _shared(store: ReplicaStore) -> str:
    from engine.ride.schema import shared_ref

    return shared_ref(RIDE).doc_id


async def test_stock_client_reads_a_live_segment_and_is_told_a_retired_one_is_unavailable(
    served: tuple[str, KeyRing], tmp_path: Path
) -> None:
    """Live segments (docs/architecture.md#live-segments) to a stock client: the live one is a document
    like any other; one the backend retired (its samples consolidated into the bike document) is
    `doc-unavailable`, which the client reports cleanly (no error, no retry loop)."""
    from engine.backend.service import repo_id
    from engine.ride.schema import segment_ref
    from engine.sync.docid import to_url
    from tests.support.clock import Clock
    from tests.support.samples import make_sample

    url, ring = served
    t0 = 1_795_000_000.0
    clock = Clock(t0)
    bike = ReplicaStore(
        tmp_path / "bike", device_id="bike-1", role=Role.BIKE, clock=clock, segment_interval_s=60.0
    )
    bike.start_ride(RIDE, t=t0)
    for seq in range(75):  # segment 0 consolidated at 60 s, segment 1 live from 70 s
        clock.t = t0 + seq + 1
        bike.append_sample(RIDE, make_sample(seq, t0=t0))
        bike.maybe_fold(RIDE, online=True)
    retired, live = segment_ref(RIDE, "bike-1", 0), segment_ref(RIDE, "bike-1", 1)
    assert bike.has_doc(retired.doc_id) and bike.has_doc(live.doc_id)
    token = ring.issue("app", "app-node", rides=[RIDE])
    ws_url = url.replace("http://", "ws://") + "/v1/sync"
    async with asyncio.timeout(HANG_GUARD), SyncClient(url, ring.issue("bike", "bike-1"), bike, RIDE) as bc:
        await bc.open_ride()
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{url}/v1/rides/{RIDE}", params={"token": token}) as r:
                    body = await r.json() if r.status == 200 else {}
                async with http.get(f"{url}/v1/rides/{RIDE}/docs", params={"token": token}) as r:
                    docs = [d["doc_id"] for d in (await r.json())["docs"]] if r.status == 200 else []
                if (
                    body.get("samples") == {"bike-1": 70}
                    and live.doc_id in docs
                    and retired.doc_id not in docs
                ):
                    break
                await _next_message(bc)
        gone = await run_client(
            "--url", ws_url, "--token", token, "--doc", to_url(repo_id(retired)), "--expect-unavailable",
            "--timeout-ms", "8000",
        )  # fmt: skip
        seen = await run_client(
            "--url", ws_url, "--token", token, "--doc", to_url(repo_id(live)), "--wait-for", "device=bike-1"
        )  # fmt: skip
    assert gone["ok"] and gone["unavailable"], gone
    assert seen["ok"], seen
    assert seen["doc"]["kind"] == "segment"
    bike.close()
