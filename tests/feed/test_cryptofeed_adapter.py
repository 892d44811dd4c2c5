"""The exchange client side: cryptofeed's BinanceFutures bound to the simulator over real sockets.

What a months-long collector needs from its connections: a bad frame is counted and skipped without
dropping the connection (and its hundreds of streams), a connection that goes silent -- or never
delivers at all -- is restarted, and reconnecting never gives up.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter

import pytest
from cryptofeed.defines import LIQUIDATIONS, TRADES
from cryptofeed.feed import Feed
from helpers import wait_for

from collector.feed import cryptofeed_adapter as exchange
from collector.feed.cryptofeed_adapter import SupervisedConnection, WSConnection
from collector.feed.cryptofeed_feed import CollectorBinanceFutures, bind_feed_class
from collector.feed.endpoints import Endpoints
from collector.feed.source import FastBinanceFutures
from collector.feed.wire import AggTrade
from collector.pipeline.limits import WeightBudget
from exchange_sim import SimConfig, run_in_thread


@pytest.fixture
def sim():
    h = run_in_thread(SimConfig(port=0, symbols=20, rate=200, speed=1, seed=3))
    try:
        yield h
    finally:
        h.stop()


class CountingSink:
    """The smallest EventSink: counts what arrives."""

    def __init__(self) -> None:
        self.trades: Counter[str] = Counter()
        self.bad: Counter[str] = Counter()
        self.ids: dict[str, list[int]] = {}

    def on_trade(self, t: AggTrade, receipt: float) -> None:
        self.trades[t.s] += 1
        self.ids.setdefault(t.s, []).append(t.a)

    def on_mark_price(self, m, receipt) -> None: ...  # noqa: ANN001
    def on_liquidation(self, f, receipt) -> None: ...  # noqa: ANN001
    def on_kline(self, k, receipt) -> None: ...  # noqa: ANN001
    def on_open_interest(self, oi, receipt) -> None: ...  # noqa: ANN001

    def on_bad_frame(self, kind: str) -> None:
        self.bad[kind] += 1

    def on_stream_lost(self) -> None:
        self.lost = getattr(self, "lost", 0) + 1  # a connection carrying liquidations ended


async def _run_until(feed, stop: asyncio.Event, pred, timeout: float, what: str) -> None:
    task = asyncio.create_task(feed.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred():
            assert not task.done(), f"feed stopped early: {task.exception() if not task.cancelled() else 'cancelled'}"
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def _symbols(sim) -> list[str]:
    return sorted(sim.truth(klines=False)["symbols"])


def test_bad_frames_are_counted_and_skipped_without_reconnecting(sim) -> None:
    sink = CountingSink()
    stop = asyncio.Event()
    cls = bind_feed_class(Endpoints(sim.rest_url, sim.ws_url), FastBinanceFutures)
    feed = cls(exchange_symbols=_symbols(sim), channels=[TRADES], sink=sink, stop_event=stop)
    sim.set_malformed_rate(0.02, "malformed")

    async def main() -> None:
        await _run_until(feed, stop, lambda: sink.bad["malformed_json"] >= 5 and sum(sink.trades.values()) > 500,
                         30, "malformed frames and trades")

    asyncio.run(main())
    conns = feed.connections
    assert len(conns) == 1
    assert conns[0].conn.stats.connects == 1, "a bad frame must not cost the connection"
    assert feed.frame_errors.counts["malformed_json"] == sink.bad["malformed_json"]
    # every trade that did arrive is in order per symbol: nothing was lost around the bad frames
    for ids in sink.ids.values():
        assert ids == sorted(ids)


def test_stock_cryptofeed_path_also_survives_bad_frames(sim) -> None:
    got: Counter[str] = Counter()

    async def on_trade(t, receipt) -> None:  # noqa: ANN001
        got[t.symbol] += 1

    async def boom(t, receipt) -> None:  # noqa: ANN001
        if got.total() % 50 == 0:
            raise RuntimeError("a failing callback")

    stop = asyncio.Event()
    cls = bind_feed_class(Endpoints(sim.rest_url, sim.ws_url), CollectorBinanceFutures)
    feed = cls(exchange_symbols=_symbols(sim), channels=[TRADES], callbacks={TRADES: [on_trade, boom]})
    sim.set_malformed_rate(0.02, "malformed")
    asyncio.run(_run_until(feed, stop, lambda: feed.frame_errors.total >= 10 and got.total() > 300, 30,
                           "errors and trades"))
    assert feed.frame_errors.counts["RuntimeError"] >= 1  # the failing callback
    assert feed.frame_errors.total - feed.frame_errors.counts["RuntimeError"] >= 1  # the malformed frames
    assert feed.connections[0].conn.stats.connects == 1


def test_cryptofeeds_own_run_prepares_the_collectors_feed_class(sim) -> None:
    # bench/peer.py's stock peer: the collector's feed class on cryptofeed's own Feed._run (its connections
    # and backends). Renaming the preparation once left that path subscribing to nothing.
    got: Counter[str] = Counter()

    async def on_trade(t, receipt) -> None:  # noqa: ANN001
        got[t.symbol] += 1

    bound = bind_feed_class(Endpoints(sim.rest_url, sim.ws_url), CollectorBinanceFutures, ws_client="websockets")

    class OnCryptofeedsRun(bound):  # type: ignore[misc, valid-type]
        _run = Feed._run

    symbols = _symbols(sim)
    feed = OnCryptofeedsRun(exchange_symbols=symbols, channels=[TRADES], callbacks={TRADES: [on_trade]})
    asyncio.run(_run_until(feed, asyncio.Event(), lambda: len(got) == len(symbols), 30, "trades of every symbol"))


def test_stalled_connection_is_restarted_and_data_resumes(sim) -> None:
    sink = CountingSink()
    stop = asyncio.Event()
    cls = bind_feed_class(Endpoints(sim.rest_url, sim.ws_url), FastBinanceFutures)
    feed = cls(exchange_symbols=_symbols(sim), channels=[TRADES], sink=sink, stop_event=stop,
               timeout=1.5, timeout_interval=0.25)

    async def main() -> None:
        task = asyncio.create_task(feed.run(stop))
        try:
            await asyncio.to_thread(wait_for, lambda: sum(sink.trades.values()) > 100, 30, "first trades")
            sim.stall(None, True)  # the socket stays open, nothing more is sent on it
            conn = feed.connections[0].conn
            await asyncio.to_thread(wait_for, lambda: conn.stats.watchdog_trips >= 1, 15, "the watchdog to trip")
            before = sum(sink.trades.values())
            await asyncio.to_thread(wait_for, lambda: conn.stats.connects >= 2 and sum(sink.trades.values()) > before + 100,
                                    20, "a new connection delivering trades")
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    asyncio.run(main())


def test_a_lost_liquidation_stream_is_reported_once_per_session_and_not_at_stop(sim) -> None:
    """The sink hears of a connection carrying liquidations that the watchdog closed (its hole, recorded by
    collector.pipeline.liquidation_holes), once; not of the stop, which loses nothing."""
    sink = CountingSink()
    stop = asyncio.Event()
    cls = bind_feed_class(Endpoints(sim.rest_url, sim.ws_url), FastBinanceFutures)
    feed = cls(exchange_symbols=_symbols(sim), channels=[TRADES, LIQUIDATIONS], sink=sink, stop_event=stop,
               timeout=1.5, timeout_interval=0.25)

    async def main() -> None:
        task = asyncio.create_task(feed.run(stop))
        try:
            await asyncio.to_thread(wait_for, lambda: sum(sink.trades.values()) > 100, 30, "first trades")
            assert getattr(sink, "lost", 0) == 0
            sim.stall(None, True)
            conn = feed.connections[0].conn
            before = sum(sink.trades.values())
            await asyncio.to_thread(wait_for, lambda: conn.stats.connects >= 2 and sum(sink.trades.values()) > before + 100,
                                    20, "a new connection delivering trades")
            assert sink.lost == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    asyncio.run(main())
    assert sink.lost == 1


def test_connection_that_never_delivers_is_noticed(sim) -> None:
    """A subscription the server accepts but never serves (what Binance's 2026 URL change did)."""
    received: list[str] = []

    async def handler(msg, conn, ts) -> None:  # noqa: ANN001
        received.append(msg)

    async def subscribe(conn) -> None:  # noqa: ANN001
        return None

    async def main() -> int:
        stop = asyncio.Event()
        conn = WSConnection(f"{sim.ws_url}/market/stream?streams=nosuchusdt@aggTrade", "TEST")
        handler_ = SupervisedConnection(conn, subscribe, handler, timeout=1.0, timeout_interval=0.2, stop=stop)
        task = asyncio.create_task(handler_.run())
        try:
            await asyncio.to_thread(wait_for, lambda: conn.stats.watchdog_trips >= 2, 15, "silence to be noticed twice")
        finally:
            stop.set()
            await handler_.request_stop()
            await asyncio.wait_for(task, 10)
        return conn.stats.connects

    connects = asyncio.run(main())
    assert connects >= 2
    assert received == []


@pytest.mark.parametrize(("client", "batched"), [("websockets", False), ("picows", False), ("picows", True)])
def test_a_stop_while_connecting_ends_the_session_that_opens_afterwards(sim, client: str, batched: bool) -> None:
    """request_stop() while a (re)connect is still opening finds nothing open to close; the session that
    opens after it must end at once rather than wait on its streams: a silent one (here: a symbol the
    server never serves) would hold the feed's stop forever, since the watchdog stops watching too."""
    opening, release = asyncio.Event(), asyncio.Event()  # bound to the loop that first waits on them

    class Gated(exchange.ws_connection_class(client)):  # type: ignore[misc]
        async def _open(self) -> None:
            opening.set()
            await release.wait()
            await super()._open()

    async def handler(msg, conn, ts) -> None:  # noqa: ANN001
        raise AssertionError("nothing is served on this stream")

    def batch_handler(messages, conn, ts) -> None:  # noqa: ANN001
        raise AssertionError("nothing is served on this stream")

    async def subscribe(conn) -> None:  # noqa: ANN001
        return None

    async def main() -> Gated:
        stop = asyncio.Event()
        conn = Gated(f"{sim.ws_url}/market/stream?streams=nosuchusdt@aggTrade", "TEST")
        handler_ = SupervisedConnection(conn, subscribe, handler, timeout=60, timeout_interval=60, stop=stop,
                                        batch_handler=batch_handler if batched else None)
        task = asyncio.create_task(handler_.run())
        await opening.wait()
        stop.set()
        await handler_.request_stop()
        release.set()
        await asyncio.wait_for(task, 10)
        return conn

    conn = asyncio.run(main())
    assert conn.connects == 1  # the session did open (after the stop), and was not reconnected
    assert not conn.is_open


def test_reconnects_without_giving_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """More failed attempts than cryptofeed's default 10 retries, then the exchange comes back."""
    monkeypatch.setattr(exchange, "RECONNECT_DELAY_CAP", 0.05)  # keep the test short; the cap is what is tested
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attempts: list[float] = []

    class Counting(WSConnection):
        async def _open(self) -> None:
            attempts.append(asyncio.get_running_loop().time())
            await super()._open()

    received: list[str] = []
    lost: list[int] = []

    async def handler(msg, conn, ts) -> None:  # noqa: ANN001
        received.append(msg)

    async def subscribe(conn) -> None:  # noqa: ANN001
        return None

    async def main() -> None:
        stop = asyncio.Event()
        conn = Counting(f"ws://127.0.0.1:{port}/market/stream?streams=btcusdt@aggTrade", "TEST")
        handler_ = SupervisedConnection(conn, subscribe, handler, timeout=30, timeout_interval=1, stop=stop,
                                        on_lost=lambda: lost.append(len(attempts)))
        task = asyncio.create_task(handler_.run())
        sim = None
        try:
            await asyncio.to_thread(wait_for, lambda: len(attempts) >= 15, 20, "15 failed attempts")
            gaps = [b - a for a, b in zip(attempts[5:], attempts[6:], strict=False)]
            assert max(gaps) < 1.0, "backoff must be capped"
            assert lost == []  # attempts that never subscribed lost nothing: no hole per attempt
            sim = await asyncio.to_thread(run_in_thread, SimConfig(port=port, symbols=5, rate=50, seed=1))
            await asyncio.to_thread(wait_for, lambda: len(received) > 5, 20, "frames once the exchange is back")
        finally:
            stop.set()
            await handler_.request_stop()
            await asyncio.wait_for(task, 10)
            if sim is not None:
                await asyncio.to_thread(sim.stop)

    asyncio.run(main())


def test_one_rest_client_serves_every_http_connection_of_a_feed() -> None:
    """exchangeInfo and the open-interest poller borrow the worker's RestClient's session."""
    from collector.feed.endpoints import Endpoints
    from collector.feed.open_interest import OpenInterestPoll
    from collector.feed.rest_client import RestClient
    from collector.pipeline.limits import WeightBudget

    async def main() -> None:
        rest = RestClient()
        cls = bind_feed_class(Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1"), FastBinanceFutures)
        feed = cls(exchange_symbols=["BTCUSDT"], channels=[TRADES], sink=CountingSink(), rest=rest,
                   oi_symbols=["BTCUSDT"], oi_gate=WeightBudget(0.0))
        ((poll, _, _),) = feed._connect_rest()
        assert isinstance(poll, OpenInterestPoll)
        session = rest.session
        for conn in (feed.http_conn, poll):
            await conn._open()
            assert conn.conn is session
            await conn.close()  # the connection lets go; the session stays the client's
        assert not session.closed and rest.session is session
        await rest.close()
        assert session.closed

    asyncio.run(main())


class FirstTradeSink(CountingSink):
    """Also notes the receipt time (wall clock, s) of the first trade."""

    first_receipt: float | None = None

    def on_trade(self, t: AggTrade, receipt: float) -> None:
        if self.first_receipt is None:
            self.first_receipt = receipt
        super().on_trade(t, receipt)


def test_a_rate_limited_exchange_info_pauses_rest_and_the_start_waits_it_out(sim) -> None:
    """A worker starting while the IP is rate limited: its exchangeInfo's 429 goes to the shared REST budget (which
    every worker then honours) and the start asks again only once the Retry-After has passed; it used to die on
    the answer and be restarted a second later, asking again."""
    t0 = time.time() * 1000
    budget = WeightBudget(t0)
    sink = FirstTradeSink()
    stop = asyncio.Event()
    cls = bind_feed_class(Endpoints(sim.rest_url, sim.ws_url), FastBinanceFutures)
    feed = cls(exchange_symbols=_symbols(sim), channels=[TRADES], sink=sink, stop_event=stop, oi_gate=budget)
    sim.set_rest_fault(429, 1, 0.0, 0.0, 2)  # the next REST answer (this exchangeInfo): 429, Retry-After 2 s
    asyncio.run(_run_until(feed, stop, lambda: sum(sink.trades.values()) > 50, 30, "trades after the pause"))
    assert budget.paused_until_ms >= t0 + 2000
    assert sink.first_receipt is not None and sink.first_receipt * 1000 >= budget.paused_until_ms


def test_a_start_waiting_out_a_ban_stops_when_asked(sim) -> None:
    budget = WeightBudget(time.time() * 1000)
    stop = asyncio.Event()
    cls = bind_feed_class(Endpoints(sim.rest_url, sim.ws_url), FastBinanceFutures)
    feed = cls(exchange_symbols=_symbols(sim), channels=[TRADES], sink=CountingSink(), stop_event=stop,
               oi_gate=budget)
    sim.set_rest_fault(418, 1, 0.0, 0.0, 600)  # banned for 10 minutes

    async def main() -> None:
        task = asyncio.create_task(feed.run(stop))
        await asyncio.to_thread(wait_for, lambda: budget.paused_until_ms > time.time() * 1000 + 500_000, 30,
                                "the ban to reach the budget")
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert feed.connections == []  # it never subscribed
