"""What the REST repair queue (collector.feed.backfill) asks of a venue: its history endpoints, the parsing
of their pages into the pipeline's shapes, and how to read its answers. Binance's adapter lives here.

Why an adapter: the queue, the budget, the states of a gap row, retries, 429/ban pauses and the take-over
of unfinished rows are the same on every venue; only URLs, page formats and rate-limit answers differ.
Each venue's parts are a small object the Backfiller takes (OKX's and Bybit's: collector.feed.venue_history),
so there is one repair machine. Pages are planned up front from the gap and parsed by pure functions.

Shapes handed to the pipeline:
- trades: collector.feed.wire.AggTrade, ascending ids, amounts in base units (contract sizes applied);
- candles: a Binance /fapi/v1/klines row (open time, o, h, l, c, volume, close time, quote volume,
  trades, taker buy volume, taker buy quote volume), which Pipeline.on_backfill_kline stores; a venue
  that publishes no trade count or taker volumes puts -1 and "" there, as its live decoder does (NULL).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from collector.feed.backfill_plan import (
    AGG_TRADES_LIMIT,
    AGG_TRADES_WEIGHT,
    agg_rows,
    agg_trade_page,
    kline_pages,
    kline_rows,
)
from collector.feed.rest_budget import WeightGate
from collector.feed.wire import AggTrade

# (path, query, weight) of one REST request
Page = tuple[str, dict[str, str | int], int]
# How the venue's answer reads: data to use, a rate limit (the budget pauses; the request is retried),
# or a failure (retried a few times, then the repair is deferred).
Answer = Literal["ok", "throttled", "failed"]


class RestHistory(Protocol):
    """One venue's REST history, as the Backfiller uses it."""

    venue: str
    # Why trade gaps cannot be repaired on this venue ("" when they can): stored as the gap's reason.
    no_trade_history: str
    # The reason stored with a trade gap when it is detected (names the venue's ids).
    trade_gap_reason: str
    # Trades one page can hold (a tail check asks for one page after the checkpoint).
    trade_page_limit: int
    # Whether a trade row covers the ids f..a (OKX: a push of `count` fills) rather than the one id a.
    ranged_ids: bool

    def trade_page(self, symbol: str, next_id: int, to_id: int) -> Page:
        """The request for the trades next_id.. (at most to_id) still missing."""
        ...

    def trades(self, symbol: str, body: bytes) -> list[AggTrade]:
        """A trade page's rows, ascending ids; ValueError if the body is not a usable page."""
        ...

    def candle_pages(self, symbol: str, first_open_ms: int, last_open_ms: int) -> list[Page]:
        """The requests covering the 1m candles opening first..last."""
        ...

    def candles(self, symbol: str, body: bytes) -> list[list[Any]]:
        """A candle page's closed 1m candles as kline rows (see the module docstring); ValueError if unusable."""
        ...

    def answer(self, gate: WeightGate, status: int, headers: Mapping[str, str], body: bytes,
               now_ms: float) -> Answer:
        """Tell the budget what the venue answered (its rate-limit signals) and classify the answer."""
        ...


def http_answer(status: int) -> Answer:
    """Binance's and OKX's reading: 200 is data, 429 (and Binance's 418 ban) a rate limit."""
    return "ok" if status == 200 else "throttled" if status in (429, 418) else "failed"


class BinanceHistory:
    """Binance USDT-M: /fapi/v1/aggTrades by id, /fapi/v1/klines by time (collector.feed.backfill_plan)."""

    venue = "binance"
    no_trade_history = ""
    trade_gap_reason = "aggTrade ids skipped on the stream"
    ranged_ids = False
    trade_page_limit = AGG_TRADES_LIMIT

    def trade_page(self, symbol: str, next_id: int, to_id: int) -> Page:
        path, query = agg_trade_page(symbol, next_id, to_id)
        return path, query, AGG_TRADES_WEIGHT

    def trades(self, symbol: str, body: bytes) -> list[AggTrade]:
        return [AggTrade(E=r.T, s=symbol, a=r.a, p=r.p, q=r.q, f=r.f, l=r.l, T=r.T, m=r.m)
                for r in agg_rows.decode(body)]

    def candle_pages(self, symbol: str, first_open_ms: int, last_open_ms: int) -> list[Page]:
        return kline_pages(symbol, first_open_ms, last_open_ms)

    def candles(self, symbol: str, body: bytes) -> list[list[Any]]:
        return kline_rows.decode(body)

    def answer(self, gate: WeightGate, status: int, headers: Mapping[str, str], body: bytes,
               now_ms: float) -> Answer:
        gate.on_response(status, headers, now_ms)
        return http_answer(status)
