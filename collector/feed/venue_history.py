"""OKX's and Bybit's REST history for the repair queue (collector.feed.backfill): which pages to ask for a
trade-id or 1m-candle gap, and their rows in the pipeline's shapes (collector.feed.rest_history). Pure
apart from `answer`, which tells the venue's budget what its server said.

OKX v5 (every endpoint newest first; `after` = records older than the cursor, `before` = newer, both
exclusive; limit at most 100; 20 requests / 2 s per IP each):
- candles: `GET /api/v5/market/history-candles?instId=&bar=1m&after=&before=&limit=`, rows
  [ts, o, h, l, c, vol (contracts), volCcy (base units for a swap), volCcyQuote, confirm]. Stored as the
  live decoder stores candle1m (collector.feed.venues.okx): volume = volCcy, quote volume = volCcyQuote,
  no trade count, no taker volumes, close time ts + 59999.
- trades: `GET /api/v5/market/history-trades?instId=&type=1&after=<tradeId>&before=<tradeId>&limit=`:
  a window of at most 100 ids between the two cursors is answered whole, so a gap is paged upwards from
  its first id like Binance's. It serves fills (a stream push carries `count` of them, collector.feed.venues.
  okx), so a gap in fill ids is filled one row per fill; sz is in contracts, stored as sz * ctVal.
Bybit v5:
- candles: `GET /v5/market/kline?category=linear&symbol=&interval=1&start=&end=&limit=` (start/end
  inclusive on the open time, limit at most 1000), rows [startTime, o, h, l, c, volume, turnover], sizes
  in base units; stored as the live kline.1 (close time start + 59999, no count, no taker volumes).
  Throttling is HTTP 200 with retCode 10006, or HTTP 403 for the IP (collector.feed.venue_universe).
- trades: none. Bybit serves only the last 1000 trades (`/v5/market/recent-trade`), not trades by id or
  time, so a trade gap is stored unfillable with that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from collector.feed.rest_budget import WeightGate
from collector.feed.rest_history import Answer, Page, RestHistory, http_answer
from collector.feed.venue_universe import note_response
from collector.feed.venues.common import NO_COUNT, NOT_GIVEN, ContractSize
from collector.feed.venues.okx_frames import (
    Trade as OkxTrade,  # a REST fill has the stream's fields (count: 1)
)
from collector.feed.wire import AggTrade

MINUTE_MS = 60_000
OKX_CANDLES_PATH = "/api/v5/market/history-candles"
OKX_TRADES_PATH = "/api/v5/market/history-trades"
OKX_PAGE = 100  # the documented maximum `limit` of both OKX endpoints
BYBIT_KLINE_PATH = "/v5/market/kline"
BYBIT_PAGE = 1000  # the documented maximum `limit` of /v5/market/kline
# Both venues count requests, not weights (collector.feed.venue_universe.REST_LIMIT_PER_MIN).
REQUEST_WEIGHT = 1
BYBIT_NO_TRADES = "Bybit serves no trades by id or time (only the last 1000, /v5/market/recent-trade)"
BYBIT_THROTTLED = b'"retCode":10006'

# A venue's contract size of an instrument, None while unknown (the instruments are not loaded yet).
ContractOf = Callable[[str], ContractSize | None]


class _OkxTrades(msgspec.Struct):
    code: str
    data: list[OkxTrade] = []
    msg: str = ""


class _OkxCandles(msgspec.Struct):
    code: str
    data: list[list[str]] = []
    msg: str = ""


class _BybitList(msgspec.Struct):
    rows: list[list[str]] = msgspec.field(default_factory=list, name="list")


class _BybitKlines(msgspec.Struct):
    retCode: int
    retMsg: str = ""
    result: _BybitList = msgspec.field(default_factory=_BybitList)  # {} in an error answer


_okx_trades = msgspec.json.Decoder(_OkxTrades)
_okx_candles = msgspec.json.Decoder(_OkxCandles)
_bybit_klines = msgspec.json.Decoder(_BybitKlines)


def minute_windows(first_open_ms: int, last_open_ms: int, per_page: int) -> list[tuple[int, int]]:
    """first..last cut into windows of at most `per_page` minutes, newest first (the venues' order)."""
    out: list[tuple[int, int]] = []
    end = last_open_ms
    while end >= first_open_ms:
        start = max(first_open_ms, end - (per_page - 1) * MINUTE_MS)
        out.append((start, end))
        end = start - MINUTE_MS
    return out


def kline_row(ts: int, o: str, h: str, low: str, c: str, volume: str, quote_volume: str) -> list[Any]:
    """A venue's closed 1m candle as the Binance kline row Pipeline.on_backfill_kline stores: no trade count
    and no taker volumes (NULL, as the live decoders send them)."""
    return [ts, o, h, low, c, volume, ts + MINUTE_MS - 1, quote_volume, NO_COUNT, NOT_GIVEN, NOT_GIVEN]


# --- OKX ------------------------------------------------------------------------------------------------


def okx_candle_pages(inst_id: str, first_open_ms: int, last_open_ms: int) -> list[Page]:
    """history-candles requests for the minutes first..last: each asks for the window strictly between its
    `before` (one ms before the window's first open) and `after` (one ms after its last) cursors."""
    return [(OKX_CANDLES_PATH, {"instId": inst_id, "bar": "1m", "after": end + 1, "before": start - 1,
                                "limit": (end - start) // MINUTE_MS + 1}, REQUEST_WEIGHT)
            for start, end in minute_windows(first_open_ms, last_open_ms, OKX_PAGE)]


def okx_candle_rows(body: bytes) -> list[list[Any]]:
    """Confirmed candles of a history-candles answer, oldest first; ValueError if not a successful answer."""
    page = _okx_candles.decode(body)
    if page.code != "0":
        raise ValueError(f"OKX answered code {page.code} {page.msg!r}")
    rows = []
    for r in page.data:
        if len(r) < 9:
            raise ValueError(f"OKX candle row of {len(r)} fields")
        ts, o, h, low, c, _contracts, vol_ccy, vol_quote, confirm = r[:9]
        if confirm == "1":
            rows.append(kline_row(int(ts), o, h, low, c, vol_ccy, vol_quote))
    rows.sort(key=lambda k: k[0])
    return rows


def okx_trade_page(inst_id: str, next_id: int, to_id: int) -> Page:
    """The history-trades request for ids next_id..min(to_id, next_id + 99): the window strictly between
    before = next_id - 1 and after = last + 1, which holds at most one page."""
    if next_id > to_id:
        raise ValueError("nothing left to fetch")
    last = min(to_id, next_id + OKX_PAGE - 1)
    return OKX_TRADES_PATH, {"instId": inst_id, "type": "1", "after": last + 1, "before": next_id - 1,
                             "limit": last - next_id + 1}, REQUEST_WEIGHT


def okx_trade_rows(body: bytes, inst_id: str, contract: ContractSize) -> list[AggTrade]:
    """A history-trades answer as the stream's pushes, ascending ids; ValueError if not a successful answer.

    REST serves fills; the `trades` channel pushes one row per taker order and price, `count` fills with the
    last one's id (collector.feed.venues.okx). So consecutive fills with one time, price and side become one
    AggTrade (a = l = the last fill's id, f = the first's, q = their sizes summed, times ctVal): a repaired
    push is then the very row the stream would have stored, and one the stream had stored already (a killed
    worker's committed but unacknowledged batch) is the same key, not its fills counted a second time."""
    page = _okx_trades.decode(body)
    if page.code != "0":
        raise ValueError(f"OKX answered code {page.code} {page.msg!r}")
    fills = []
    for r in page.data:
        if r.instId != inst_id:
            raise ValueError(f"OKX answered trades of {r.instId!r} for {inst_id!r}")
        fills.append((int(r.tradeId), int(r.ts), r.px, r.side, Decimal(r.sz)))
    fills.sort()
    out: list[AggTrade] = []
    i = 0
    while i < len(fills):
        first, ts, px, side, size = fills[i]
        j = i + 1
        while j < len(fills) and fills[j][0] == fills[j - 1][0] + 1 and fills[j][1:4] == (ts, px, side):
            size += fills[j][4]
            j += 1
        last = fills[j - 1][0]
        out.append(AggTrade(ts, inst_id, last, px, contract.base_units(format(size.normalize(), "f")), first, last, ts,
                              side == "sell"))
        i = j
    return out


class OkxHistory:
    """OKX: trades by id and 1m candles (see the module docstring)."""

    venue = "okx"
    no_trade_history = ""
    trade_gap_reason = "OKX fill ids skipped on the stream"
    ranged_ids = True  # a row covers fills f..a
    trade_page_limit = OKX_PAGE

    def __init__(self, contract_of: ContractOf) -> None:
        self.contract_of = contract_of

    def trade_page(self, symbol: str, next_id: int, to_id: int) -> Page:
        return okx_trade_page(symbol, next_id, to_id)

    def trades(self, symbol: str, body: bytes) -> list[AggTrade]:
        contract = self.contract_of(symbol)
        if contract is None:
            raise ValueError(f"contract size of {symbol} unknown (instruments not loaded)")
        return okx_trade_rows(body, symbol, contract)

    def candle_pages(self, symbol: str, first_open_ms: int, last_open_ms: int) -> list[Page]:
        return okx_candle_pages(symbol, first_open_ms, last_open_ms)

    def candles(self, symbol: str, body: bytes) -> list[list[Any]]:
        return okx_candle_rows(body)

    def answer(self, gate: WeightGate, status: int, headers: Mapping[str, str], body: bytes,
               now_ms: float) -> Answer:
        note_response("okx", gate, status, dict(headers), now_ms, body)
        return http_answer(status)


# --- Bybit ----------------------------------------------------------------------------------------------


def bybit_kline_pages(symbol: str, first_open_ms: int, last_open_ms: int) -> list[Page]:
    """/v5/market/kline requests for the minutes first..last (start and end are inclusive open times)."""
    return [(BYBIT_KLINE_PATH, {"category": "linear", "symbol": symbol, "interval": "1", "start": start,
                                "end": end, "limit": (end - start) // MINUTE_MS + 1}, REQUEST_WEIGHT)
            for start, end in minute_windows(first_open_ms, last_open_ms, BYBIT_PAGE)]


def bybit_kline_rows(body: bytes) -> list[list[Any]]:
    """The candles of a kline answer, oldest first; ValueError if not a successful answer."""
    page = _bybit_klines.decode(body)
    if page.retCode != 0:
        raise ValueError(f"Bybit answered retCode {page.retCode} {page.retMsg!r}")
    rows = []
    for r in page.result.rows:
        if len(r) < 7:
            raise ValueError(f"Bybit kline row of {len(r)} fields")
        start, o, h, low, c, volume, turnover = r[:7]
        rows.append(kline_row(int(start), o, h, low, c, volume, turnover))
    rows.sort(key=lambda k: k[0])
    return rows


class BybitHistory:
    """Bybit: 1m candles only (see the module docstring)."""

    venue = "bybit"
    no_trade_history = BYBIT_NO_TRADES
    trade_gap_reason = "Bybit trades skipped on the stream"
    ranged_ids = False
    trade_page_limit = 0

    def trade_page(self, symbol: str, next_id: int, to_id: int) -> Page:
        raise ValueError(BYBIT_NO_TRADES)

    def trades(self, symbol: str, body: bytes) -> list[AggTrade]:
        raise ValueError(BYBIT_NO_TRADES)

    def candle_pages(self, symbol: str, first_open_ms: int, last_open_ms: int) -> list[Page]:
        return bybit_kline_pages(symbol, first_open_ms, last_open_ms)

    def candles(self, symbol: str, body: bytes) -> list[list[Any]]:
        return bybit_kline_rows(body)

    def answer(self, gate: WeightGate, status: int, headers: Mapping[str, str], body: bytes,
               now_ms: float) -> Answer:
        note_response("bybit", gate, status, dict(headers), now_ms, body)
        if status == 403 or BYBIT_THROTTLED in body.replace(b" ", b""):
            return "throttled"
        return http_answer(status)


def venue_history(venue: str, contract_of: ContractOf) -> RestHistory:
    """The REST history of an OKX or Bybit worker; `contract_of` gives OKX's contract sizes."""
    if venue == "okx":
        return OkxHistory(contract_of)
    if venue == "bybit":
        return BybitHistory()
    raise ValueError(f"no REST history known for venue {venue!r}")
