"""Rows -> PostgreSQL binary COPY tuples. Pure: no I/O. The tuples are gathered into batches by
collector.pipeline.batches.

Why binary COPY encoded in the workers: the single writer process must only concatenate bytes and hand
them to `COPY ... FROM STDIN (FORMAT BINARY)`; every per-row Python cost is paid in parallel by the
workers, never serially in the writer (the same split as psycopg's copy.py: formatting apart from I/O).

Wire format (PostgreSQL docs, "COPY", binary format): a header (signature, flags, extension length),
then per tuple an int16 field count and per field an int32 length (-1 = NULL) and the value in the
type's binary send format; the trailer is int16 -1.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from collector.symbols import valid_symbol, valid_venue

# --- framing -------------------------------------------------------------------------------------------------

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)

# 2000-01-01T00:00:00Z in Unix milliseconds: PostgreSQL's timestamp epoch.
PG_EPOCH_MS: Final = 946_684_800_000

# Final: the compiled build (collector.native) reads Final module constants as C statics, not by name
_NULL: Final = struct.pack(">i", -1)
_I16: Final = struct.Struct(">h").pack
_LEN_I64: Final = struct.Struct(">iq").pack
_LEN_F64: Final = struct.Struct(">id").pack
_LEN_I16: Final = struct.Struct(">ih").pack

# Column order of every COPY target: the contract between the workers' encoders and the writer's COPY.
# `venue` (the exchange a row came from: every table's key starts with it) follows `time` so that the
# encoders write it together with the symbol as one cached field pair (RowEncoder._venue_symbol).
COLUMNS: dict[str, tuple[str, ...]] = {
    "trades": ("time", "venue", "symbol", "trade_id", "price", "amount", "usd_value", "side", "save_reason",
               "first_trade_id", "last_trade_id"),
    "funding": ("time", "venue", "symbol", "mark_price", "index_price", "funding_rate", "next_funding_time"),
    "liquidations": ("time", "venue", "symbol", "side", "order_type", "price", "avg_price", "quantity",
                     "filled_quantity", "status", "usd_value"),
    "open_interest": ("time", "venue", "symbol", "open_interest"),
    "gaps": ("venue", "symbol", "kind", "from_id", "to_id", "detected_at", "filled_at", "state", "reason",
             "updated_at"),
}
CANDLE_COLUMNS = ("time", "venue", "symbol", "close_time", "open", "high", "low", "close", "volume",
                  "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume")
CANDLE_TABLES = ("candles_1m", "candles_5m", "candles_30m", "candles_4h", "candles_1d")
for _t in CANDLE_TABLES:
    COLUMNS[_t] = CANDLE_COLUMNS

# --- scalar encoders (length prefix included) ----------------------------------------------------------------


def enc_null() -> bytes:
    return _NULL


def enc_timestamptz(ms: int) -> bytes:
    """Unix milliseconds -> int8 microseconds since 2000-01-01 UTC."""
    return _LEN_I64(8, (ms - PG_EPOCH_MS) * 1000)


def enc_int8(v: int) -> bytes:
    return _LEN_I64(8, v)


def enc_int2(v: int) -> bytes:
    return _LEN_I16(2, v)


def enc_float8(v: float) -> bytes:
    return _LEN_F64(8, v)


def enc_bool(v: bool) -> bytes:
    return b"\x00\x00\x00\x01\x01" if v else b"\x00\x00\x00\x01\x00"


def enc_text(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">i", len(b)) + b


# Longer decimal strings than this are not prices or quantities; refusing them bounds the work per value
# and keeps weight/dscale far inside NUMERIC's int16 limits.
_MAX_NUMERIC_CHARS: Final = 200
_NUMERIC_NEG: Final = 0x4000


_NUMERIC_HEAD: Final = struct.Struct(">ihhhh").pack  # length, ndigits, weight, sign, dscale


def _not_decimal(s: object) -> ValueError:
    return ValueError(f"not a decimal string: {s!r}")


def _enc_numeric(s: str) -> bytes:
    """The digits read once, left to right, into base-10000 groups aligned on the decimal point, gathered in
    one int as 16-bit words (`to_bytes` writes them in one call).

    Why this shape: it runs for every trade price and amount the NumericCache has not seen (a third of them in
    keep_all) and is written for the compiled build (collector.native), where indexing the ASCII bytes and
    small-int arithmetic are C operations: about half the time a value of the int()/divmod version it replaced
    (bench/numeric_cost.py, 0.51-0.58x); as Python source the two are within that script's noise. Leading zero
    groups only move the weight; trailing zero groups are dropped (dscale keeps the displayed zeros), as
    PostgreSQL's numeric_send writes them."""
    if not isinstance(s, str) or not s or len(s) > _MAX_NUMERIC_CHARS or not s.isascii():
        raise _not_decimal(s)
    b = s.encode()
    n = len(b)
    i = 0
    c = b[0]
    neg = c == 45  # "-"
    if neg or c == 43:  # "+"
        i = 1
    dot = b.find(b".", i)
    end = n if dot < 0 else dot
    if end == i or dot == n - 1:  # no integer digits ("-", ".5"), or none after the point ("1.")
        raise _not_decimal(s)
    dscale = 0 if dot < 0 else n - dot - 1
    j = i
    while j < end and b[j] == 48:  # leading zeros of the integer part
        j += 1
    words = 0  # the groups so far, 16 bits each, most significant first
    nd = 0  # groups in `words`
    zeros = 0  # trailing zero groups in `words`
    k = (end - j) % 4 or 4  # digits of the current group still to read: the first integer group may be short
    g = 0
    while j < end:
        d = b[j] - 48
        if d < 0 or d > 9:
            raise _not_decimal(s)
        g = g * 10 + d
        j += 1
        k -= 1
        if k == 0:
            words = (words << 16) | g
            nd += 1
            zeros = zeros + 1 if g == 0 else 0
            g = 0
            k = 4
    weight = nd - 1  # the first integer group is non-zero (leading zeros skipped); -1 when there is none
    if dot >= 0:
        j = dot + 1
        k = 4
        while j < n or k != 4:  # the last fraction group is padded with zeros on the right
            if j < n:
                d = b[j] - 48
                if d < 0 or d > 9:
                    raise _not_decimal(s)
                j += 1
            else:
                d = 0
            g = g * 10 + d
            k -= 1
            if k == 0:
                if nd == 0 and g == 0:  # a leading zero group of the fraction: not stored, one weight lower
                    weight -= 1
                else:
                    words = (words << 16) | g
                    nd += 1
                    zeros = zeros + 1 if g == 0 else 0
                g = 0
                k = 4
    if nd == 0:  # zero: PostgreSQL stores no digits, weight 0, positive sign; the scale is kept
        return _NUMERIC_HEAD(8, 0, 0, 0, dscale)
    if zeros:
        words >>= 16 * zeros
        nd -= zeros
    return _NUMERIC_HEAD(8 + 2 * nd, nd, weight, _NUMERIC_NEG if neg else 0, dscale) + words.to_bytes(2 * nd)


