"""cryptofeed's stock OKX and Bybit feeds against the simulator over a real socket: every trade, closed 1m
candle, funding, open interest and liquidation they parse equals the simulator's ground truth, value by value."""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from cryptofeed.defines import CANDLES, FUNDING, LIQUIDATIONS, OPEN_INTEREST, TRADES
from cryptofeed.exchanges import OKX, Bybit
from simhelpers import await_for, http_get, loopback_feed

from exchange_sim import SimConfig, launch_subprocess

SYMBOLS = 12
CHANNELS = [TRADES, FUNDING, LIQUIDATIONS, CANDLES, OPEN_INTEREST]


def _post(url: str) -> None:
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()


def _sent(truth: dict, prefix: str) -> Counter:
    """Frames written to all connections on keys starting with prefix, by symbol."""
    out: Counter = Counter()
    for conn in truth["connections"]:
        for key, n in conn["sent"].items():
            if key.startswith(prefix):
                out[key[len(prefix):]] += n
    return out


async def _drive(proc, cls, names: list[str], ready, received) -> dict:
    """Run the stock feed until ready(truth) holds, pause the simulator, wait until received(truth)."""
    got: dict[str, list] = defaultdict(list)

    def cb(kind):
        async def f(obj, ts):
            got[kind].append(obj)
        return f
    feed = loopback_feed(cls, proc.rest_url, proc.ws_url)(
        exchange_symbols=names, channels=CHANNELS, callbacks={k: cb(k) for k in CHANNELS}, candle_interval="1m")
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        def truth():
            return http_get(proc.rest_url + "/_sim/truth")[2]
        await await_for(lambda: asyncio.to_thread(lambda: ready(truth(), got)), 60, "enough sent", poll=0.5)
        await asyncio.to_thread(_post, proc.rest_url + "/_sim/pause")
        t = await asyncio.to_thread(truth)
        await await_for(lambda: received(t, got), 30, "client to process every frame sent")
        return {"truth": t, "got": got}
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=20)
        if not done:
            task.cancel()


