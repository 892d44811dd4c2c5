"""pause_reading / resume_reading on both connection classes, over real sockets to the simulator.

Each class has flow control of its own (picows: our session's message queue; websockets: its frame queue):
it pauses the socket when its queue is long and resumes it when the queue drains. Back-pressure must
outlast that: once paused, a connection reads nothing more until resumed, however empty its queue gets,
and after the resume every aggTrade arrives, in order, none missing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from helpers import wait_for
from test_wsfast import OPTIONS, Recorder, _supervised, _url

from collector.feed import websocket as wsfast
from collector.feed.cryptofeed_adapter import WSConnection
from collector.feed.websocket import PicowsConnection
from exchange_sim import SimConfig, run_in_thread


@pytest.fixture
def sim():
    h = run_in_thread(SimConfig(port=0, symbols=8, rate=3000, speed=1, seed=9))
    try:
        yield h
    finally:
        h.stop()


async def _until(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", ["picows", "websockets"])
def test_a_paused_connection_stays_paused_when_its_own_queue_drains(kind: str, sim,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # small queues, so that each library's own flow control pauses the socket within a fraction of a second
    monkeypatch.setattr(wsfast, "QUEUE_PAUSE_MESSAGES", 200)
    monkeypatch.setattr(wsfast, "QUEUE_RESUME_MESSAGES", 50)
    url = _url(sim)

    async def produced() -> int:
        t = await asyncio.to_thread(sim.truth, klines=False)
        return sum(v["aggTrade"] for v in t["symbols"].values())

    async def main() -> tuple[Recorder, int, int]:
        if kind == "picows":
            conn = PicowsConnection(url, "T", **OPTIONS)
        else:
            conn = WSConnection(url, "T", **{**OPTIONS, "max_queue": 64})
        await conn._open()
        if kind == "picows":
            def own_pause() -> bool:
                return conn._session.paused

            def queued() -> int:
                return conn._session.queued
        else:
            def own_pause() -> bool:
                return conn.conn.recv_messages.paused

            def queued() -> int:
                return len(conn.conn.recv_messages.frames)
        await _until(own_pause, 10, "the connection's own flow control to pause (nobody reads yet)")
        conn.pause_reading()
        rec = Recorder()

        async def consume() -> None:
            async for msg in conn.read():
                await rec(msg, conn, 0.0)
        reader = asyncio.create_task(consume())
        try:
            await _until(lambda: queued() == 0, 10, "the consumer to drain the connection's queue")
            held = rec.frames
            target = await produced() + 2 * 3000
            while await produced() < target:  # the exchange goes on producing for two seconds
                await asyncio.sleep(0.05)
            during = rec.frames - held
            conn.resume_reading()
            await _until(lambda: rec.frames > held + 3000, 10, "frames to flow again after the resume")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await conn.close()
        return rec, held, during

    rec, held, during = asyncio.run(main())
    assert held > 0 and during == 0  # not one frame read while paused, though the queue was empty
    for sym, ids in rec.ids.items():
        assert ids == list(range(ids[0], ids[0] + len(ids))), sym  # nothing lost across the pause


@pytest.mark.parametrize("kind", ["picows", "websockets"])
def test_the_watchdog_does_not_count_a_pause_as_silence(kind: str, sim) -> None:
    """cryptofeed's watchdog restarts a connection silent for `timeout`; a paused one is silent by choice."""
    url = _url(sim)
    conn = PicowsConnection(url, "T", **OPTIONS) if kind == "picows" else WSConnection(url, "T", **OPTIONS)
    rec = Recorder()

    async def produced() -> int:
        t = await asyncio.to_thread(sim.truth, klines=False)
        return sum(v["aggTrade"] for v in t["symbols"].values())

    async def body(sup) -> None:  # noqa: ANN001
        await _until(lambda: rec.frames > 100, 10, "frames")
        conn.pause_reading()
        target = await produced() + 2 * 3000
        while await produced() < target:  # two seconds: four times the watchdog's timeout
            await asyncio.sleep(0.05)
        assert conn.stats.watchdog_trips == 0 and conn.stats.reconnects == 0
        paused_at = rec.frames
        conn.resume_reading()
        await _until(lambda: rec.frames > paused_at + 3000, 10, "frames to flow again after the resume")
        assert conn.stats.watchdog_trips == 0 and conn.stats.reconnects == 0

    asyncio.run(_supervised(conn, rec, body, timeout=0.5))
    for sym, ids in rec.ids.items():
        assert ids == list(range(ids[0], ids[0] + len(ids))), sym


@pytest.mark.parametrize("kind", ["picows", "websockets"])
def test_a_connection_lost_while_paused_is_reopened_only_on_resume(kind: str, sim) -> None:
    """While paused the pong to our keepalive ping is not read, so a long pause costs the connection; a new
    one would not be read either, so the reconnect waits for the resume."""
    url = _url(sim)
    opts = {**OPTIONS, "ping_interval": 0.3, "ping_timeout": 0.3}
    conn = PicowsConnection(url, "T", **opts) if kind == "picows" else WSConnection(url, "T", **opts)
    rec = Recorder()

    def conns() -> list[dict]:
        return sim.truth(klines=False)["connections"]

    async def body(sup) -> None:  # noqa: ANN001
        await _until(lambda: rec.frames > 100, 10, "frames")
        conn.pause_reading()
        await asyncio.to_thread(wait_for, lambda: not conn.is_open, 20, "the keepalive to give up on the connection")
        lost_at = len(conns())
        target = sum(v["aggTrade"] for v in sim.truth(klines=False)["symbols"].values()) + 3000
        await asyncio.to_thread(wait_for, lambda: sum(v["aggTrade"] for v in sim.truth(klines=False)["symbols"].values())
                                >= target, 10, "the exchange to go on for a second")
        assert len(conns()) == lost_at and not conn.is_open  # no new connection while paused
        frames = rec.frames
        conn.resume_reading()
        await _until(lambda: rec.frames > frames + 1000, 20, "a new connection, read")
        assert len(conns()) == lost_at + 1

    asyncio.run(_supervised(conn, rec, body, timeout=30))
