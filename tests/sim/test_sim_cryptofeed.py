"""The real cryptofeed BinanceFutures client against the simulator: every event the truth says was sent
to its connections must reach its callbacks, per symbol and type."""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter

import pytest
from cryptofeed.defines import CANDLES, FUNDING, LIQUIDATIONS, OPEN_INTEREST, TRADES
from simhelpers import await_for, feed_class, http_get

from exchange_sim import SimConfig, launch_subprocess

SYMBOLS = 496


def _post(url: str) -> None:
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()


def _sent_per_symbol(truth: dict) -> dict[str, Counter]:
    """Events written to all WebSocket connections, by our callback kinds and exchange symbol."""
    kinds = {"aggTrade": TRADES, "markPrice": FUNDING, "forceOrder": LIQUIDATIONS, "kline_1m": CANDLES}
    out = {k: Counter() for k in kinds.values()}
    for conn in truth["connections"]:
        for stream, n in conn["sent"].items():
            sym, _, kind = stream.partition("@")
            if kind in kinds:
                out[kinds[kind]][sym.upper()] += n
    return out


@pytest.mark.timeout(120)
def test_cryptofeed_counts_match_truth():
    # Subprocess: the simulator gets its own interpreter, so the client's parsing cost cannot starve it.
    # speed 20: a sim minute is 3 wall seconds, so several 1m klines close within the test.
    proc = launch_subprocess(SimConfig(port=0, symbols=SYMBOLS, rate=100, speed=20, seed=11))
    try:
        asyncio.run(_run(proc))
    finally:
        proc.stop()


async def _run(proc) -> None:
    got = {k: Counter() for k in (TRADES, FUNDING, LIQUIDATIONS, CANDLES, OPEN_INTEREST)}

    async def on_trade(t, ts):
        got[TRADES][t.raw["s"]] += 1

    async def on_funding(f, ts):
        got[FUNDING][f.raw["s"]] += 1

    async def on_liq(liq, ts):
        got[LIQUIDATIONS][liq.raw["o"]["s"]] += 1

    async def on_candle(c, ts):
        got[CANDLES][c.raw["s"]] += 1

    async def on_oi(oi, ts):
        got[OPEN_INTEREST][oi.raw["symbol"]] += 1

    status, _, info = await asyncio.to_thread(http_get, proc.rest_url + "/fapi/v1/exchangeInfo")
    names = [s["symbol"] for s in info["symbols"] if s["status"] == "TRADING" and s["quoteAsset"] == "USDT"
             and s["contractType"] == "PERPETUAL"]
    assert len(names) == SYMBOLS
    cls = feed_class(proc.rest_url, proc.ws_url)
    feed = cls(exchange_symbols=names, channels=[TRADES, FUNDING, LIQUIDATIONS, CANDLES, OPEN_INTEREST],
               callbacks={TRADES: on_trade, FUNDING: on_funding, LIQUIDATIONS: on_liq, CANDLES: on_candle,
                          OPEN_INTEREST: on_oi},
               candle_interval="1m", open_interest_interval=30.0)
    # (cryptofeed polls openInterest for every symbol back to back, one weight each, then sleeps
    # open_interest_interval: a short interval with 496 symbols trips Binance's 2400/min limit.)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        def truth():
            return http_get(proc.rest_url + "/_sim/truth?klines=0")[2]

        # Enough sent: both market connections open and every symbol has at least 2 closed klines on them.
        def enough():
            t = truth()
            conns = [c for c in t["connections"] if not c["closed"]]
            if len(conns) < 2:
                return False
            sent = _sent_per_symbol(t)
            return all(sent[CANDLES][s] >= 2 for s in names) and sum(sent[LIQUIDATIONS].values()) > 0
        await await_for(lambda: asyncio.to_thread(enough), 60, "two closed klines per symbol", poll=0.5)
        await asyncio.to_thread(_post, proc.rest_url + "/_sim/pause")
        t = await asyncio.to_thread(truth)
        sent = _sent_per_symbol(t)
        assert all(c["path"] == "/market/stream" for c in t["connections"])
        assert max(c["streams"] for c in t["connections"]) == 1024   # the long (20 KB+) URL was accepted

        def delivered() -> bool:
            return all(sum(got[k].values()) >= sum(sent[k].values()) for k in sent)
        await await_for(delivered, 30, "client to process every frame sent")
        for kind in (TRADES, FUNDING, LIQUIDATIONS, CANDLES):
            assert dict(got[kind]) == {s: n for s, n in sent[kind].items() if n}, kind
        assert sum(got[TRADES].values()) > 1000
        assert len(got[OPEN_INTEREST]) > 0
        assert sum(t["symbols"][s]["forceOrder"] for s in names) >= sum(sent[LIQUIDATIONS].values())
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=20)
        if not done:
            task.cancel()
