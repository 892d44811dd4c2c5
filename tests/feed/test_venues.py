"""collector.feed.venues as pure code: exact contract-size arithmetic, names, universe parsing on the
simulator's real instrument answers, subscription messages the simulator accepts, and decoders that count
and skip every kind of bad frame without raising."""

from __future__ import annotations

import ast
import asyncio
import json
import pathlib
import random
from collections import Counter
from decimal import Decimal

import pytest
import websockets

from collector.feed.venues import bybit, okx
from collector.feed.venues.common import (
    ContractSize,
    VenueSymbol,
    binance_normalized,
    binance_symbol,
    normalized,
    power_of_ten,
    shift_decimal,
)
from collector.feed.wire import AggTrade, OkxTrade, UuidTrade
from exchange_sim import SimConfig, run_in_thread

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _http(url: str) -> dict:
    import urllib.request
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


# --- exact arithmetic ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,exp", [("1", 0), ("0.01", -2), ("0.0001", -4), ("10", 1), ("1000", 3),
                                       ("1.00", 0), ("0010", 1), ("2", None), ("0.05", None), ("0", None),
                                       ("-1", None), ("1e3", None), ("", None)])
def test_power_of_ten(value, exp):
    assert power_of_ten(value) == exp


@pytest.mark.parametrize("value,exp,out", [("12.5", -2, "0.125"), ("50", -2, "0.50"), ("5", 1, "50"),
                                           ("0.5", 1, "5"), ("0.05", 1, "0.5"), ("0.125", 2, "12.5"),
                                           ("3", -4, "0.0003"), ("120", 0, "120"), ("0", -2, "0.00")])
def test_shift_decimal(value, exp, out):
    assert shift_decimal(value, exp) == out
    assert Decimal(out) == Decimal(value).scaleb(exp)


def test_contract_size_is_exact_against_decimal():
    rng = random.Random(7)
    for ct in ("0.01", "0.1", "1", "10", "1000", "0.0001", "0.5", "25"):
        size = ContractSize(ct)
        for _ in range(300):
            whole, frac = rng.randrange(0, 10**rng.randrange(1, 9)), rng.randrange(0, 1000)
            sz = f"{whole}.{frac:03d}" if rng.random() < 0.5 else str(whole)
            out = size.base_units(sz)
            assert Decimal(out) == Decimal(sz) * Decimal(ct), (ct, sz, out)
            assert "E" not in out and "e" not in out   # positional: what NUMERIC input and COPY expect


@pytest.mark.parametrize("bad", ["", "-1", "1e3", "abc", "1.", ".5", " 1"])
def test_contract_size_refuses_what_is_not_an_unsigned_decimal(bad):
    with pytest.raises(ValueError):
        ContractSize("0.01").base_units(bad)
    with pytest.raises(ValueError):
        ContractSize("3").base_units(bad)


@pytest.mark.parametrize("bad", ["0", "-0.1", "x", ""])
def test_contract_size_must_be_positive(bad):
    with pytest.raises(ValueError, match="contract size"):
        ContractSize(bad)


def test_names():
    assert normalized("BTC") == "BTC-USDT-PERP"
    assert binance_normalized("BTCUSDT") == "BTC-USDT-PERP"
    assert binance_normalized("1000PEPEUSDT") == "1000PEPE-USDT-PERP"
    assert binance_symbol("ETHUSDT") == VenueSymbol("binance", "ETHUSDT", "ETH-USDT-PERP", ContractSize("1"))
    for bad in ("USDT", "BTCUSDC", "btcusdt"):
        with pytest.raises(ValueError):
            binance_normalized(bad)


# --- universes on the simulator's real answers ------------------------------------------------------------

@pytest.fixture(scope="module")
def okx_sim():
    h = run_in_thread(SimConfig(venue="okx", symbols=6, rate=50, speed=20, seed=3))
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def bybit_sim():
    h = run_in_thread(SimConfig(venue="bybit", symbols=7, rate=50, speed=20, seed=3))
    try:
        yield h
    finally:
        h.stop()