def enc_numeric(s: str) -> bytes:
    """Decimal ASCII string (as Binance sends it) -> NUMERIC binary, exact; ValueError on garbage. Uncached:
    candle volumes, funding figures, liquidations and open interest (a few rows per symbol per minute) almost
    never repeat a value; only trade prices and amounts go through a NumericCache."""
    return _enc_numeric(s)


# Generation sizes of a RowEncoder's NumericCache. Filtered (~1% of trades kept, a few a second per worker): the
# cache saves next to nothing, so it stays small (<= 1,024 entries, ~130 KB) and is full within minutes.
# keep_all (up to ~25k trades/s per worker): on one of 2 workers' share of the simulator's 50k/s stream (60 s)
# generations of 512 hit 50% of prices and amounts, 4,096 62%, 32,768 73%, the single 65,536-entry cache this
# replaced 71% (a miss costs about half as much to encode since 2026-12-07, compiled: bench/numeric_cost.py); at
# those rates 2**15 fills within seconds.
FILTERED_NUMERIC_CACHE = 1 << 9
KEEP_ALL_NUMERIC_CACHE = 1 << 15


def numeric_cache_size(keep_all: bool) -> int:
    """Generation size of the trade NumericCache for a filter that keeps every trade or ~1% of them."""
    return KEEP_ALL_NUMERIC_CACHE if keep_all else FILTERED_NUMERIC_CACHE


class NumericCache:
    """Encoded NUMERIC bytes of recently seen trade prices and amounts, in two generations of `size` entries
    (`size` may change at any time: a SIGHUP that switches keep_all; the next miss past it switches generations).

    Why bounded, and by generations: trade prices and lot sizes repeat heavily within seconds, so a dict lookup
    replaces most encodes; but every distinct value is an entry (~130 B with key, value and table slot), and
    the module-wide cache of 65,536 entries this replaced grew every worker by ~8 MB over the first hour of a
    5,000/s filtered soak (bench/soak.py, issue 12), filling with every new price, candle volume and funding
    figure. When the current generation fills it becomes the previous one, which a miss still reads, so a value
    seen within the last `size` distinct ones stays a hit across the switch; at most 2 x size entries.
    """

    __slots__ = ("size", "_current", "_previous")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"numeric cache size must be >= 1, got {size}")
        self.size = size
        self._current: dict[str, bytes] = {}
        self._previous: dict[str, bytes] = {}

    def get(self, s: str) -> bytes | None:
        """The encoded value if the current generation has it (RowEncoder.trade reads `_current` inline)."""
        return self._current.get(s)

    def miss(self, s: str) -> bytes:
        b = self._previous.get(s)
        if b is None:
            b = _enc_numeric(s)
        if len(self._current) >= self.size:
            self._previous, self._current = self._current, {}
        self._current[s] = b
        return b

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)


