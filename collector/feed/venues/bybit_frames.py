"""Bybit v5 public linear WebSocket frames as msgspec structs, and the decoders collector.feed.venues.bybit
uses.

Why a module of its own: the frame shapes (pushes, answers, the data of each topic) are Bybit's wire format,
apart from what the decoder does with them; the one-pass decoders read a whole push in Bybit's usual key order
(`{"topic":"<kind>.<...>",...}`), the envelope decoder and the per-topic data decoders everything else.
"""

from __future__ import annotations

from typing import Any

import msgspec

NO_DATA = msgspec.Raw(b"")  # the envelope of an answer (no `data`)


class Envelope(msgspec.Struct):
    """A push (`topic`, `type`, `ts`, `data`) or an answer (`success`, `ret_msg`, `op`)."""

    topic: str = ""
    type: str = ""
    ts: int = 0
    data: msgspec.Raw = NO_DATA
    success: bool | None = None
    ret_msg: str = ""
    op: str = ""


class Trade(msgspec.Struct):
    T: int
    s: str
    S: str
    v: str
    p: str
    i: str = ""


class Ticker(msgspec.Struct):
    symbol: str
    markPrice: str | None = None
    indexPrice: str | None = None
    fundingRate: str | None = None
    nextFundingTime: str | None = None
    openInterest: str | None = None


class Liq(msgspec.Struct):
    T: int
    s: str
    S: str
    v: str
    p: str


class Candle(msgspec.Struct):
    start: int
    end: int
    interval: str
    open: str
    close: str
    high: str
    low: str
    volume: str
    turnover: str
    confirm: bool
    timestamp: int = 0


class TradesFrame(msgspec.Struct, gc=False):
    """A publicTrade push. The one-pass pushes are untracked by the garbage collector (gc=False), as Binance's
    collector.feed.wire.Frame: a push lives for one dispatch and cannot be part of a cycle; their rows are
    tuples, not lists: one allocation less per push (timed with a throwaway script on one recording)."""

    ts: int
    data: tuple[Trade, ...]


class TickerFrame(msgspec.Struct, gc=False):
    """A tickers push; its topic is not decoded (the one-pass path knows it from the prefix it matched, and the
    symbol is in `data`)."""

    data: Ticker
    type: str = ""
    ts: int = 0


class KlineFrame(msgspec.Struct, gc=False):
    topic: str
    data: tuple[Candle, ...]


class LiqFrame(msgspec.Struct):
    topic: str
    data: list[Liq]


TRADES_S = '{"topic":"publicTrade.'
TRADES_B = TRADES_S.encode()
trades_frame = msgspec.json.Decoder(TradesFrame)
# Every other push in Bybit's usual key order ({"topic":"<kind>.<...>",...}) is decoded in one pass too, by
# the kind named at this offset: the envelope-then-data path decodes twice.
PUSH_S = '{"topic":"'
PUSH_B = PUSH_S.encode()
KIND_AT = len(PUSH_S)
ticker_frame = msgspec.json.Decoder(TickerFrame)
kline_frame = msgspec.json.Decoder(KlineFrame)
push_frames: dict[str, msgspec.json.Decoder[Any]] = {
    "tickers.": ticker_frame, "kline.1.": kline_frame,
    "allLiqui": msgspec.json.Decoder(LiqFrame)}  # keyed by the topic's first 8 characters
push_frames_b = {k.encode(): v for k, v in push_frames.items()}  # the same, for a binary frame
# The two most frequent pushes after trades (kline.1 24%, tickers 21% of Bybit's frames) are told by their
# prefix: a startswith each instead of slicing and hashing the topic's first characters (bench/venue_cost.py)
TICKERS_S, KLINE_S = PUSH_S + "tickers.", PUSH_S + "kline.1."
TICKERS_B, KLINE_B = TICKERS_S.encode(), KLINE_S.encode()
envelope = msgspec.json.Decoder(Envelope)
row_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    "publicTrade": msgspec.json.Decoder(list[Trade]), "tickers": msgspec.json.Decoder(Ticker),
    "allLiquidation": msgspec.json.Decoder(list[Liq]), "kline": msgspec.json.Decoder(list[Candle]),
}
