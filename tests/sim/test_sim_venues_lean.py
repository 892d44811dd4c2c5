"""The lean OKX and Bybit decoders (collector.feed.venues) against cryptofeed's stock parsers and the
simulator's truth: frames captured over a real socket, subscribed with our own subscription messages, are
fed through cryptofeed 3.0.1's stock OKX / Bybit `message_handler` and through the lean decoders; every
trade, funding, open interest, liquidation and candle must agree value by value (amounts after contract
size), and equal the ground truth. Injected malformed and unknown-symbol frames are counted, not raised."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
import websockets
from cryptofeed.defines import CANDLES, FUNDING, LIQUIDATIONS, OPEN_INTEREST, TRADES
from cryptofeed.exchanges import OKX, Bybit
from simhelpers import await_for, http_get, loopback_feed

from collector.feed.venues import bybit, okx
from collector.feed.venues.common import VenueSymbol
from collector.feed.wire import OkxTrade
from exchange_sim import SimConfig, launch_subprocess

SYMBOLS = 8
DATA_TYPES = ["trades", "funding", "open_interest", "liquidations", "candles_1m"]
CF_CHANNELS = [TRADES, FUNDING, LIQUIDATIONS, CANDLES, OPEN_INTEREST]


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


class Recorder:
    """An EventSink that keeps every event with the frame that produced it (`frame`, set before each call)."""

    def __init__(self) -> None:
        self.frame: dict = {}
        self.events: dict[str, list] = defaultdict(list)
        self.bad: Counter[str] = Counter()

    def _add(self, kind: str, ev: object) -> None:
        self.events[kind].append((ev, self.frame))

    def on_trade(self, t, receipt):
        # an OkxTrade's E, l and m are made by the pipeline for the trades it keeps (OkxTrade.agg)
        self._add("trades", t.agg() if type(t) is OkxTrade else t)

    def on_mark_price(self, m, receipt):
        self._add("funding", m)

    def on_liquidation(self, f, receipt):
        self._add("liquidations", f)

    def on_kline(self, k, receipt):
        self._add("candles", k)

    def on_open_interest(self, oi, receipt):
        self._add("open_interest", oi)

    def on_bad_frame(self, kind):
        self.bad[kind] += 1

    def on_stream_lost(self):
        self.lost = getattr(self, "lost", 0) + 1  # a connection carrying liquidations ended


def _decode(frame: str) -> dict:
    try:
        out = json.loads(frame)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _counted(frame: str) -> bool:
    """A frame the truth's per-connection `sent` counts: not an answer, not an open candle's update."""
    d = _decode(frame)
    if frame == "pong" or "event" in d or "success" in d:
        return False
    if d.get("arg", {}).get("channel") == "candle1m":
        return d["data"][0][8] == "1"
    if d.get("topic", "").startswith("kline."):
        return d["data"][0]["confirm"]
    return True


async def _capture(proc, messages: dict[str, list[str]], ready) -> tuple[dict[str, list[str]], dict, int]:
    """Subscribe on each path with `messages`, read until ready(truth), inject one malformed and one
    unknown-symbol frame per connection, pause, and return (frames by path, truth, frames injected)."""
    frames: dict[str, list[str]] = {p: [] for p in messages}
    conns = {p: await websockets.connect(proc.ws_url + p, compression=None, max_size=None) for p in messages}

    async def reader(path: str, ws) -> None:
        async for m in ws:
            frames[path].append(m if isinstance(m, str) else m.decode())

    tasks = [asyncio.create_task(reader(p, ws)) for p, ws in conns.items()]
    try:
        for p, msgs in messages.items():
            for m in msgs:
                await conns[p].send(m)
        truth = lambda: http_get(proc.rest_url + "/_sim/truth")[2]  # noqa: E731
        await await_for(lambda: asyncio.to_thread(lambda: ready(truth())), 90, "enough sent", poll=0.5)
        injected = 0
        for kind in ("malformed", "unknown_symbol"):
            r = await asyncio.to_thread(_get_json, f"{proc.rest_url}/_sim/fault/inject?kind={kind}")
            injected += r["injected"]
        await asyncio.to_thread(_get_json, proc.rest_url + "/_sim/pause")
        t = await asyncio.to_thread(truth)
        sent = sum(n for c in t["connections"] for n in c["sent"].values())

        def all_read() -> bool:
            return sum(1 for fs in frames.values() for f in fs if _counted(f)) >= sent + injected
        await await_for(all_read, 30, "every frame sent to be read")
        assert sum(1 for fs in frames.values() for f in fs if _counted(f)) == sent + injected
        return frames, t, injected
    finally:
        for task in tasks:
            task.cancel()
        for ws in conns.values():
            await ws.close()


async def _stock(cls, proc, names: list[str], frames: dict[str, list[str]], extra=None) -> dict[str, list]:
    """The frames through cryptofeed's stock parser: symbols loaded over HTTP from the simulator, each frame
    handed to `message_handler` with the stock connection object of its path (unopened)."""
    got: dict[str, list] = defaultdict(list)

    def cb(kind):
        async def f(obj, ts):
            got[kind].append(obj)
        return f
    feed = loopback_feed(cls, proc.rest_url, proc.ws_url)(
        exchange_symbols=names, channels=CF_CHANNELS, callbacks={k: cb(k) for k in CF_CHANNELS},
        candle_interval="1m")
    try:
        await feed._setup()
        conns = {c.address[len(proc.ws_url):]: c for c, _, _ in feed.connect()}
        for path, fs in frames.items():
            for i, f in enumerate(fs):
                try:
                    await feed.message_handler(f, conns[path], 1.0 + i)
                except Exception as e:  # cryptofeed raises on what it cannot parse; we count it
                    got["errors"].append(e)
        if extra is not None:
            await extra(feed, got)
    finally:
        await feed.http_conn.close()
    return got


def _lean(decoder_cls, symbols: list[VenueSymbol], frames: dict[str, list[str]]) -> Recorder:
    rec = Recorder()
    dec = decoder_cls(symbols, rec)
    for fs in frames.values():
        for i, f in enumerate(fs):
            rec.frame = _decode(f)
            dec.handle(f, 1.0 + i)
    assert rec.bad == dec.skipped.counts
    return rec


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    # cryptofeed writes its symbol cache under XDG_CACHE_HOME: keep the simulator's symbols out of the user's.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


def _sent(t: dict, prefix: str) -> Counter:
    out: Counter = Counter()
    for c in t["connections"]:
        for k, n in c["sent"].items():
            if k.startswith(prefix):
                out[k[len(prefix):]] += n
    return out


@pytest.mark.timeout(180)
def test_okx_lean_decoder_equals_stock_parser_and_truth(isolated_cache):
    proc = launch_subprocess(SimConfig(venue="okx", symbols=SYMBOLS, rate=60, speed=20, seed=5, truth_trades=True))
    try:
        _, _, inst = http_get(proc.rest_url + okx.INSTRUMENTS_PATH)
        universe = okx.parse_instruments(inst)
        names = [s.name for s in universe]
        assert len(names) == SYMBOLS
        ct = {s.name: Decimal(s.contract.value) for s in universe}
        assert any(v != 1 for v in ct.values())     # contract sizes matter for this run

        def ready(t):
            return (all(_sent(t, "candle1m:")[s] >= 2 for s in names) and sum(_sent(t, "liquidation-orders:").values()) > 0
                    and all(_sent(t, "funding-rate:")[s] >= 1 for s in names))
        frames, t, injected = asyncio.run(_capture(proc, okx.subscribe_messages(names, DATA_TYPES), ready))

        async def rest_liquidations(feed, got):
            # cryptofeed 3.0.1 reads OKX liquidations from REST (liquidation-orders is not parsed on the
            # WebSocket): run its stock poller against the paused simulator until it has them all.
            task = asyncio.create_task(feed._liquidations(names))
            try:
                await await_for(lambda: len(got[LIQUIDATIONS]) >= len(t["liquidations"]), 30, "REST liquidations")
            finally:
                task.cancel()
        cf = asyncio.run(_stock(OKX, proc, names, frames, rest_liquidations))
    finally:
        proc.stop()
    assert set(frames) == {okx.PUBLIC_PATH, okx.BUSINESS_PATH}
    lean = _lean(okx.OkxDecoder, universe, frames)
    assert lean.bad == {"malformed_json": injected // 2, "unknown_symbol": injected // 2}
    assert len(cf["errors"]) == injected     # the stock parser raised on the same frames
    norm = {s.name: s.normalized for s in universe}

    # Trades: value by value against the stock parser (amount * ctVal) and against the truth.
    trades = [ev for ev, _ in lean.events["trades"]]
    assert len(trades) == len(cf[TRADES]) == len(t["trades"]) > 100
    for x, c, tr in zip(trades, cf[TRADES], t["trades"], strict=True):
        assert (norm[x.s], x.p, Decimal(x.q), "sell" if x.m else "buy", x.T / 1000, str(x.a)) == \
               (c.symbol, str(c.price), c.amount * ct[x.s], c.side, c.timestamp, c.id)
        assert (x.s, str(x.a), x.p, "sell" if x.m else "buy", str(x.T)) == \
               (tr["instId"], tr["tradeId"], tr["px"], tr["side"], tr["ts"])
        assert Decimal(x.q) == Decimal(tr["sz"]) * ct[x.s]
    # Funding: the events of funding-rate frames against the stock parser and the truth; mark-price frames
    # carry the mark price with the last rate.
    fund = [ev for ev, fr in lean.events["funding"] if fr["arg"]["channel"] == "funding-rate"]
    assert len(fund) == len(cf[FUNDING]) >= SYMBOLS
    for x, c in zip(fund, cf[FUNDING], strict=True):
        # rates as numbers: str() of a Decimal under 1e-6 is scientific ("3.33E-8"), and the simulator's rate, a
        # function of the clock, passes near zero in some minutes (a CI run)
        assert (norm[x.s], Decimal(x.r), x.T / 1000, x.E / 1000) == \
               (c.symbol, c.rate, c.next_funding_time, c.timestamp)
    for s in names:
        assert [(x.r, str(x.T), str(x.E)) for x in fund if x.s == s] == \
               [(r["fundingRate"], r["fundingTime"], r["ts"]) for r in t["funding"][s]]
    marks = [(ev, fr) for ev, fr in lean.events["funding"] if fr["arg"]["channel"] == "mark-price"]
    assert marks and all(ev.p == fr["data"][0]["markPx"] for ev, fr in marks)
    # Open interest: base units = oi * ctVal = oiCcy, exactly.
    ois = [ev for ev, _ in lean.events["open_interest"]]
    assert len(ois) == len(cf[OPEN_INTEREST]) > 0
    for x, c in zip(ois, cf[OPEN_INTEREST], strict=True):
        assert (norm[x.symbol], Decimal(x.openInterest), x.time / 1000) == \
               (c.symbol, c.open_interest * ct[x.symbol], c.timestamp)
    for s in names:
        assert [(x.openInterest, str(x.time)) for x in ois if x.symbol == s] == \
               [(r["oiCcy"], r["ts"]) for r in t["open_interest"][s]]
    # Liquidations: the WebSocket ones (lean) are the truth's since we subscribed (its tail, in order), and
    # each equals one of the stock REST poller's, which read the whole history (the truth's every one).
    liqs = [ev.o for ev, _ in lean.events["liquidations"]]
    n = sum(_sent(t, "liquidation-orders:").values())
    assert len(liqs) == n > 0
    assert [(o.s, o.S.lower(), o.p, Decimal(o.q), str(o.T)) for o in liqs] == \
           [(r["instId"], r["side"], r["bkPx"], Decimal(r["sz"]) * ct[r["instId"]], r["ts"])
            for r in t["liquidations"][-n:]]
    rest = [(c.symbol, c.side, str(c.price), c.quantity * ct[c.symbol.replace("-PERP", "-SWAP")], c.timestamp)
            for c in cf[LIQUIDATIONS]]
    assert len(rest) == len(set(rest)) == len(t["liquidations"])
    assert {(norm[o.s], o.S.lower(), o.p, Decimal(o.q), o.T / 1000) for o in liqs} <= set(rest)
    # Closed candles (the stock feed passes only those; the lean decoder also passes open ones, which the
    # pipeline drops), in order: OHLC as sent, volume in base units (the stock parser's is contracts).
    kl = [ev for ev, _ in lean.events["candles"] if ev.k.x]
    assert len(kl) == len(cf[CANDLES]) > 0 and len(lean.events["candles"]) > len(kl)
    for x, c in zip(kl, cf[CANDLES], strict=True):
        b = x.k
        assert (norm[x.s], b.t / 1000, (b.T + 1) / 1000, b.o, b.h, b.l, b.c, b.x, Decimal(b.v)) == \
               (c.symbol, c.start, c.stop, str(c.open), str(c.high), str(c.low), str(c.close), c.closed,
                c.volume * ct[x.s])
    closed = [(x.s, [str(x.k.t), x.k.o, x.k.h, x.k.l, x.k.c, x.k.v, x.k.q]) for x in kl]
    truth_k = [(k["instId"], [k["candle"][i] for i in (0, 1, 2, 3, 4, 6, 7)]) for k in t["klines"]]
    assert closed and all(row in truth_k for row in closed)
    assert len(closed) == sum(_sent(t, "candle1m:").values())


@pytest.mark.timeout(180)
def test_bybit_lean_decoder_equals_stock_parser_and_truth(isolated_cache):
    proc = launch_subprocess(SimConfig(venue="bybit", symbols=SYMBOLS, rate=60, speed=20, seed=5,
                                       truth_trades=True))
    try:
        pages, cursor = [], ""
        while True:
            _, _, body = http_get(proc.rest_url + bybit.instruments_path(cursor).replace("limit=1000", "limit=3"))
            page, cursor = bybit.parse_instruments_page(body)
            pages.append(page)
            if not cursor:
                break
        assert len(pages) > 2      # the cursor was followed
        universe = bybit.merge_pages(pages)
        names = [s.name for s in universe]
        assert len(names) == SYMBOLS

        def ready(t):
            return all(_sent(t, "kline.1.")[s] >= 2 for s in names) and sum(_sent(t, "allLiquidation.").values()) > 0
        frames, t, injected = asyncio.run(_capture(
            proc, {bybit.LINEAR_PATH: bybit.subscribe_messages(names, DATA_TYPES)}, ready))
        cf = asyncio.run(_stock(Bybit, proc, names, frames))
    finally:
        proc.stop()
    lean = _lean(bybit.BybitDecoder, universe, frames)
    assert lean.bad == {"malformed_json": injected // 2, "unknown_symbol": injected // 2}
    assert len(cf["errors"]) == injected
    norm = {s.name: s.normalized for s in universe}

    trades = [ev for ev, _ in lean.events["trades"]]
    assert len(trades) == len(cf[TRADES]) == len(t["trades"]) > 100
    for x, c, tr in zip(trades, cf[TRADES], t["trades"], strict=True):
        # the UUID is carried as sent (UuidTrade.u); the pipeline makes the stored id of it for kept trades
        assert (norm[x.s], x.p, x.q, "sell" if x.m else "buy", x.T / 1000, x.u) == \
               (c.symbol, str(c.price), str(c.amount), c.side, c.timestamp, c.id)
        assert (x.s, x.u, x.T, "Sell" if x.m else "Buy", x.q, x.p) == \
               (tr["s"], tr["i"], tr["T"], tr["S"], tr["v"], tr["p"])
    # tickers: one funding and one open-interest event per frame, the merged state, as cryptofeed's.
    fund = [ev for ev, _ in lean.events["funding"]]
    assert len(fund) == len(cf[FUNDING]) == sum(_sent(t, "tickers.").values())
    for x, c in zip(fund, cf[FUNDING], strict=True):
        assert (norm[x.s], x.p, Decimal(x.r), x.T / 1000, x.E / 1000) == \
               (c.symbol, str(c.mark_price), c.rate, c.next_funding_time, c.timestamp)  # rates: see the OKX test
    for s in names:
        changed = [(x.r, x.E) for x, fr in lean.events["funding"] if x.s == s and "fundingRate" in fr["data"]]
        assert changed == [(r["fundingRate"], r["ts"]) for r in t["funding"][s]]
    ois = [ev for ev, _ in lean.events["open_interest"]]
    assert len(ois) == len(cf[OPEN_INTEREST]) == len(fund)
    for x, c in zip(ois, cf[OPEN_INTEREST], strict=True):
        assert (norm[x.symbol], x.openInterest, x.time / 1000) == (c.symbol, str(c.open_interest), c.timestamp)
    for s in names:
        changed = [(x.openInterest, x.time) for x, fr in lean.events["open_interest"]
                   if x.symbol == s and "openInterest" in fr["data"]]
        assert changed == [(r["openInterest"], r["ts"]) for r in t["open_interest"][s]]
    # Liquidations: S is the liquidated position's side on Bybit (and in cryptofeed's event); the lean
    # event carries the liquidation order's side, Binance's convention: the opposite.
    liqs = [ev.o for ev, _ in lean.events["liquidations"]]
    per_symbol = _sent(t, "allLiquidation.")
    assert len(liqs) == len(cf[LIQUIDATIONS]) == sum(per_symbol.values()) > 0
    opposite = {"buy": "SELL", "sell": "BUY"}
    for o, c in zip(liqs, cf[LIQUIDATIONS], strict=True):
        assert (norm[o.s], o.S, o.q, o.p, o.T / 1000) == \
               (c.symbol, opposite[c.side], str(c.quantity), str(c.price), c.timestamp)
    for s in names:   # since we subscribed: the tail of each symbol's truth
        rows = [r for r in t["liquidations"] if r["s"] == s]
        sent = rows[len(rows) - per_symbol[s]:]
        assert [(o.s, o.S, o.q, o.p, o.T) for o in liqs if o.s == s] == \
               [(r["s"], opposite[r["S"].lower()], r["v"], r["p"], r["T"]) for r in sent]
    kl = [ev for ev, _ in lean.events["candles"] if ev.k.x]
    assert len(kl) == len(cf[CANDLES]) > 0 and len(lean.events["candles"]) > len(kl)
    for x, c in zip(kl, cf[CANDLES], strict=True):
        b = x.k
        assert (norm[x.s], b.t / 1000, b.T / 1000, b.o, b.h, b.l, b.c, b.v, b.x) == \
               (c.symbol, c.start, c.stop, str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume),
                c.closed)
    closed = [(x.s, x.k.t, x.k.T, x.k.o, x.k.c, x.k.h, x.k.l, x.k.v, x.k.q) for x in kl]
    truth_k = [(k["symbol"], k["start"], k["end"], k["open"], k["close"], k["high"], k["low"], k["volume"],
                k["turnover"]) for k in t["klines"]]
    assert closed and all(row in truth_k for row in closed)
    assert len(closed) == sum(_sent(t, "kline.1.").values())
