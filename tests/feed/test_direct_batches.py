"""SupervisedConnection over PicowsConnection with a batch handler: each socket read reaches the handler from
the socket's read callback (no queue, no task woken per read), over a real socket to the simulator.

What the feed relies on, kept from the queued path: every aggTrade the exchange sent arrives, in order,
none twice; each call carries one read's receipt time, never going backwards; the watchdog's
`last_message` is that time; a handler that raises ends the session (the connection is reopened and data
flows again) instead of escaping into picows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from helpers import wait_for
from test_wsfast import OPTIONS, _nothing, _url

from collector.feed import cryptofeed_adapter as exchange
from collector.feed.cryptofeed_adapter import SupervisedConnection
from collector.feed.websocket import PicowsConnection
from exchange_sim import SimConfig, run_in_thread


@pytest.fixture
def sim():
    h = run_in_thread(SimConfig(port=0, symbols=12, rate=3000, speed=1, seed=11))
    try:
        yield h
    finally:
        h.stop()


class BatchRecorder:
    """A feed's batch handler (a plain function of one read) that notes where and when it was called."""

    def __init__(self, conn: PicowsConnection) -> None:
        self.conn = conn
        self.ids: dict[str, list[int]] = {}
        self.frames = 0
        self.calls = 0
        self.in_task = 0  # calls made from inside an asyncio task (the queued path's reading task)
        self.receipts: list[float] = []
        self.stale_watchdog = 0  # calls during which last_message was not this read's receipt time
        self.raise_on_call: int | None = None

    def __call__(self, messages: Sequence[str | bytes], conn: object, receipt: float) -> None:
        self.calls += 1
        if asyncio.current_task() is not None:
            self.in_task += 1
        if self.conn.last_message != receipt:
            self.stale_watchdog += 1
        self.receipts.append(receipt)
        for msg in messages:
            self.frames += 1
            data = json.loads(msg)["data"]
            self.ids.setdefault(data["s"], []).append(data["a"])
        if self.raise_on_call == self.calls:
            raise RuntimeError("a handler bug")


async def _run(conn: PicowsConnection, rec: BatchRecorder, body) -> None:
    stop = asyncio.Event()

    async def per_message(msg: str, c: object, ts: float) -> None:
        raise AssertionError("the per-message handler is not used when a batch handler is given")

    sup = SupervisedConnection(conn, _nothing, per_message, timeout=30, timeout_interval=0.1, stop=stop,
                               batch_handler=rec)
    task = asyncio.create_task(sup.run())
    try:
        await body()
    finally:
        stop.set()
        await sup.request_stop()
        await asyncio.wait_for(task, 10)


def test_each_read_reaches_the_batch_handler_from_the_socket_callback_in_order(sim) -> None:
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)
    rec = BatchRecorder(conn)

    async def body() -> None:
        await asyncio.to_thread(wait_for, lambda: rec.calls > 300, 30, "300 reads handed over")

    asyncio.run(_run(conn, rec, body))
    # The subscription answers may be queued before the handler is installed (handed over from the task);
    # every later read comes from the read callback.
    assert rec.calls > 300 and rec.in_task <= 2, (rec.calls, rec.in_task)
    assert rec.stale_watchdog == 0
    assert rec.receipts == sorted(rec.receipts)
    assert len(rec.ids) == 12
    for sym, ids in rec.ids.items():
        assert ids == list(range(ids[0], ids[0] + len(ids))), sym  # in order, none lost, none twice


def test_a_handler_that_raises_ends_the_session_and_it_is_reopened(sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exchange, "RECONNECT_DELAY_INITIAL", 0.05)  # the reconnect is tested, not the backoff
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)
    rec = BatchRecorder(conn)
    rec.raise_on_call = 50

    async def body() -> None:
        await asyncio.to_thread(wait_for, lambda: conn.stats.connects >= 2, 20, "a reconnect after the raise")
        before = rec.frames
        await asyncio.to_thread(wait_for, lambda: rec.frames > before + 500, 20, "frames after the reconnect")

    asyncio.run(_run(conn, rec, body))
    assert rec.calls > 50
