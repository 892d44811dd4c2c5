"""collector.feed.websocket.PicowsConnection over real loopback sockets: the simulator, and a scripted picows server.

What the feed relies on: every frame the exchange sent arrives, in order; a dropped connection ends the
read so the handler reconnects; a stalled one is caught by the watchdog; malformed frames still reach the
handler as text; server pings are answered; fragmented and large messages are reassembled; close codes and
TLS behave like websockets'.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptofeed.exceptions import ConnectionClosed
from helpers import wait_for
from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from collector.feed import cryptofeed_adapter as exchange
from collector.feed.cryptofeed_adapter import SupervisedConnection, WSConnection
from collector.feed.cryptofeed_feed import bind_feed_class
from collector.feed.endpoints import Endpoints
from collector.feed.websocket import PicowsConnection
from exchange_sim import SimConfig, run_in_thread

OPTIONS = {"ping_interval": 20, "ping_timeout": 60, "max_size": None, "max_queue": 1024, "compression": None}


@pytest.fixture
def sim():
    h = run_in_thread(SimConfig(port=0, symbols=12, rate=3000, speed=1, seed=5, ping_interval_s=0.2,
                                pong_timeout_s=0.6))
    try:
        yield h
    finally:
        h.stop()


def _url(sim) -> str:
    syms = sorted(sim.truth(klines=False)["symbols"])
    return f"{sim.ws_url}/market/stream?streams=" + "/".join(f"{s.lower()}@aggTrade" for s in syms)


class Recorder:
    """Handler that keeps aggTrade ids per symbol and counts frames that are not JSON."""

    def __init__(self) -> None:
        self.ids: dict[str, list[int]] = {}
        self.frames = 0
        self.bad = 0
        self.types: set[type] = set()

    async def __call__(self, msg: str, conn: object, ts: float) -> None:
        self.frames += 1
        self.types.add(type(msg))
        try:
            data = json.loads(msg)["data"]
        except (ValueError, KeyError, TypeError):
            self.bad += 1
            return
        self.ids.setdefault(data["s"], []).append(data["a"])


async def _nothing(conn: object) -> None:
    return None


async def _supervised(conn: PicowsConnection, handler: Callable, body: Callable, timeout: float = 30) -> None:
    """Run `conn` under SupervisedConnection while `body(handler_obj)` (a coroutine function) runs."""
    stop = asyncio.Event()
    sup = SupervisedConnection(conn, _nothing, handler, timeout=timeout, timeout_interval=0.1, stop=stop)
    task = asyncio.create_task(sup.run())
    try:
        await body(sup)
    finally:
        stop.set()
        await sup.request_stop()
        await asyncio.wait_for(task, 10)


def _truth_conns(sim) -> list[dict]:
    return sim.truth(klines=False)["connections"]


def test_every_sent_frame_arrives_in_order(sim) -> None:
    rec = Recorder()
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)

    async def body(sup) -> None:
        await asyncio.to_thread(wait_for, lambda: rec.frames > 3000, 20, "3000 frames")
        sim.pause()
        sent = sum(c["frames"] for c in _truth_conns(sim))
        await asyncio.to_thread(wait_for, lambda: rec.frames >= sent, 10, f"all {sent} frames")
        assert rec.frames == sent == conn.stats.received

    asyncio.run(_supervised(conn, rec, body))
    truth = sim.truth(klines=False)
    assert conn.stats.connects == 1 and len(truth["connections"]) == 1
    sent_per_symbol = {s.split("@")[0].upper(): n for s, n in truth["connections"][0]["sent"].items()}
    for sym, ids in rec.ids.items():
        assert len(ids) == sent_per_symbol[sym], sym
        assert ids == list(range(ids[0], ids[0] + len(ids))), f"{sym}: ids out of order or missing"
        assert ids[-1] == truth["symbols"][sym]["agg_ids"]["last"]
    assert rec.bad == 0 and rec.types == {str}


def test_pings_answered_beyond_the_pong_timeout(sim) -> None:
    """The simulator pings every 0.2 s and cuts a connection whose pong is 0.6 s late."""
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)
    rec = Recorder()

    def last_pong() -> float:
        return sim.call(lambda: max([p.ws.last_pong for p in sim.sim.protos.values()] or [0.0]))

    async def body(sup) -> None:
        start = sim.call(time.monotonic)  # the simulator's pong clock, not ours
        await asyncio.to_thread(wait_for, lambda: last_pong() > start + 1.5, 20, "a pong 1.5 s after start")

    asyncio.run(_supervised(conn, rec, body))
    truth = sim.truth(klines=False)
    assert not [f for f in truth["faults"] if f["kind"] == "pong_timeout"]
    assert conn.stats.connects == 1


def test_reconnects_after_drop_and_data_resumes(sim) -> None:
    rec = Recorder()
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)
    monkey_delay = exchange.RECONNECT_DELAY_INITIAL
    exchange.RECONNECT_DELAY_INITIAL = 0.05  # the reconnect is what is tested, not the backoff
    try:
        async def body(sup) -> None:
            await asyncio.to_thread(wait_for, lambda: rec.frames > 500, 20, "frames before the drop")
            assert sim.drop_all() == 1
            await asyncio.to_thread(wait_for, lambda: conn.stats.connects >= 2, 20, "a reconnect")
            before = rec.frames
            await asyncio.to_thread(wait_for, lambda: rec.frames > before + 500, 20, "frames after the drop")

        asyncio.run(_supervised(conn, rec, body))
    finally:
        exchange.RECONNECT_DELAY_INITIAL = monkey_delay
    for sym, ids in rec.ids.items():
        assert all(b > a for a, b in zip(ids, ids[1:], strict=False)), f"{sym}: ids went backwards"


def test_stall_is_detected_by_the_watchdog(sim) -> None:
    rec = Recorder()
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)

    async def body(sup) -> None:
        await asyncio.to_thread(wait_for, lambda: rec.frames > 200, 20, "frames before the stall")
        sim.stall(None, True)
        await asyncio.to_thread(wait_for, lambda: conn.stats.watchdog_trips >= 1, 20, "the watchdog")
        await asyncio.to_thread(wait_for, lambda: conn.stats.connects >= 2, 20, "a reconnect")
        before = rec.frames
        await asyncio.to_thread(wait_for, lambda: rec.frames > before + 200, 20, "frames after the stall")

    asyncio.run(_supervised(conn, rec, body, timeout=1.0))


def test_malformed_frames_reach_the_handler_as_text(sim) -> None:
    rec = Recorder()
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)

    async def body(sup) -> None:
        await asyncio.to_thread(wait_for, lambda: rec.frames > 100, 20, "frames")
        sim.set_malformed_rate(0.05, "malformed")
        await asyncio.to_thread(wait_for, lambda: rec.bad >= 20, 20, "malformed frames")
        sim.pause()
        sent = sum(c["frames"] for c in _truth_conns(sim))
        await asyncio.to_thread(wait_for, lambda: rec.frames >= sent, 10, f"all {sent} frames")

    asyncio.run(_supervised(conn, rec, body))
    truth = sim.truth(klines=False)
    assert rec.bad == truth["injected"]["malformed"] > 0
    assert conn.stats.connects == 1 and rec.types == {str}


def test_feed_class_uses_picows_by_default_and_websockets_on_request() -> None:
    ep = Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1")
    assert bind_feed_class(ep).ws_connection_class is PicowsConnection
    assert bind_feed_class(ep, ws_client="websockets").ws_connection_class is WSConnection
    with pytest.raises(ValueError):
        bind_feed_class(ep, ws_client="aiohttp")
    with pytest.raises(TypeError):
        PicowsConnection("ws://127.0.0.1:1/x", "T", max_sise=1)


# --- a scripted picows server: what the simulator never sends ------------------------------------------------


class Script(WSListener):
    def __init__(self, steps: Callable[[WSTransport], None]) -> None:
        super().__init__()
        self.steps = steps
        self.pongs: list[bytes] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.steps(transport)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # noqa: ANN001
        if frame.msg_type == WSMsgType.PONG:
            self.pongs.append(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()


async def _serve(steps: Callable[[WSTransport], None], ssl_ctx: ssl.SSLContext | None = None):
    listeners: list[Script] = []

    def factory(req: WSUpgradeRequest) -> Script:
        listeners.append(Script(steps))
        return listeners[-1]

    server = await ws_create_server(factory, "127.0.0.1", 0, ssl=ssl_ctx)
    return server, server.sockets[0].getsockname()[1], listeners


async def _read_all(conn: PicowsConnection) -> list[str | bytes]:
    await conn._open()
    out: list[str | bytes] = []
    try:
        async for msg in conn.read():
            out.append(msg)
    finally:
        await conn.close()
    return out


BIG = ("x" * 7_000_000).encode()


def _fragmented_then(code: WSCloseCode) -> Callable[[WSTransport], None]:
    def steps(t: WSTransport) -> None:
        t.send(WSMsgType.TEXT, b'{"a":', fin=False)
        t.send_ping(b"mid-message")  # control frames may interleave with fragments (RFC 6455 5.4)
        t.send(WSMsgType.CONTINUATION, b'1', fin=False)
        t.send(WSMsgType.CONTINUATION, b'}', fin=True)
        t.send(WSMsgType.TEXT, BIG)
        t.send(WSMsgType.BINARY, b"\x00\x01")
        t.send(WSMsgType.TEXT, b"\xff\xfebad utf-8")
        t.send(WSMsgType.TEXT, b"last")
        t.send_close(code)
    return steps


def test_fragments_large_payloads_ping_and_orderly_close() -> None:
    async def main() -> tuple[list, list]:
        server, port, listeners = await _serve(_fragmented_then(WSCloseCode.OK))
        async with server:
            msgs = await _read_all(PicowsConnection(f"ws://127.0.0.1:{port}/x", "T", **OPTIONS))
        return msgs, listeners[0].pongs

    msgs, pongs = asyncio.run(main())
    assert msgs[0] == '{"a":1}'
    assert msgs[1] == BIG.decode() and msgs[2] == b"\x00\x01"
    assert msgs[3].endswith("bad utf-8") and msgs[4] == "last" and len(msgs) == 5
    assert pongs == [b"mid-message"]


def test_close_with_an_error_code_raises_connection_closed() -> None:
    async def main() -> list:
        server, port, _ = await _serve(_fragmented_then(WSCloseCode.INTERNAL_ERROR))
        async with server:
            return await _read_all(PicowsConnection(f"ws://127.0.0.1:{port}/x", "T", **OPTIONS))

    with pytest.raises(ConnectionClosed, match="1011"):
        asyncio.run(main())


def test_protocol_violation_raises_connection_closed() -> None:
    def steps(t: WSTransport) -> None:
        t.send(WSMsgType.CONTINUATION, b"no start", fin=True)

    async def main() -> list:
        server, port, _ = await _serve(steps)
        async with server:
            return await _read_all(PicowsConnection(f"ws://127.0.0.1:{port}/x", "T", **OPTIONS))

    with pytest.raises(ConnectionClosed, match="continuation"):
        asyncio.run(main())


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "k.pem"),
                    "-out", str(d / "c.pem")], check=True, capture_output=True)
    return d / "c.pem", d / "k.pem"


def test_wss_verifies_with_the_default_context_and_works_with_a_trusted_one(tls) -> None:
    cert, key = tls
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> list:
        server, port, _ = await _serve(_fragmented_then(WSCloseCode.OK), server_ctx)
        async with server:
            with pytest.raises(ssl.SSLCertVerificationError):  # default context: system CAs only
                await PicowsConnection(f"wss://127.0.0.1:{port}/x", "T", **OPTIONS)._open()
            return await _read_all(PicowsConnection(f"wss://127.0.0.1:{port}/x", "T", ssl=client_ctx, **OPTIONS))

    msgs = asyncio.run(main())
    assert msgs[0] == '{"a":1}' and msgs[-1] == "last" and len(msgs) == 5


# --- a read that ends with a control frame ----------------------------------------------------------------
# picows marks the last frame of each socket read (`last_in_buffer`) and the session hands a read's messages
# over on that mark. A ping or pong answered inside picows never reached the session, so messages read
# together with a trailing ping/pong waited for the next data frame: on a quiet stream, indefinitely.


async def _first_batch_after(steps: Callable[[WSTransport], None], on_ping: bool, ping_interval: float) -> list:
    """Open a PicowsConnection to a scripted server and return the first batch its feed handler gets (or
    fail after 5 s); `steps` runs on connect, or on each client ping when `on_ping`."""
    got: asyncio.Queue[list] = asyncio.Queue()

    class Server(Script):
        def on_ws_connected(self, transport: WSTransport) -> None:
            if not on_ping:
                self.steps(transport)

        def on_ws_frame(self, transport: WSTransport, frame) -> None:  # noqa: ANN001
            if on_ping and frame.msg_type == WSMsgType.PING:
                self.steps(transport)
            else:
                super().on_ws_frame(transport, frame)

    server = await ws_create_server(lambda req: Server(steps), "127.0.0.1", 0, enable_auto_pong=False)
    port = server.sockets[0].getsockname()[1]
    async with server:
        conn = PicowsConnection(f"ws://127.0.0.1:{port}/x", "T", **{**OPTIONS, "ping_interval": ping_interval})
        await conn._open()
        task = asyncio.create_task(conn.deliver_batches(lambda msgs, c, ts: got.put_nowait(list(msgs))))
        try:
            return await asyncio.wait_for(got.get(), 5)
        finally:
            await conn.close()
            await asyncio.wait_for(task, 5)


def test_messages_read_with_a_trailing_server_ping_are_handed_over_at_once() -> None:
    # Both frames are written in one callback of the server, which shares the client's loop: the client's
    # next read takes both, the ping last.
    def steps(t: WSTransport) -> None:
        t.send(WSMsgType.TEXT, b'{"liq":1}')
        t.send_ping(b"keepalive")

    assert asyncio.run(_first_batch_after(steps, on_ping=False, ping_interval=20)) == ['{"liq":1}']


def test_messages_read_with_a_trailing_pong_are_handed_over_at_once() -> None:
    # The client pings after 0.2 s of silence; the server answers with a message and the pong in one read.
    def steps(t: WSTransport) -> None:
        t.send(WSMsgType.TEXT, b'{"kline":1}')
        t.send_pong(b"")

    assert asyncio.run(_first_batch_after(steps, on_ping=True, ping_interval=0.2)) == ['{"kline":1}']