def test_okx_universe_from_the_simulators_instruments(okx_sim):
    body = _http(okx_sim.rest_url + okx.INSTRUMENTS_PATH)
    got = okx.parse_instruments(body)
    live = {e["instId"]: e for e in body["data"]
            if e["settleCcy"] == "USDT" and e["state"] == "live" and e["ctType"] == "linear"}
    assert [s.name for s in got] == sorted(live) and len(got) == 6
    # decoys left out: USDC- and coin-margined, suspended, pre-open
    assert not {"BTC-USDC-SWAP", "BTC-USD-SWAP", "OLDCOIN-USDT-SWAP", "NEWCOIN-USDT-SWAP"} & {s.name for s in got}
    by_name = {s.name: s for s in got}
    assert by_name["BTC-USDT-SWAP"] == VenueSymbol("okx", "BTC-USDT-SWAP", "BTC-USDT-PERP", ContractSize("0.01"))
    assert all(s.contract.value == live[s.name]["ctVal"] for s in got)
    with pytest.raises(ValueError, match="OKX instruments"):
        okx.parse_instruments({"code": "50011", "msg": "Too Many Requests", "data": []})


def test_bybit_universe_follows_the_cursor(bybit_sim):
    pages, cursor, seen = [], "", 0
    while True:
        body = _http(bybit_sim.rest_url + bybit.instruments_path(cursor).replace("limit=1000", "limit=2"))
        seen += len(body["result"]["list"])
        page, cursor = bybit.parse_instruments_page(body)
        pages.append(page)
        if not cursor:
            break
    assert len(pages) >= 5 and seen == 7 + 4           # every page read, decoys included
    got = bybit.merge_pages(pages)
    assert [s.name for s in got] == sorted(s.name for p in pages for s in p) and len(got) == 7
    assert not {"BTCPERP", "BTCUSDT-26DEC26", "OLDCOINUSDT", "NEWCOINUSDT"} & {s.name for s in got}
    assert {s.normalized for s in got} >= {"BTC-USDT-PERP", "ETH-USDT-PERP"}
    assert all(s.contract == ContractSize("1") for s in got)
    page, cursor = bybit.parse_instruments_page(_http(bybit_sim.rest_url + bybit.instruments_path()))
    assert (bybit.merge_pages([page]), cursor) == (got, "")
    with pytest.raises(ValueError, match="Bybit instruments-info"):
        bybit.parse_instruments_page({"retCode": 10006, "retMsg": "Too many visits!", "result": {}})


# --- subscriptions the simulator accepts ------------------------------------------------------------------

def test_okx_subscriptions_are_acknowledged_one_per_arg(okx_sim):
    names = [s.name for s in okx.parse_instruments(_http(okx_sim.rest_url + okx.INSTRUMENTS_PATH))]
    types = ["trades", "funding", "open_interest", "liquidations", "candles_1m"]
    msgs = okx.subscribe_messages(names, types, per_message=7)
    public = [a for m in msgs[okx.PUBLIC_PATH] for a in json.loads(m)["args"]]
    assert len(public) == 4 * len(names) + 1 and {"channel": "liquidation-orders", "instType": "SWAP"} in public
    assert all(len(json.loads(m)["args"]) <= 7 for ms in msgs.values() for m in ms)
    assert [json.loads(m)["args"] for m in msgs[okx.BUSINESS_PATH]][0][0] == {"channel": "candle1m",
                                                                               "instId": names[0]}

    async def run(path: str, texts: list[str]) -> list[dict]:
        n = sum(len(json.loads(t)["args"]) for t in texts)
        out = []
        async with websockets.connect(okx_sim.ws_url + path, compression=None) as ws:
            for t in texts:
                await ws.send(t)
            async with asyncio.timeout(20):
                while len(out) < n:
                    m = json.loads(await ws.recv())
                    if "event" in m:
                        out.append(m)
        return out
    for path, texts in msgs.items():
        answers = asyncio.run(run(path, texts))
        assert [a["event"] for a in answers] == ["subscribe"] * len(answers), answers


