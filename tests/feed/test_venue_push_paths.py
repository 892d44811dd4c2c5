"""The one-decode paths of every OKX and Bybit push (not only trades) give exactly the events of the general
envelope-then-data path, bad values in them are counted by the same kind, and GatedSink hands events to a
new inner sink after `retarget` while keeping its open-interest gate."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from test_venues import BY_BTC, OKX_BTC, Sink

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