def enc_numeric_or_null(s: str | None) -> bytes:
    return _NULL if s is None else _enc_numeric(s)


def enc_timestamptz_or_null(ms: int | None) -> bytes:
    return _NULL if ms is None else enc_timestamptz(ms)


# Symbols and the few enum-like strings (side, save_reason, status...) repeat on every row; caching their
# encoded form skips encode()+pack. Symbols are validated on the first miss only, so validation is free.
_SYMBOL_CACHE: Final[dict[str, bytes]] = {}
_WORD_CACHE: Final[dict[str, bytes]] = {}
# ~500 perpetuals today; the bound only protects against an unbounded stream of new names.
_CACHE_LIMIT: Final = 4096


def enc_symbol(s: str) -> bytes:
    """Validated symbol -> text field; ValueError if `valid_symbol` refuses it."""
    b = _SYMBOL_CACHE.get(s)
    if b is None:
        if not valid_symbol(s):
            raise ValueError(f"invalid symbol: {s!r}")
        b = enc_text(s)
        if len(_SYMBOL_CACHE) < _CACHE_LIMIT:
            _SYMBOL_CACHE[s] = b
    return b


def _enc_word(s: str) -> bytes:
    b = _WORD_CACHE.get(s)
    if b is None:
        b = enc_text(s)
        if len(_WORD_CACHE) < _CACHE_LIMIT:
            _WORD_CACHE[s] = b
    return b


# --- generic row encoder (slow path: tests, rare tables) ------------------------------------------------------

_SCALARS = {
    "timestamptz": enc_timestamptz,
    "text": enc_text,
    "int8": enc_int8,
    "int2": enc_int2,
    "float8": enc_float8,
    "bool": enc_bool,
    "numeric": enc_numeric,
}


def encode_row(types: Sequence[str], values: Sequence[object]) -> bytes:
    """One COPY tuple from type names ('timestamptz' takes int ms) and values; None is NULL."""
    if len(types) != len(values):
        raise ValueError("types and values differ in length")
    parts = [_I16(len(values))]
    for t, v in zip(types, values, strict=True):
        parts.append(_NULL if v is None else _SCALARS[t](v))  # type: ignore[operator]
    return b"".join(parts)


# --- per-table fast paths ---------------------------------------------------------------------------------------
# One method per table, its columns written out in order, alike by design (the duplicate finder pairs them):
# these run for every row kept, and encode_row's loop over type names costs a lookup and a call per column.

_ROW_HEAD: Final = struct.Struct(">hiq").pack  # row header of every timed table: nfields, len(time), time (column 1)
_TRADE_ID: Final = struct.Struct(">iq").pack
_TRADE_USD: Final = struct.Struct(">id").pack
_TRADE_TAIL: Final = struct.Struct(">iqiq").pack  # first_trade_id, last_trade_id
_CANDLE_TRADES: Final = struct.Struct(">iq").pack


