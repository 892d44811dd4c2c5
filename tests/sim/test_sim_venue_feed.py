"""OKX and Bybit through the collector's own feed (collector.feed.venue_feed) over a real socket against the
simulator: the connection layer Binance uses (picows under cryptofeed's ConnectionHandler), each venue's
subscriptions and text pings, the lean decoders, a dropped connection and its reconnect. Every trade,
funding update, liquidation and closed 1m candle the simulator sent for the subscribed symbols must reach
the sink exactly once and equal the simulator's truth; open interest (pushed every few seconds) reaches it
once per symbol and open-interest window."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from simhelpers import await_for, http_get

from collector.feed.cryptofeed_adapter import ws_connection_class
from collector.feed.venue_feed import VenueFeed
from collector.feed.venue_universe import fetch_venue_universe
from collector.feed.venues.bybit import trade_id_of
from collector.feed.wire import OkxTrade
from exchange_sim import SimConfig, launch_subprocess

DATA_TYPES = ["trades", "funding", "open_interest", "liquidations", "candles_1m", "candles_5m"]
SIM_SYMBOLS = 6
SUBSCRIBED = 4
OI_INTERVAL_S = 60.0  # sim seconds: at speed 20, a window every 3 wall seconds


class Recorder:
    """The sink: every event with the channel of the frame that produced it."""

    def __init__(self) -> None:
        self.channel = ""
        self.events: dict[str, list] = defaultdict(list)
        self.bad: Counter[str] = Counter()

    def on_trade(self, t, receipt):
        # an OkxTrade's E, l and m are made by the pipeline for the trades it keeps (OkxTrade.agg)
        self.events["trades"].append(t.agg() if type(t) is OkxTrade else t)

    def on_mark_price(self, m, receipt):
        self.events["funding"].append((m, self.channel))

    def on_liquidation(self, f, receipt):
        self.events["liquidations"].append(f.o)

    def on_kline(self, k, receipt):
        self.events["candles"].append(k)

    def on_open_interest(self, oi, receipt):
        self.events["open_interest"].append(oi)

    def on_bad_frame(self, kind):
        self.bad[kind] += 1

    def on_stream_lost(self):
        self.lost = getattr(self, "lost", 0) + 1  # a connection carrying liquidations ended


def _channel(msg: str | bytes) -> str:
    try:
        d = json.loads(msg)
    except ValueError:
        return ""
    if not isinstance(d, dict):
        return ""
    if "arg" in d:
        return d["arg"].get("channel", "")
    data = d.get("data")
    if d.get("topic", "").startswith("tickers.") and isinstance(data, dict) and "fundingRate" in data:
        return "fundingRate"
    return d.get("topic", "")


def _sent(truth: dict, prefix: str) -> Counter:
    out: Counter = Counter()
    for c in truth["connections"]:
        for k, n in c["sent"].items():
            if k.startswith(prefix):
                out[k[len(prefix):]] += n
    return out


def _run(venue: str, ready, counts) -> tuple[VenueFeed, Recorder, dict, list]:
    """Start the simulator, collect SUBSCRIBED symbols until ready(truth), pause, check every frame was
    read; drop every connection, wait for the reconnect, resume, collect until ready again, pause, read all.
    Returns (feed, recorder, final truth, universe)."""
    proc = launch_subprocess(SimConfig(venue=venue, symbols=SIM_SYMBOLS, rate=40, speed=20, seed=11,
                                       truth_trades=True))
    try:
        universe = fetch_venue_universe(venue, proc.rest_url, lambda url: http_get(url)[2])
        assert len(universe) == SIM_SYMBOLS
        symbols = universe[:SUBSCRIBED]
        rec = Recorder()
        feed = VenueFeed(venue, _endpoints(proc), symbols, DATA_TYPES, rec, ws_connection_class("picows"),
                         oi_interval_s=OI_INTERVAL_S, timeout=30.0, timeout_interval=1.0, ping_interval_s=0.5)
        original = feed.decoder.handle_batch

        def handle_batch(messages, receipt):
            for msg in messages:
                rec.channel = _channel(msg)
                original((msg,), receipt)
        feed.decoder.handle_batch = handle_batch  # the real decoder, each frame's channel noted first (see Recorder)
        truth = lambda: http_get(proc.rest_url + "/_sim/truth")[2]  # noqa: E731

        async def main() -> dict:
            stop = asyncio.Event()
            task = asyncio.create_task(feed.run(stop))
            try:
                for round_ in (1, 2):
                    await await_for(lambda r=round_: asyncio.to_thread(lambda: ready(truth(), r)), 120,
                                    f"round {round_} data", poll=0.5)
                    await asyncio.to_thread(http_get, proc.rest_url + "/_sim/pause")
                    t = await asyncio.to_thread(truth)
                    await await_for(lambda t=t: counts(rec) >= expected_counts(t), 30, "every frame sent read")
                    if round_ == 1:
                        opened = len(t["connections"])
                        dropped = (await asyncio.to_thread(http_get, proc.rest_url + "/_sim/fault/drop"))[2]
                        assert dropped["dropped"] == len(feed.plan)
                        await await_for(lambda n=opened: asyncio.to_thread(_reconnected, truth, n, len(feed.plan)),
                                        30, "reconnected and subscribed")
                        await asyncio.to_thread(http_get, proc.rest_url + "/_sim/resume")
                assert counts(rec) == expected_counts(t)
                assert feed.pings_sent > 0
                return t
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)

        def expected_counts(t: dict) -> int:
            names = {s.name for s in symbols}
            return sum(1 for r in t["trades"] if (r.get("instId") or r.get("s")) in names)

        t = asyncio.run(main())
    finally:
        proc.stop()
    assert sum(1 for c in t["connections"] if c["closed"]) >= len(feed.plan)  # the drop happened
    assert feed.decoder.venue_errors == []
    assert set(rec.bad) <= {"unknown_symbol"}  # liquidations of symbols not subscribed
    return feed, rec, t, symbols


def _reconnected(truth, opened: int, sockets: int) -> bool:
    """Every socket re-opened (new connections beyond `opened`) and subscribed again."""
    conns = truth()["connections"]
    return len(conns) == opened + sockets and sum(1 for c in conns if not c["closed"] and c["streams"]) == sockets


def _endpoints(proc):
    from collector.feed.endpoints import Endpoints
    return Endpoints(proc.rest_url, proc.ws_url)


def _trade_count(rec: Recorder) -> int:
    return len(rec.events["trades"])


def _check_oi_windows(ois: list, truth_value_at, names: set[str]) -> None:
    """At most one per symbol and window, every window from the first to the last present, values as sent."""
    window = int(OI_INTERVAL_S * 1000)
    for s in names:
        rows = [x for x in ois if x.symbol == s]
        assert rows, s
        wins = [x.time // window for x in rows]
        assert wins == sorted(set(wins))
        for x in rows:
            assert x.openInterest == truth_value_at(s, x.time)


@pytest.mark.timeout(300)
def test_okx_feed_against_simulator_with_reconnect():
    def ready(t, round_):
        sent = _sent(t, "candle1m:")
        fund = _sent(t, "funding-rate:")
        oi_windows = {int(r["ts"]) // int(OI_INTERVAL_S * 1000) for rs in t["open_interest"].values() for r in rs}
        return (len(sent) >= SUBSCRIBED and min(sent.values()) >= 2 * round_ and len(fund) >= SUBSCRIBED
                and min(fund.values()) >= round_ and sum(_sent(t, "liquidation-orders:").values()) > 0
                and len(oi_windows) >= 2 * round_)

    feed, rec, t, symbols = _run("okx", ready, _trade_count)
    names = {s.name for s in symbols}
    ct = {s.name: Decimal(s.contract.value) for s in symbols}
    trades = rec.events["trades"]
    sent_trades = [r for r in t["trades"] if r["instId"] in names]
    assert len(trades) == len(sent_trades) > 100
    assert len({(x.s, x.a) for x in trades}) == len(trades)  # each once
    for s in names:
        got = [(str(x.a), x.p, Decimal(x.q), "sell" if x.m else "buy", str(x.T)) for x in trades if x.s == s]
        want = [(r["tradeId"], r["px"], Decimal(r["sz"]) * ct[s], r["side"], r["ts"]) for r in sent_trades
                if r["instId"] == s]
        assert got == want
    fund = [m for m, ch in rec.events["funding"] if ch == "funding-rate"]
    for s in names:
        assert [(x.r, str(x.T), str(x.E)) for x in fund if x.s == s] == \
               [(r["fundingRate"], r["fundingTime"], r["ts"]) for r in t["funding"][s]]
    assert any(ch == "mark-price" and m.p for m, ch in rec.events["funding"])
    n = sum(_sent(t, "liquidation-orders:").values())
    want_liq = [r for r in t["liquidations"][-n:] if r["instId"] in names]
    assert [(o.s, o.S.lower(), o.p, Decimal(o.q), str(o.T)) for o in rec.events["liquidations"]] == \
           [(r["instId"], r["side"], r["bkPx"], Decimal(r["sz"]) * ct[r["instId"]], r["ts"]) for r in want_liq]
    assert want_liq
    closed = [k for k in rec.events["candles"] if k.k.x]
    sent_k = _sent(t, "candle1m:")
    for s in names:
        rows = [k["candle"] for k in t["klines"] if k["instId"] == s][-sent_k[s]:]
        assert [[str(k.k.t), k.k.o, k.k.h, k.k.l, k.k.c, k.k.v, k.k.q] for k in closed if k.s == s] == \
               [[c[i] for i in (0, 1, 2, 3, 4, 6, 7)] for c in rows]
        assert sent_k[s] >= 4
    # Open interest: the first record of each window, of every window the simulator sent one in.
    window = int(OI_INTERVAL_S * 1000)
    for s in names:
        first: dict[int, dict] = {}
        for r in t["open_interest"][s]:
            first.setdefault(int(r["ts"]) // window, r)
        assert [(x.openInterest, str(x.time)) for x in rec.events["open_interest"] if x.symbol == s] == \
               [(r["oiCcy"], r["ts"]) for _, r in sorted(first.items())]
        assert len(first) >= 4


@pytest.mark.timeout(300)
def test_bybit_feed_against_simulator_with_reconnect():
    def ready(t, round_):
        sent = _sent(t, "kline.1.")
        return (len(sent) >= SUBSCRIBED and min(sent.values()) >= 2 * round_
                and sum(_sent(t, "allLiquidation.").values()) > 0
                and all(len(t["funding"].get(s, [])) >= 2 * round_ for s in sent))

    feed, rec, t, symbols = _run("bybit", ready, _trade_count)
    names = {s.name for s in symbols}
    trades = rec.events["trades"]
    sent_trades = [r for r in t["trades"] if r["s"] in names]
    assert len(trades) == len(sent_trades) > 100
    assert len({(x.s, trade_id_of(x.u)) for x in trades}) == len(trades)  # the ids the pipeline would store
    for s in names:
        assert [(trade_id_of(x.u), x.T, "Sell" if x.m else "Buy", x.q, x.p) for x in trades if x.s == s] == \
               [(trade_id_of(r["i"]), r["T"], r["S"], r["v"], r["p"]) for r in sent_trades if r["s"] == s]
    for s in names:  # funding: the frames that carried a new rate, each once, as the truth recorded them
        assert [(m.r, m.E) for m, ch in rec.events["funding"] if m.s == s and ch == "fundingRate"] == \
               [(r["fundingRate"], r["ts"]) for r in t["funding"][s]]
    per_symbol = _sent(t, "allLiquidation.")
    opposite = {"Buy": "SELL", "Sell": "BUY"}
    got = [(o.s, o.S, o.q, o.p, o.T) for o in rec.events["liquidations"]]
    assert len(got) == sum(per_symbol.values()) > 0
    for s in names:
        rows = [r for r in t["liquidations"] if r["s"] == s]
        sent = rows[len(rows) - per_symbol[s]:] if per_symbol[s] else []
        assert [g for g in got if g[0] == s] == [(r["s"], opposite[r["S"]], r["v"], r["p"], r["T"]) for r in sent]
    closed = [k for k in rec.events["candles"] if k.k.x]
    sent_k = _sent(t, "kline.1.")
    for s in names:
        rows = [k for k in t["klines"] if k["symbol"] == s][-sent_k[s]:]
        assert [(k.k.t, k.k.T, k.k.o, k.k.c, k.k.h, k.k.l, k.k.v, k.k.q) for k in closed if k.s == s] == \
               [(k["start"], k["end"], k["open"], k["close"], k["high"], k["low"], k["volume"], k["turnover"])
                for k in rows]
        assert sent_k[s] >= 4

    def oi_at(s: str, ms: int) -> str:
        return [r["openInterest"] for r in t["open_interest"][s] if r["ts"] <= ms][-1]
    _check_oi_windows(rec.events["open_interest"], oi_at, names)