def _by_symbol(rows: list[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        out[r[key]].append(r)
    return out


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    # cryptofeed writes its symbol cache under XDG_CACHE_HOME: keep the simulator's symbols out of the user's.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


@pytest.mark.timeout(150)
def test_okx_stock_feed_equals_truth(isolated_cache):
    proc = launch_subprocess(SimConfig(venue="okx", symbols=SYMBOLS, rate=60, speed=20, seed=5, truth_trades=True))
    try:
        _, _, inst = http_get(proc.rest_url + "/api/v5/public/instruments?instType=SWAP")
        names = [i["instId"] for i in inst["data"] if i["settleCcy"] == "USDT" and i["state"] == "live"]
        assert len(names) == SYMBOLS

        def ready(t, got):
            c = _sent(t, "candle1m:")
            return (all(c[s] >= 2 for s in names) and len(got[LIQUIDATIONS]) > 0
                    and sum(_sent(t, "funding-rate:").values()) >= SYMBOLS)

        def received(t, got):
            return (len(got[TRADES]) >= sum(_sent(t, "trades:").values())
                    and len([c for c in got[CANDLES] if c.closed]) >= sum(_sent(t, "candle1m:").values())
                    and len(got[FUNDING]) >= sum(_sent(t, "funding-rate:").values())
                    and len(got[OPEN_INTEREST]) >= sum(_sent(t, "open-interest:").values()))
        r = asyncio.run(_drive(proc, OKX, names, ready, received))
    finally:
        proc.stop()
    t, got = r["truth"], r["got"]
    assert all(c["path"] in ("/ws/v5/public", "/ws/v5/business") for c in t["connections"])
    # Trades: from each symbol's first received trade on, exactly the truth's trades, in order, as parsed.
    truth_trades = _by_symbol(t["trades"], "instId")
    parsed = _by_symbol([{"instId": x.raw["instId"], "tradeId": x.id, "px": x.raw["px"], "sz": x.raw["sz"],
                          "side": x.raw["side"], "ts": x.raw["ts"], "count": x.raw["count"]} for x in got[TRADES]],
                        "instId")
    assert set(parsed) == set(names)
    for s, rows in parsed.items():
        tail = [x for x in truth_trades[s] if int(x["tradeId"]) >= int(rows[0]["tradeId"])]
        assert rows == tail, s
        assert all(str(x.amount) == x.raw["sz"] and str(x.price) == x.raw["px"] for x in got[TRADES][:50])
    # Closed candles: each one is a truth row, and every row sent was received.
    closed = [c for c in got[CANDLES] if c.closed]
    truth_rows = {(k["instId"], tuple(k["candle"])) for k in t["klines"]}
    rows = [(c.raw["arg"]["instId"], tuple(c.raw["data"][0])) for c in closed]
    assert set(rows) <= truth_rows and len(rows) == len(set(rows)) == sum(_sent(t, "candle1m:").values())
    # Funding and open interest: every push parsed is a truth record, all of them arrived.
    for kind, key, prefix in ((FUNDING, "funding", "funding-rate:"), (OPEN_INTEREST, "open_interest", "open-interest:")):
        recs = [x.raw for x in got[kind]]
        # the truth's copy of a funding record also says which connections it was queued on ("to")
        sent = {s: [{k: v for k, v in r.items() if k != "to"} for r in rs] for s, rs in t[key].items()}
        assert all(rec in sent[rec["instId"]] for rec in recs), kind
        assert Counter(rec["instId"] for rec in recs) == +_sent(t, prefix), kind
    # compared as numbers: str() of a Decimal under 1e-6 is scientific ("1.00E-8" for "0.0000000100"), and the
    # simulator's rate, drifting with the clock, crosses zero
    assert all(f.rate == Decimal(f.raw["fundingRate"]) for f in got[FUNDING])
    # Liquidations (cryptofeed polls OKX's REST history for them): each equals a liquidation sent.
    liqs = {(x["instId"], x["side"], x["sz"], x["bkPx"], int(x["ts"])) for x in t["liquidations"]}
    parsed_liqs = [(x.symbol.replace("-PERP", "-SWAP"), x.side, str(x.quantity), str(x.price), int(x.timestamp * 1000))
                   for x in got[LIQUIDATIONS]]
    assert parsed_liqs and {p for p in parsed_liqs} <= liqs
    assert len(parsed_liqs) == len(set(parsed_liqs))


@pytest.mark.timeout(150)
def test_bybit_stock_feed_equals_truth(isolated_cache):
    proc = launch_subprocess(SimConfig(venue="bybit", symbols=SYMBOLS, rate=60, speed=20, seed=5, truth_trades=True))
    try:
        _, _, inst = http_get(proc.rest_url + "/v5/market/instruments-info?category=linear&limit=1000")
        names = [i["symbol"] for i in inst["result"]["list"] if i["quoteCoin"] == "USDT" and i["status"] == "Trading"
                 and i["contractType"] == "LinearPerpetual"]
        assert len(names) == SYMBOLS

        def ready(t, got):
            return (all(_sent(t, "kline.1.")[s] >= 2 for s in names) and sum(_sent(t, "allLiquidation.").values()) > 0)

        def received(t, got):
            return (len(got[TRADES]) >= sum(_sent(t, "publicTrade.").values())
                    and len([c for c in got[CANDLES] if c.closed]) >= sum(_sent(t, "kline.1.").values())
                    and len(got[LIQUIDATIONS]) >= sum(_sent(t, "allLiquidation.").values())
                    and len(got[FUNDING]) >= sum(_sent(t, "tickers.").values()))
        r = asyncio.run(_drive(proc, Bybit, names, ready, received))
    finally:
        proc.stop()
    t, got = r["truth"], r["got"]
    assert {c["path"] for c in t["connections"]} == {"/v5/public/linear"}
    keys = ("s", "i", "seq", "T", "S", "v", "p")
    truth_trades = _by_symbol(t["trades"], "s")
    parsed = _by_symbol([{k: x.raw[k] for k in keys} for x in got[TRADES]], "s")
    assert set(parsed) == set(names)
    for s, rows in parsed.items():  # from the first received on (`seq` is shared by pairs: find it by UUID)
        first = [x["i"] for x in truth_trades[s]].index(rows[0]["i"])
        assert [{**r, "T": int(r["T"]), "seq": int(r["seq"])} for r in rows] == truth_trades[s][first:], s
    assert all(x.id == x.raw["i"] and str(x.amount) == x.raw["v"] for x in got[TRADES])
    # Closed 1m klines: value for value.
    ckeys = ("start", "end", "open", "close", "high", "low", "volume", "turnover")
    truth_k = {(k["symbol"],) + tuple(str(k[c]) for c in ckeys) for k in t["klines"]}
    rows = [(c.symbol.replace("-USDT-PERP", "USDT"),) + tuple(str(c.raw[k]) for k in ckeys) for c in got[CANDLES]
            if c.closed]
    assert set(rows) <= truth_k and len(rows) == len(set(rows)) == sum(_sent(t, "kline.1.").values())
    # Liquidations: every one sent arrived, equal to the truth.
    sent_liqs = sum(_sent(t, "allLiquidation.").values())
    raw_liqs = [{**x.raw, "T": int(x.raw["T"])} for x in got[LIQUIDATIONS]]
    assert len(raw_liqs) == sent_liqs > 0 and all(x in t["liquidations"] for x in raw_liqs)
    # Funding and open interest ride on tickers: one event per tickers frame, values those last published.
    per_tick = _sent(t, "tickers.")
    for kind in (FUNDING, OPEN_INTEREST):
        assert Counter(x.raw["symbol"] for x in got[kind]) == +per_tick, kind
    for s in names:
        last_f = [f for f in got[FUNDING] if f.raw["symbol"] == s][-1]
        assert last_f.rate == Decimal(t["funding"][s][-1]["fundingRate"])
        rates = {f["fundingRate"] for f in t["funding"][s]}
        assert {f.raw["fundingRate"] for f in got[FUNDING] if f.raw["symbol"] == s} <= rates
        last_oi = [o for o in got[OPEN_INTEREST] if o.raw["symbol"] == s][-1]
        assert str(last_oi.open_interest) == t["open_interest"][s][-1]["openInterest"]