class RowEncoder:
    """Encodes one venue's rows for every table: the venue is fixed when the encoder is made.

    Why an object: a worker collects exactly one venue, so the venue field costs nothing per row. It is
    encoded once, together with each symbol (`venue` and `symbol` are adjacent COPY columns), into a cached
    field pair: a row pays the same single dict lookup for venue + symbol that it paid for the symbol alone.
    """

    __slots__ = ("_pairs", "_venue_field", "venue", "numerics")

    def __init__(self, venue: str, numeric_cache: int = FILTERED_NUMERIC_CACHE) -> None:
        if not valid_venue(venue):
            raise ValueError(f"invalid venue: {venue!r} (expected lowercase letters and digits, e.g. binance)")
        self.venue = venue
        self.numerics = NumericCache(numeric_cache)  # trade prices and amounts (generation size)
        self._venue_field = enc_text(venue)
        self._pairs: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"RowEncoder({self.venue!r})"

    def _venue_symbol(self, symbol: str) -> bytes:
        """The venue and symbol fields (length-prefixed, in that order); ValueError for an invalid symbol."""
        b = self._pairs.get(symbol)
        if b is None:
            b = self._venue_field + enc_symbol(symbol)
            if len(self._pairs) < _CACHE_LIMIT:
                self._pairs[symbol] = b
        return b

    def trade(self, time_ms: int, symbol: str, trade_id: int, price: str, amount: str, usd_value: float,
              side: str, save_reason: str, first_trade_id: int, last_trade_id: int) -> bytes:
        """One `trades` tuple. Hot path (every kept trade, up to ~50k/s in keep_all): keep it lean."""
        # Cache lookups inline (encoded bytes are never empty, so `or` only calls the encoder on a miss); typed
        # dicts, so that the compiled build calls PyDict_GetItem rather than a bound method.
        num = self.numerics
        return b"".join((
            _ROW_HEAD(11, 8, (time_ms - PG_EPOCH_MS) * 1000),
            self._pairs.get(symbol) or self._venue_symbol(symbol),
            _TRADE_ID(8, trade_id),
            num._current.get(price) or num.miss(price),
            num._current.get(amount) or num.miss(amount),
            _TRADE_USD(8, usd_value),
            _WORD_CACHE.get(side) or _enc_word(side),
            _WORD_CACHE.get(save_reason) or _enc_word(save_reason),
            _TRADE_TAIL(8, first_trade_id, 8, last_trade_id),
        ))

    def funding(self, time_ms: int, symbol: str, mark_price: str, index_price: str | None,
                funding_rate: str | None, next_funding_time_ms: int | None) -> bytes:
        """One `funding` tuple (mark price stream event)."""
        return b"".join((
            _ROW_HEAD(7, 8, (time_ms - PG_EPOCH_MS) * 1000),
            self._venue_symbol(symbol),
            enc_numeric(mark_price),
            enc_numeric_or_null(index_price),
            enc_numeric_or_null(funding_rate),
            enc_timestamptz_or_null(next_funding_time_ms),
        ))

    def liquidation(self, time_ms: int, symbol: str, side: str, order_type: str, price: str, avg_price: str,
                    quantity: str, filled_quantity: str, status: str, usd_value: float) -> bytes:
        """One `liquidations` tuple (forceOrder event)."""
        return b"".join((
            _ROW_HEAD(11, 8, (time_ms - PG_EPOCH_MS) * 1000),
            self._venue_symbol(symbol),
            _enc_word(side),
            _enc_word(order_type),
            enc_numeric(price),
            enc_numeric(avg_price),
            enc_numeric(quantity),
            enc_numeric(filled_quantity),
            _enc_word(status),
            _TRADE_USD(8, usd_value),
        ))

    def open_interest(self, time_ms: int, symbol: str, open_interest: str) -> bytes:
        """One `open_interest` tuple."""
        return b"".join((
            _ROW_HEAD(4, 8, (time_ms - PG_EPOCH_MS) * 1000),
            self._venue_symbol(symbol),
            enc_numeric(open_interest),
        ))

    def candle(self, open_time_ms: int, symbol: str, close_time_ms: int, open: str, high: str, low: str,
               close: str, volume: str, quote_volume: str, trades: int, taker_buy_volume: str,
               taker_buy_quote_volume: str) -> bytes:
        """One tuple for any `candles_*` table (Binance kline fields, strings as sent). A negative trade count
        and empty taker-buy volumes are NULL: OKX and Bybit publish neither (collector.feed.venues)."""
        return b"".join((
            _ROW_HEAD(13, 8, (open_time_ms - PG_EPOCH_MS) * 1000),
            self._venue_symbol(symbol),
            enc_timestamptz(close_time_ms),
            enc_numeric(open),
            enc_numeric(high),
            enc_numeric(low),
            enc_numeric(close),
            enc_numeric(volume),
            enc_numeric(quote_volume),
            _CANDLE_TRADES(8, trades) if trades >= 0 else _NULL,  # < 0: the venue publishes no count
            enc_numeric(taker_buy_volume) if taker_buy_volume else _NULL,  # "": not published (OKX, Bybit)
            enc_numeric(taker_buy_quote_volume) if taker_buy_quote_volume else _NULL,
        ))

    def gap(self, symbol: str, from_id: int, to_id: int, detected_at_ms: int, filled_at_ms: int | None = None, *,
            kind: str = "trades", state: str | None = None, reason: str = "",
            updated_at_ms: int | None = None) -> bytes:
        """One `gaps` tuple: what the stream missed and how far its repair got (collector.feed.backfill).

        kind "trades": aggregate-trade ids from_id..to_id (inclusive); kind "candles_1m": the 1m candles
        opening from_id..to_id (ms). state: detected / filling / filled / unfillable (default: filled when
        filled_at is set, else unfillable). updated_at orders two versions of the same gap (the writer keeps
        the most advanced, see collector.db.gaps_repo.GAP_STATES).
        """
        if state is None:
            state = "filled" if filled_at_ms is not None else "unfillable"
        return b"".join((
            _I16(10),
            self._venue_symbol(symbol),
            enc_text(kind),
            enc_int8(from_id),
            enc_int8(to_id),
            enc_timestamptz(detected_at_ms),
            enc_timestamptz_or_null(filled_at_ms),
            enc_text(state),
            enc_text(reason),
            enc_timestamptz(updated_at_ms if updated_at_ms is not None else filled_at_ms or detected_at_ms),
        ))
