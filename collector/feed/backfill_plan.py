"""What a backfill repairs and how it asks for it: the jobs, the REST pages and their weights. Pure.

Why apart from the loop (collector.feed.backfill): the pages and weights follow Binance's documented
limits and are tested as plain functions; the loop only spends budget and talks to the exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from collector.feed.wire import AggTrade

AGG_TRADES_PATH = "/fapi/v1/aggTrades"
KLINES_PATH = "/fapi/v1/klines"
# Binance's maximum page of /fapi/v1/aggTrades; its weight is 20 whatever the limit, so always ask for
# as much of the gap as one page can hold.
AGG_TRADES_LIMIT = 1000
AGG_TRADES_WEIGHT = 20
# Binance's maximum page of /fapi/v1/klines (weight 10 at this size, see kline_weight).
KLINES_LIMIT = 1500
MINUTE_MS = 60_000


# --- pure planning --------------------------------------------------------------------------------------------


def kline_weight(limit: int) -> int:
    """Binance's request weight of /fapi/v1/klines for a given `limit` (documented table)."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def agg_trade_page(symbol: str, next_id: int, to_id: int) -> tuple[str, dict[str, str | int]]:
    """The next aggTrades request of a gap whose ids next_id..to_id are still missing."""
    if next_id > to_id:
        raise ValueError("nothing left to fetch")
    return AGG_TRADES_PATH, {"symbol": symbol, "fromId": next_id, "limit": min(AGG_TRADES_LIMIT, to_id - next_id + 1)}


def kline_pages(symbol: str, first_open_ms: int, last_open_ms: int) -> list[tuple[str, dict[str, str | int], int]]:
    """(path, query, weight) of the klines requests covering the 1m candles opening first..last."""
    pages: list[tuple[str, dict[str, str | int], int]] = []
    start = first_open_ms
    while start <= last_open_ms:
        end = min(last_open_ms, start + (KLINES_LIMIT - 1) * MINUTE_MS)
        limit = (end - start) // MINUTE_MS + 1
        pages.append((KLINES_PATH, {"symbol": symbol, "interval": "1m", "startTime": start, "endTime": end,
                                    "limit": limit}, kline_weight(limit)))
        start = end + MINUTE_MS
    return pages


# --- what is repaired, and where it goes ----------------------------------------------------------------------


class GapLike(Protocol):
    symbol: str
    from_id: int
    to_id: int
    detected_ms: int


class BackfillSink(Protocol):
    """The pipeline's backfill entry points (collector.pipeline.router.Pipeline implements them)."""

    def on_backfill_trade(self, t: AggTrade, gap: GapLike, receipt: float) -> bool: ...
    def on_backfill_kline(self, symbol: str, row: list[Any], receipt: float) -> bool: ...
    def record_gap(self, kind: str, symbol: str, from_id: int, to_id: int, detected_ms: int, state: str,
                   reason: str, updated_ms: int, filled_ms: int | None = None) -> None: ...
    def tail_open(self, symbol: str, after_id: int) -> bool: ...
    def on_tail(self, symbol: str, after_id: int, trades: list[tuple[int, int]], receipt: float) -> None: ...


@dataclass
class TradeGapJob:
    gap: GapLike
    next_id: int

    @property
    def key(self) -> tuple[str, str, int, int]:
        return "trades", self.gap.symbol, self.gap.from_id, self.gap.to_id

    @property
    def detected_ms(self) -> int:
        return self.gap.detected_ms


@dataclass
class CandleJob:
    symbol: str
    first_open_ms: int
    last_open_ms: int
    detected_ms: int = 0

    @property
    def key(self) -> tuple[str, str, int, int]:
        return "candles_1m", self.symbol, self.first_open_ms, self.last_open_ms


@dataclass
class TailCheckJob:
    """A resumed symbol's trades after its checkpoint, to ask for (collector.pipeline.tails); not a gap row."""

    symbol: str
    after_id: int
    detected_ms: int = 0

    @property
    def key(self) -> tuple[str, str, int, int]:
        return "tail", self.symbol, self.after_id, self.after_id


class OpenGapLike(Protocol):
    kind: str
    symbol: str
    from_id: int
    to_id: int
    detected_ms: int


class TakenOverGap:
    """A trade gap read back from the table: no filter state (the pipeline uses the live one)."""

    __slots__ = ("symbol", "from_id", "to_id", "detected_ms", "filter_state")

    def __init__(self, symbol: str, from_id: int, to_id: int, detected_ms: int) -> None:
        self.symbol, self.from_id, self.to_id, self.detected_ms = symbol, from_id, to_id, detected_ms
        self.filter_state = None

    def __repr__(self) -> str:
        return f"Gap({self.symbol}, {self.from_id}..{self.to_id}, taken over)"


class RestAggTrade(msgspec.Struct):
    """One row of /fapi/v1/aggTrades (the stream's fields without e/E/s)."""

    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - Binance's name
    T: int
    m: bool


agg_rows = msgspec.json.Decoder(list[RestAggTrade])
kline_rows = msgspec.json.Decoder(list[list[str | int]])