def test_bybit_subscriptions_succeed(bybit_sim):
    names = [s.name for s in bybit.parse_instruments_page(_http(bybit_sim.rest_url + bybit.instruments_path()))[0]]
    msgs = bybit.subscribe_messages(names, ["trades", "funding", "open_interest", "liquidations", "candles_1m"])
    topics = [a for m in msgs for a in json.loads(m)["args"]]
    assert len(topics) == len(set(topics)) == 4 * len(names)       # tickers once for funding and OI
    assert all(len(json.loads(m)["args"]) <= bybit.ARGS_PER_MESSAGE for m in msgs)

    async def run() -> list[dict]:
        out = []
        async with websockets.connect(bybit_sim.ws_url + bybit.LINEAR_PATH, compression=None) as ws:
            for t in msgs:
                await ws.send(t)
            await ws.send(bybit.PING)
            async with asyncio.timeout(20):
                while len(out) < len(msgs) + 1:
                    m = json.loads(await ws.recv())
                    if "success" in m:
                        out.append(m)
        return out
    answers = asyncio.run(run())
    assert all(a["success"] for a in answers), answers
    assert [a["op"] for a in answers] == ["subscribe"] * len(msgs) + ["ping"]


# --- decoders: bad frames counted by kind, never raised ---------------------------------------------------

class Sink:
    def __init__(self):
        self.events: list[tuple[str, object]] = []
        self.bad: Counter[str] = Counter()

    def on_trade(self, t, r): self.events.append(("trade", t))
    def on_mark_price(self, m, r): self.events.append(("funding", m))
    def on_liquidation(self, f, r): self.events.append(("liquidation", f))
    def on_kline(self, k, r): self.events.append(("kline", k))
    def on_open_interest(self, oi, r): self.events.append(("oi", oi))
    def on_bad_frame(self, kind): self.bad[kind] += 1
    def on_stream_lost(self): self.lost = getattr(self, "lost", 0) + 1


OKX_BTC = VenueSymbol("okx", "BTC-USDT-SWAP", "BTC-USDT-PERP", ContractSize("0.01"))
OKX_TRADE = ('{"arg":{"channel":"trades","instId":"%s"},"data":[{"instId":"%s","tradeId":"7","px":"65000.1",'
             '"sz":"%s","side":"sell","ts":"1700000000000","count":"1"}]}')


def test_okx_decoder_counts_bad_frames():
    sink = Sink()
    d = okx.OkxDecoder([OKX_BTC], sink)
    frames = {
        "malformed_json": '{"arg":{"channel":"trades"',
        "invalid_frame": '{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP"}]}',
        "unknown_channel": '{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"data":[]}',
        "unknown_symbol": OKX_TRADE % ("ETH-USDT-SWAP", "ETH-USDT-SWAP", "1"),
        "bad_number": OKX_TRADE % ("BTC-USDT-SWAP", "BTC-USDT-SWAP", "-1"),
        "venue_error": '{"event":"error","code":"60018","msg":"Wrong URL or channel","connId":"a"}',
        "venue_notice": '{"event":"notice","code":"64008","msg":"service upgrade","connId":"a"}',
        "unknown_event": '{"event":"channel-conn-count","channel":"x","connCount":"2","connId":"a"}',
    }
    for f in frames.values():
        d.handle(f, 1.0)
    d.handle("pong", 1.0)
    d.handle('{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"connId":"a"}', 1.0)
    d.handle(OKX_TRADE % ("BTC-USDT-SWAP", "BTC-USDT-SWAP", "12.3"), 1.0)
    assert sink.bad == d.skipped.counts == Counter(frames.keys())
    assert d.venue_errors == ["60018 Wrong URL or channel", "64008 service upgrade"]
    [(kind, t)] = sink.events
    assert kind == "trade" and type(t) is OkxTrade  # E, l, m are made when the pipeline keeps it (agg)
    assert t.agg() == AggTrade(1700000000000, "BTC-USDT-SWAP", 7, "65000.1", "0.123", 7, 7, 1700000000000, True)


