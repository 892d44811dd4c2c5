"""The one-decode paths of every OKX and Bybit push (not only trades) give exactly the events of the general
envelope-then-data path, bad values in them are counted by the same kind, GatedSink hands events to a
new inner sink after `retarget` while keeping its open-interest gate, a whole read through handle_batch gives
what frame-by-frame handling gives, and a decoder that peeks at the gate emits what the gate lets through."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from test_venues import BY_BTC, BY_FILLS, OKX_BTC, OKX_TRADE, Sink

from collector.feed.venue_feed import GatedSink, OpenInterestGate
from collector.feed.venues import bybit, okx
from collector.feed.wire import AggTrade, OpenInterest

OKX_ARG = {"instId": "BTC-USDT-SWAP"}
OKX_PUSHES = [
    {"arg": {"channel": "candle1m", **OKX_ARG},
     "data": [["1700000040000", "1", "2", "0.5", "1.5", "10", "0.1", "0.15", "1"]]},
    {"arg": {"channel": "mark-price", **OKX_ARG}, "data": [{"instId": "BTC-USDT-SWAP", "markPx": "5", "ts": "9"}]},
    {"arg": {"channel": "open-interest", **OKX_ARG},
     "data": [{"instId": "BTC-USDT-SWAP", "oi": "300", "oiCcy": "3", "ts": "9"}]},
    {"arg": {"channel": "funding-rate", **OKX_ARG},
     "data": [{"instId": "BTC-USDT-SWAP", "fundingRate": "0.0001", "fundingTime": "28800000", "ts": "9"}]},
]
BY_PUSHES = [
    {"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": 9,
     "data": {"symbol": "BTCUSDT", "markPrice": "5", "indexPrice": "4.9", "fundingRate": "0.0001",
              "nextFundingTime": "28800000", "openInterest": "3"}},
    {"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts": 9,
     "data": [{"start": 60000, "end": 119999, "interval": "1", "open": "1", "close": "1.5", "high": "2", "low": "0.5",
               "volume": "10", "turnover": "15", "confirm": True, "timestamp": 9}]},
    {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": 9,
     "data": [{"T": 9, "s": "BTCUSDT", "S": "Sell", "v": "2", "p": "5"}]},
]


def _events(decoder: type, sym: object, text: str | bytes) -> tuple[list, Counter]:
    sink = Sink()
    decoder([sym], sink).handle(text, 1.0)
    return sink.events, sink.bad


@pytest.mark.parametrize(("decoder", "sym", "frame"), [(okx.OkxDecoder, OKX_BTC, f) for f in OKX_PUSHES]
                         + [(bybit.BybitDecoder, BY_BTC, f) for f in BY_PUSHES])
def test_each_push_decoded_in_one_pass_equals_the_general_path(decoder: type, sym: object, frame: dict) -> None:
    usual = json.dumps(frame, separators=(",", ":"))
    reordered = json.dumps(dict(reversed(frame.items())))  # not the venue's key order: the general path
    got = [_events(decoder, sym, text) for text in (usual, usual.encode(), reordered)]
    assert got[0][0] and not got[0][1]
    assert got[0] == got[1] == got[2]


def test_a_bad_value_in_a_one_pass_push_is_counted_like_the_general_path() -> None:
    oi = json.dumps({"arg": {"channel": "open-interest", **OKX_ARG},
                     "data": [{"instId": "BTC-USDT-SWAP", "oi": "-3", "ts": "9"}]}, separators=(",", ":"))
    ticker = json.dumps({"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": 9,
                         "data": {"symbol": "BTCUSDT", "nextFundingTime": "soon"}}, separators=(",", ":"))
    liq = json.dumps({"topic": "allLiquidation.BTCUSDT", "ts": 9,
                      "data": [{"T": 9, "s": "BTCUSDT", "S": "Long", "v": "2", "p": "5"}]}, separators=(",", ":"))
    assert _events(okx.OkxDecoder, OKX_BTC, oi) == ([], Counter({"bad_number": 1}))
    assert _events(bybit.BybitDecoder, BY_BTC, ticker) == ([], Counter({"bad_number": 1}))
    assert _events(bybit.BybitDecoder, BY_BTC, liq) == ([], Counter({"unknown_side": 1}))


def test_gated_sink_retargets_and_keeps_its_gate() -> None:
    first, second = Sink(), Sink()
    gated = GatedSink(first, OpenInterestGate(60_000))
    trade = AggTrade(1, "BTCUSDT", 1, "1", "1", 1, 1, 1, False)
    gated.on_trade(trade, 1.0)
    gated.on_open_interest(OpenInterest("BTCUSDT", "3", 1_000), 1.0)
    gated.retarget(second)
    gated.on_trade(trade, 1.0)
    gated.on_open_interest(OpenInterest("BTCUSDT", "4", 2_000), 1.0)  # the same window: gated
    gated.on_open_interest(OpenInterest("BTCUSDT", "5", 61_000), 1.0)
    assert [k for k, _ in first.events] == ["trade", "oi"]
    assert [(k, getattr(e, "openInterest", None)) for k, e in second.events] == [("trade", None), ("oi", "5")]


def _mixed_read(venue: str) -> list[str | bytes]:
    """One socket read of every kind a venue sends: pushes in the usual key order (text and bytes), one in
    another order, a bad frame, an answer, open interest twice in one window and once in the next."""
    c = (",", ":")
    if venue == "okx":
        oi = lambda v, ts: json.dumps({"arg": {"channel": "open-interest", **OKX_ARG},  # noqa: E731
                                       "data": [{"instId": "BTC-USDT-SWAP", "oi": v, "ts": str(ts)}]}, separators=c)
        pushes = [json.dumps(p, separators=c) for p in OKX_PUSHES]
        return [OKX_TRADE % ("BTC-USDT-SWAP", "BTC-USDT-SWAP", "3"), pushes[0].encode(), '{"arg":{"channel":"trades"',
                pushes[1], json.dumps(dict(reversed(OKX_PUSHES[2].items()))), '{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT-SWAP"}}',
                oi("300", 60_000), oi("310", 61_000), oi("320", 120_000), pushes[3],
                json.dumps({"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [
                    {"instId": "BTC-USDT-SWAP", "details": [{"side": "sell", "sz": "2", "bkPx": "5", "ts": "9"}]}]})]
    tick = lambda v, ts: json.dumps({"topic": "tickers.BTCUSDT", "type": "delta", "ts": ts,  # noqa: E731
                                     "data": {"symbol": "BTCUSDT", "openInterest": v}}, separators=c)
    pushes = [json.dumps(p, separators=c) for p in BY_PUSHES]
    return [pushes[0], BY_FILLS.encode(), '{"topic":"publicTrade.BTCUSDT","ts":', pushes[1],
            json.dumps(dict(reversed(BY_PUSHES[2].items()))), '{"success":true,"op":"subscribe"}',
            tick("4", 60_000), tick("5", 61_000), tick("6", 120_000)]


@pytest.mark.parametrize(("venue", "decoder", "sym"), [("okx", okx.OkxDecoder, OKX_BTC),
                                                       ("bybit", bybit.BybitDecoder, BY_BTC)])
def test_a_read_in_one_batch_equals_frame_by_frame_and_the_gate_only_saves_work(venue, decoder, sym) -> None:
    """handle_batch gives what handle gives frame by frame (a bad frame costs nothing else of its read), and
    a decoder handed the sink's gate emits exactly what reaches the sink through GatedSink without it."""
    frames = _mixed_read(venue)
    one, batch, gated = Sink(), Sink(), Sink()
    d1 = decoder([sym], GatedSink(one, OpenInterestGate(60_000)))
    for f in frames:
        d1.handle(f, 100.0)
    d2 = decoder([sym], GatedSink(batch, OpenInterestGate(60_000)))
    d2.handle_batch(frames, 100.0)
    sink = GatedSink(gated, OpenInterestGate(60_000))
    decoder([sym], sink, venue, sink.gate).handle_batch(frames, 100.0)
    assert one.events == batch.events == gated.events
    assert one.bad == batch.bad == gated.bad == Counter({"malformed_json": 1})
    kinds = Counter(k for k, _ in one.events)
    assert kinds["trade"] == (1 if venue == "okx" else 5) and kinds["kline"] == 1 and kinds["liquidation"] == 1
    assert [(e.openInterest, e.time) for k, e in one.events if k == "oi"][-2:] == \
           ([("3.00", 60_000), ("3.20", 120_000)] if venue == "okx" else [("4", 60_000), ("6", 120_000)])


def test_open_interest_gate_due_is_admit_without_admitting() -> None:
    gate = OpenInterestGate(60_000)
    assert gate.due("X", 1_000) and gate.due("X", 1_000)
    assert gate.admit("X", 1_000)
    assert not gate.due("X", 59_999) and not gate.admit("X", 59_999)
    assert gate.due("X", 60_000) and gate.due("Y", 1_000)
