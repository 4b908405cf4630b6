from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from engine.chaos.proxy import ChaosConfigError, ChaosProxy, Faults, parse_hostport, parse_schedule
from tests.support.loopback_servers import TcpServer, WsServer

HANG_GUARD = 30


async def read_all(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while chunk := await reader.read(65536):
        out += chunk
    return bytes(out)


async def connect(proxy: ChaosProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


@pytest.fixture
async def make_proxy() -> AsyncIterator[Callable[..., Awaitable[ChaosProxy]]]:
    proxies: list[ChaosProxy] = []

    async def make(port: int, **kw: object) -> ChaosProxy:
        proxy = ChaosProxy(("127.0.0.1", port), **kw)  # type: ignore[arg-type]
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.stop()


class FakeTime:
    """A clock that only moves when the proxy sleeps, so pacing and stalls are checked exactly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_relays_both_ways_with_half_close(
    echo_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    proxy = await make_proxy(echo_server.port)
    payload = bytes(range(256)) * 1000
    async with asyncio.timeout(HANG_GUARD):
        reader, writer = await connect(proxy)
        writer.write(payload)
        writer.write_eof()
        assert await read_all(reader) == payload
        writer.close()
        await proxy.wait_until(lambda: proxy.stats.open == 0)
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(payload)
    assert proxy.events == []


async def test_drop_closes_before_reaching_the_target(
    echo_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    proxy = await make_proxy(echo_server.port, faults=Faults(drop=1.0))
    async with asyncio.timeout(HANG_GUARD):
        reader, writer = await connect(proxy)
        assert await read_all(reader) == b""
        writer.close()
    assert echo_server.connections == 0
    assert proxy.count("drop") == 1


async def _drop_pattern(port: int, seed: int, make_proxy: Callable[..., Awaitable[ChaosProxy]]) -> list[bool]:
    proxy = await make_proxy(port, faults=Faults(drop=0.5), seed=seed)
    pattern = []
    for _ in range(12):
        reader, writer = await connect(proxy)
        writer.write(b"x")
        try:
            # A dropped connection ends at once: FIN, or RST if our byte was already in its buffer.
            pattern.append(await reader.read(1) == b"")
        except ConnectionResetError:
            pattern.append(True)
        writer.close()
    return pattern


async def test_seed_reproduces_decisions(
    echo_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    async with asyncio.timeout(HANG_GUARD):
        first = await _drop_pattern(echo_server.port, 42, make_proxy)
        second = await _drop_pattern(echo_server.port, 42, make_proxy)
    assert first == second
    assert True in first and False in first


async def test_cut_mid_message_stops_at_the_planned_byte(
    send_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    faults = Faults(cut=1.0, kill_min=1000, kill_window=20000, cut_mid_message=True)
    proxy = await make_proxy(send_server.port, faults=faults, seed=7)
    async with asyncio.timeout(HANG_GUARD):
        reader, writer = await connect(proxy)
        received = await read_all(reader)
        writer.close()
    [planned] = [e for e in proxy.events if e.kind == "planned"]
    assert len(received) == planned.detail["at_byte"]
    assert received == send_server.payload[: len(received)]
    assert len(received) < len(send_server.payload)
    [cut] = [e for e in proxy.events if e.kind == "cut"]
    assert cut.detail["after_bytes"] == len(received)


async def test_reset_sends_rst(
    send_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    faults = Faults(reset=1.0, kill_min=1000, kill_window=20000, cut_mid_message=True)
    proxy = await make_proxy(send_server.port, faults=faults)
    async with asyncio.timeout(HANG_GUARD):
        reader, writer = await connect(proxy)
        received = bytearray()
        with pytest.raises(ConnectionResetError):
            while chunk := await reader.read(65536):
                received += chunk
        writer.close()
    assert len(received) < len(send_server.payload)
    assert proxy.count("reset") == 1


async def test_partition_holds_traffic_until_heal(
    echo_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    proxy = await make_proxy(echo_server.port)
    async with asyncio.timeout(HANG_GUARD):
        reader, writer = await connect(proxy)
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"
        proxy.partition()
        writer.write(b"during")
        await proxy.wait_until(lambda: proxy.stats.held == 6)
        # The bytes sit in the proxy: the target has provably not seen them.
        assert bytes(echo_server.received) == b"before"
        late_reader, late_writer = await connect(proxy)
        await proxy.wait_until(lambda: proxy.stats.accepted == 2)
        assert echo_server.connections == 1
        proxy.heal()
        assert await reader.readexactly(6) == b"during"
        late_writer.write(b"late")
        assert await late_reader.readexactly(4) == b"late"
        writer.close()
        late_writer.close()
    assert [e.kind for e in proxy.events] == ["partition", "heal"]


async def test_faults_change_at_runtime(
    echo_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    proxy = await make_proxy(echo_server.port)
    async with asyncio.timeout(HANG_GUARD):
        for drop in (0.0, 1.0, 0.0):
            proxy.set_faults(drop=drop)
            reader, writer = await connect(proxy)
            if drop:
                assert await reader.read(1) == b""
            else:
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"
            writer.close()
    assert proxy.count("drop") == 1
    assert proxy.count("set_faults") == 3


async def test_reset_all(echo_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]) -> None:
    proxy = await make_proxy(echo_server.port)
    async with asyncio.timeout(HANG_GUARD):
        clients = [await connect(proxy) for _ in range(2)]
        for reader, writer in clients:
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
        assert proxy.reset_all() == 2
        for reader, writer in clients:
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
            writer.close()
        await proxy.wait_until(lambda: proxy.stats.open == 0)


async def test_stalls_are_bounded(
    echo_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    fake = FakeTime()
    faults = Faults(stall_probability=1.0, stall_max=10.0)
    proxy = await make_proxy(echo_server.port, faults=faults, sleep=fake.sleep, clock=fake.clock)
    async with asyncio.timeout(HANG_GUARD):
        reader, writer = await connect(proxy)
        for i in range(5):
            writer.write(b"%d" % i)
            assert await reader.readexactly(1) == b"%d" % i
        writer.close()
    stalls = [e.detail["seconds"] for e in proxy.events if e.kind == "stall"]
    assert len(stalls) == 10  # every read, both directions
    assert all(0 <= s <= 10 for s in stalls)
    assert fake.sleeps == pytest.approx(
        [e.detail["seconds"] for e in proxy.events if e.kind == "stall"], abs=1e-3
    )


async def test_bandwidth_cap_paces_each_direction(
    send_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    fake = FakeTime()
    proxy = await make_proxy(
        send_server.port, faults=Faults(bandwidth=10_000), sleep=fake.sleep, clock=fake.clock
    )
    async with asyncio.timeout(HANG_GUARD):
        reader, writer = await connect(proxy)
        assert await read_all(reader) == send_server.payload
        writer.close()
    # 51,200 bytes at 10 kB/s in slices of at most 500 bytes: every slice but the last waits for the
    # previous one's share of the second, so the transfer takes total/bandwidth minus one slice.
    total = len(send_server.payload)
    assert (total - 500) / 10_000 <= sum(fake.sleeps) <= total / 10_000
    assert fake.now == pytest.approx(sum(fake.sleeps))


async def test_schedule_runs_in_order(
    echo_server: TcpServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    fake = FakeTime()
    schedule = parse_schedule(
        json.dumps([{"at": 2, "heal": True}, {"at": 1, "partition": True}, {"at": 3, "faults": {"drop": 1}}])
    )
    proxy = await make_proxy(echo_server.port, schedule=schedule, sleep=fake.sleep, clock=fake.clock)
    async with asyncio.timeout(HANG_GUARD):
        await proxy.wait_until(lambda: proxy.faults.drop == 1)
    assert [(e.kind, e.t) for e in proxy.events] == [("partition", 1), ("heal", 2), ("set_faults", 3)]


async def test_unreachable_target_resets_the_client(make_proxy: Callable[..., Awaitable[ChaosProxy]]) -> None:
    # A port bound but never listening refuses connections, and nothing else can take it meanwhile (a
    # closed port could be reused by another process's listener on a busy machine).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        proxy = await make_proxy(port)
        async with asyncio.timeout(HANG_GUARD):
            reader, writer = await connect(proxy)
            with pytest.raises(ConnectionResetError):
                await read_all(reader)
            writer.close()
    assert proxy.count("upstream_unreachable") == 1


# ---- WebSocket through the proxy: the reason it exists ---------------------------------------------------


async def test_websocket_passes_through(
    ws_server: WsServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    proxy = await make_proxy(ws_server.port)
    async with (
        asyncio.timeout(HANG_GUARD),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{proxy.port}/sync") as ws,
    ):
        await ws.send_bytes(b"send big")
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == ws_server.big


async def test_websocket_reset_mid_message_then_server_serves_others(
    ws_server: WsServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    # After the ~400-byte handshake, inside the 100 KiB message the server sends back.
    faults = Faults(reset=1.0, kill_min=2000, kill_window=60_000, cut_mid_message=True)
    proxy = await make_proxy(ws_server.port, faults=faults, seed=3)
    async with asyncio.timeout(HANG_GUARD), aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{proxy.port}/sync") as ws:
            await ws.send_bytes(b"send big")
            msg = await ws.receive()
            # A torn frame is never delivered as a message: the client sees the connection fail.
            assert msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE)
        assert proxy.count("reset") == 1
        proxy.set_faults(reset=0.0)
        async with http.ws_connect(f"http://127.0.0.1:{proxy.port}/sync") as ws:
            await ws.send_bytes(b"again")
            msg = await ws.receive()
            assert msg.data == b"again"
    assert ws_server.messages == [b"send big", b"again"]


async def test_websocket_bandwidth_cap_delivers_intact(
    ws_server: WsServer, make_proxy: Callable[..., Awaitable[ChaosProxy]]
) -> None:
    fake = FakeTime()
    proxy = await make_proxy(
        ws_server.port, faults=Faults(bandwidth=10_000), sleep=fake.sleep, clock=fake.clock
    )
    async with (
        asyncio.timeout(HANG_GUARD),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{proxy.port}/sync") as ws,
    ):
        await ws.send_bytes(b"send big")
        msg = await ws.receive()
        assert msg.data == ws_server.big
    assert sum(fake.sleeps) >= (len(ws_server.big) - 500) / 10_000


# ---- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(drop=1.5),
        dict(reset=-0.1),
        dict(reset=0.6, cut=0.6),
        dict(kill_window=0),
        dict(kill_min=10, kill_window=5),
        dict(stall_max=-1),
        dict(bandwidth=0),
        dict(drop=True),
        dict(cut_mid_message=1),
    ],
)
def test_rejects_bad_faults(kwargs: dict[str, object]) -> None:
    with pytest.raises(ChaosConfigError):
        Faults(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "{}",
        "[1]",
        '[{"at": -1, "heal": true}]',
        '[{"heal": true}]',
        '[{"at": 1}]',
        '[{"at": 1, "heal": true, "partition": true}]',
        '[{"at": 1, "faults": {"bogus": 1}}]',
        '[{"at": 1, "faults": {"drop": 2}}]',
        '[{"at": 1, "heal": true, "x": 1}]',
    ],
)
def test_rejects_bad_schedules(text: str) -> None:
    with pytest.raises(ChaosConfigError):
        parse_schedule(text)


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_hostport("[::1]:9") == ("::1", 9)
    for bad in ("8080", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ChaosConfigError):
            parse_hostport(bad)


async def test_a_proxy_pointed_at_itself_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = ChaosProxy(("127.0.0.1", port), listen=("127.0.0.1", port))
    with pytest.raises(ChaosConfigError, match="proxy itself"):
        await proxy.start()