def test_okx_liquidations_of_other_instruments_are_not_bad_frames():
    """liquidation-orders carries every swap: another worker's instruments (and swaps not collected) are
    passed over without a count, this decoder's are emitted in base units."""
    sink = Sink()
    d = okx.OkxDecoder([OKX_BTC], sink)
    detail = '{"bkLoss":"0","bkPx":"%s","ccy":"","posSide":"long","side":"sell","sz":"%s","ts":"1700000000000"}'
    rows = [f'{{"details":[{detail % (px, sz)}],"instFamily":"{fam}","instId":"{fam}-SWAP","instType":"SWAP",'
            f'"uly":"{fam}"}}' for fam, px, sz in (("ETH-USDT", "3000", "5"), ("BTC-USDT", "65000", "178"),
                                                  ("BTC-USD", "65000", "3"))]
    d.handle('{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[' + ",".join(rows) + "]}", 1.0)
    assert sink.bad == Counter() and d.skipped.counts == Counter()
    [(kind, f)] = sink.events
    assert (kind, f.o.s, f.o.S, f.o.q, f.o.p) == ("liquidation", "BTC-USDT-SWAP", "SELL", "1.78", "65000")


def test_okx_funding_merges_rate_and_mark_price():
    sink = Sink()
    d = okx.OkxDecoder([OKX_BTC], sink)
    arg = '{"channel":"%s","instId":"BTC-USDT-SWAP"}'
    d.handle('{"arg":%s,"data":[{"instId":"BTC-USDT-SWAP","markPx":"65000.5","ts":"1000"}]}' % (arg % "mark-price"), 1)
    d.handle('{"arg":%s,"data":[{"instId":"BTC-USDT-SWAP","fundingRate":"0.0001","fundingTime":"28800000",'
             '"nextFundingRate":"","ts":"2000"}]}' % (arg % "funding-rate"), 1)
    d.handle('{"arg":%s,"data":[{"instId":"BTC-USDT-SWAP","markPx":"65001.0","ts":"3000"}]}' % (arg % "mark-price"), 1)
    got = [(m.E, m.p, m.r, m.T) for _, m in sink.events]
    assert got == [(1000, "65000.5", "", 0), (2000, "65000.5", "0.0001", 28800000),
                   (3000, "65001.0", "0.0001", 28800000)]


BY_BTC = VenueSymbol("bybit", "BTCUSDT", "BTC-USDT-PERP", ContractSize("1"))


def _tickers(kind: str, data: dict, ts: int) -> str:
    return json.dumps({"topic": "tickers.BTCUSDT", "type": kind, "data": {"symbol": "BTCUSDT", **data}, "ts": ts})


def test_bybit_tickers_snapshot_then_deltas():
    sink = Sink()
    d = bybit.BybitDecoder([BY_BTC], sink)
    d.handle(_tickers("snapshot", {"markPrice": "100.0", "indexPrice": "99.9", "fundingRate": "0.0001",
                                   "nextFundingTime": "28800000", "openInterest": "5.5", "lastPrice": "100"}, 1000), 1)
    d.handle(_tickers("delta", {"openInterest": "6.0"}, 2000), 1)
    d.handle(_tickers("delta", {"fundingRate": "-0.0002", "markPrice": "101.0"}, 3000), 1)
    funding = [(m.E, m.p, m.i, m.r, m.T) for k, m in sink.events if k == "funding"]
    oi = [(o.time, o.openInterest) for k, o in sink.events if k == "oi"]
    assert funding == [(1000, "100.0", "99.9", "0.0001", 28800000), (2000, "100.0", "99.9", "0.0001", 28800000),
                       (3000, "101.0", "99.9", "-0.0002", 28800000)]
    assert oi == [(1000, "5.5"), (2000, "6.0"), (3000, "6.0")]
    d.reset()
    d.handle(_tickers("delta", {"openInterest": "7.0"}, 4000), 1)   # no snapshot yet: no funding known
    assert sink.events[-1][0] == "oi" and len(sink.events) == 7


BY_UUID = "8c931d9a-b703-5c34-9aeb-860867cf1f66"
# Five fills of one taker order as Bybit sends them (shape of a recorded BTCUSDT frame): one `seq`, five UUIDs.
BY_FILLS = ('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1774021164273,"data":['
            + ",".join(f'{{"T":1774021164272,"s":"BTCUSDT","S":"Sell","v":"{v}","p":"69916.80","L":"ZeroMinusTick",'
                       f'"i":"{i}","BT":false,"RPI":false,"seq":549792210006}}' for v, i in (
                           ("0.001", BY_UUID), ("0.001", "307fb58f-09dc-5121-b24f-eb2f81873445"),
                           ("0.001", "e4f62be6-ee74-5a67-a9da-b3829b911246"),
                           ("0.001", "e638a9e6-ade1-541e-8e22-e6e4c04fbfc1"),
                           ("0.032", "ddea3520-0444-515c-af09-07471b39e1e5"))) + "]}")


def test_bybit_fills_sharing_a_cross_sequence_are_five_trades():
    """`seq` is shared by one taker's fills: each fill is its own trade, carrying its UUID (the pipeline makes
    the stored id of it, collector.feed.wire.UuidTrade)."""
    sink = Sink()
    bybit.BybitDecoder([BY_BTC], sink).handle(BY_FILLS, 1774021164.3)
    trades = [t for kind, t in sink.events if kind == "trade"]
    uuids = [d["i"] for d in json.loads(BY_FILLS)["data"]]
    assert all(type(t) is UuidTrade and (t.a, t.f, t.l) == (0, 0, 0) for t in trades)
    assert [t.u for t in trades] == uuids
    ids = [bybit.trade_id_of(t.u) for t in trades]
    assert len(set(ids)) == 5 and all(0 <= a < 2 ** 63 for a in ids)
    assert [t.q for t in trades] == ["0.001"] * 4 + ["0.032"] and not sink.bad
    assert bybit.trade_id_of(BY_UUID) == 0x8c931d9ab7035c34 >> 1


def test_bybit_trade_without_a_uuid_is_passed_on_for_the_pipeline_to_count():
    """The decoder does not read the UUID (the pipeline does, for kept trades: tests/pipeline/test_pipeline.py
    test_a_kept_bybit_trade_with_a_malformed_uuid_is_a_bad_number_skip)."""
    sink = Sink()
    d = bybit.BybitDecoder([BY_BTC], sink)
    d.handle(BY_FILLS.replace(BY_UUID, "not-a-uuid"), 1774021164.3)
    assert not sink.bad and [t.u for kind, t in sink.events][:2] == ["not-a-uuid", "307fb58f-09dc-5121-b24f-eb2f81873445"]
    with pytest.raises(ValueError):
        bybit.trade_id_of("not-a-uuid")


def test_bybit_decoder_counts_bad_frames():
    sink = Sink()
    d = bybit.BybitDecoder([BY_BTC], sink)
    liq = '{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":5,"data":[{"T":5,"s":"BTCUSDT","S":"%s","v":"2","p":"9"}]}'
    frames = {
        "malformed_json": '{"topic":"publicTrade.BTCUSDT","ts":',
        "invalid_frame": '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1}]}',
        "unknown_channel": '{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1,"data":{}}',
        "unknown_symbol": '{"topic":"publicTrade.ETHUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"ETHUSDT",'
                          '"S":"Buy","v":"1","p":"1","i":"x","seq":1}]}',
        "bad_number": _tickers("snapshot", {"markPrice": "1", "fundingRate": "0.1", "nextFundingTime": "soon"}, 1),
        "unknown_side": liq % "Long",
        "venue_error": '{"success":false,"ret_msg":"error:handler not found,topics:x","conn_id":"c","op":"subscribe"}',
    }
    for f in frames.values():
        d.handle(f, 1.0)
    d.handle('{"success":true,"ret_msg":"pong","conn_id":"c","op":"ping"}', 1.0)
    d.handle(liq % "Buy", 1.0)
    assert sink.bad == d.skipped.counts == Counter(frames.keys())
    [(kind, f)] = [e for e in sink.events if e[0] == "liquidation"]
    assert (f.o.s, f.o.S, f.o.q, f.o.p, f.o.ap, f.o.T) == ("BTCUSDT", "SELL", "2", "9", "9", 5)  # a long closed


def test_cryptofeed_stays_in_its_adapter():
    """collector.feed.cryptofeed_adapter (connections) and cryptofeed_feed (feed classes) are the only modules
    importing cryptofeed (the venues included)."""
    importers = []
    for path in (ROOT / "collector").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "cryptofeed" or n.startswith("cryptofeed.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["collector/feed/cryptofeed_adapter.py", "collector/feed/cryptofeed_feed.py"]


def test_trade_fast_path_equals_the_general_path():
    """Trades in the venue's usual key order take a one-decode path; any other order gives the same event."""
    okx_frame = json.loads(OKX_TRADE % ("BTC-USDT-SWAP", "BTC-USDT-SWAP", "12.3"))
    by_frame = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 5,
                "data": [{"T": 4, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "9.5", "i": BY_UUID, "seq": 77}]}
    for decoder, sym, frame in ((okx.OkxDecoder, OKX_BTC, okx_frame), (bybit.BybitDecoder, BY_BTC, by_frame)):
        usual, reordered = json.dumps(frame, separators=(",", ":")), json.dumps(dict(reversed(frame.items())))
        assert not reordered.startswith(usual[:20])
        events = []
        for text in (usual, reordered, usual.encode()):
            sink = Sink()
            decoder([sym], sink).handle(text, 1.0)
            assert not sink.bad
            events.append(sink.events)
        assert events[0] == events[1] == events[2] and len(events[0]) == 1


def test_a_failing_sink_is_counted_not_raised():
    class Failing(Sink):
        def on_trade(self, t, r):
            raise RuntimeError("sink broke")
    for decoder, sym, frame in ((okx.OkxDecoder, OKX_BTC, OKX_TRADE % ("BTC-USDT-SWAP", "BTC-USDT-SWAP", "1")),
                                (bybit.BybitDecoder, BY_BTC, '{"topic":"publicTrade.BTCUSDT","ts":1,"data":[{"T":1,'
                                 f'"s":"BTCUSDT","S":"Buy","v":"1","p":"1","i":"{BY_UUID}","seq":1}}]}}')):
        sink = Failing()
        d = decoder([sym], sink)
        d.handle(frame, 1.0)
        d.handle(json.dumps(dict(reversed(json.loads(frame).items()))), 1.0)   # the general path too
        assert sink.bad == {"handler_error": 2}


def test_okx_push_covers_its_count_fills_on_both_paths():
    """OKX's tradeId is the last of the push's `count` fills: f = tradeId - count + 1 (docs: 123 with count 3
    covers 121..123), the same on the one-decode path and the general one; a count below 1 is a bad frame."""
    usual = OKX_TRADE.replace('"tradeId":"7"', '"tradeId":"123"').replace('"count":"1"', '"count":"3"') % (
        "BTC-USDT-SWAP", "BTC-USDT-SWAP", "2")
    reordered = json.dumps(dict(reversed(json.loads(usual).items())))
    for text in (usual, reordered):
        sink = Sink()
        okx.OkxDecoder([OKX_BTC], sink).handle(text, 1700000000.0)
        [(kind, t)] = sink.events
        assert (kind, t.a, t.f, t.agg().l) == ("trade", 123, 121, 123) and not sink.bad
    for text in (usual.replace('"count":"3"', '"count":"0"'), reordered.replace('"count": "3"', '"count": "0"')):
        sink = Sink()
        okx.OkxDecoder([OKX_BTC], sink).handle(text, 1700000000.0)
        assert sink.bad == {"bad_number": 1} and not sink.events
