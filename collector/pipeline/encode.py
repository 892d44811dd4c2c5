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
from collections.abc import Callable, Sequence

from collector.symbols import valid_symbol, valid_venue

# --- framing -------------------------------------------------------------------------------------------------

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)

# 2000-01-01T00:00:00Z in Unix milliseconds: PostgreSQL's timestamp epoch.
PG_EPOCH_MS = 946_684_800_000

_NULL = struct.pack(">i", -1)
_I16 = struct.Struct(">h").pack
_LEN_I64 = struct.Struct(">iq").pack
_LEN_F64 = struct.Struct(">id").pack
_LEN_I16 = struct.Struct(">ih").pack

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
_MAX_NUMERIC_CHARS = 200
_NUMERIC_NEG = 0x4000


_NUMERIC_PACKS: dict[int, Callable[..., bytes]] = {}


def _numeric_packer(ndigits: int) -> Callable[..., bytes]:
    p = _NUMERIC_PACKS.get(ndigits)
    if p is None:
        p = _NUMERIC_PACKS[ndigits] = struct.Struct(f">ihhhh{ndigits}H").pack
    return p


def _enc_numeric(s: str) -> bytes:
    if not isinstance(s, str) or not s or len(s) > _MAX_NUMERIC_CHARS:
        raise ValueError(f"not a decimal string: {s!r}")
    neg = s[0] == "-"
    body = s[1:] if neg or s[0] == "+" else s
    ip, dot, fp = body.partition(".")
    if not (ip.isdigit() and ip.isascii()) or (dot and not (fp.isdigit() and fp.isascii())):
        raise ValueError(f"not a decimal string: {s!r}")
    dscale = len(fp)
    # The digits as one integer, the fraction padded on the right to whole base-10000 groups (groups are
    # aligned on the decimal point); int() and divmod do in C what slicing 4-digit strings did per group.
    fpad = -dscale % 4
    n = int(ip + fp + "0" * fpad if fpad else ip + fp)
    if not n:  # zero: PostgreSQL stores no digits, weight 0, positive sign; the scale is kept
        return _numeric_packer(0)(8, 0, 0, 0, dscale)
    groups = []  # least significant first
    while n:
        n, g = divmod(n, 10000)
        groups.append(g)
    weight = len(groups) - 1 - (dscale + fpad) // 4
    i = 0
    while not groups[i]:  # trailing zero groups are dropped (dscale keeps the displayed zeros)
        i += 1
    groups = groups[:i - 1:-1] if i else groups[::-1]
    nd = len(groups)
    return _numeric_packer(nd)(8 + 2 * nd, nd, weight, _NUMERIC_NEG if neg else 0, dscale, *groups)


# Trade prices and quantities repeat heavily within seconds (same tick, same lot sizes): caching the encoded
# bytes turns most of the trade path's NUMERIC encodes into one dict lookup (a plain dict: its get() is about
# half an lru_cache hit, and encode_trade calls it inline). Bounded small because it is per worker: at 2**16
# entries (~130 B each with key, value and table slot) it grew every worker by ~8 MB over the first hour of a
# 5,000/s soak (bench/soak.py, issue 12), since the distinct strings seen (candle volumes, funding rates,
# every new price) only ever added entries until the cap. Two generations instead of one emptied dict: when the
# current one fills it becomes the previous one, which a miss still reads, so a value seen in the last few
# thousand distinct strings stays a hit across the switch; at most 2 x _NUMERIC_CACHE_SIZE entries (~1 MB).
_NUMERIC_CACHE_SIZE = 1 << 12
_NUMERIC_CACHE: dict[str, bytes] = {}
_NUMERIC_PREVIOUS: dict[str, bytes] = {}
_numeric_cached = _NUMERIC_CACHE.get


def enc_numeric(s: str) -> bytes:
    """Decimal ASCII string (as Binance sends it) -> NUMERIC binary, exact; ValueError on garbage. Cached:
    for values that repeat (trade prices and amounts); enc_numeric_once for those that rarely do."""
    b = _NUMERIC_CACHE.get(s)
    if b is None:
        b = _NUMERIC_PREVIOUS.get(s)
        if b is None:
            b = _enc_numeric(s)
        if len(_NUMERIC_CACHE) >= _NUMERIC_CACHE_SIZE:
            # contents move, the dict objects stay: encode_trade holds _NUMERIC_CACHE's bound get()
            _NUMERIC_PREVIOUS.clear()
            _NUMERIC_PREVIOUS.update(_NUMERIC_CACHE)
            _NUMERIC_CACHE.clear()
        _NUMERIC_CACHE[s] = b
    return b


# Candle volumes, funding and mark prices, liquidation quantities, open interest: a few rows per symbol per
# minute whose values almost never repeat, so caching them would only push the trades' values out.
enc_numeric_once = _enc_numeric


def enc_numeric_or_null(s: str | None) -> bytes:
    return _NULL if s is None else enc_numeric_once(s)


def enc_timestamptz_or_null(ms: int | None) -> bytes:
    return _NULL if ms is None else enc_timestamptz(ms)


# Symbols and the few enum-like strings (side, save_reason, status...) repeat on every row; caching their
# encoded form skips encode()+pack. Symbols are validated on the first miss only, so validation is free.
_SYMBOL_CACHE: dict[str, bytes] = {}
_WORD_CACHE: dict[str, bytes] = {}
# ~500 perpetuals today; the bound only protects against an unbounded stream of new names.
_CACHE_LIMIT = 4096
_symbol_cached = _SYMBOL_CACHE.get
_word_cached = _WORD_CACHE.get


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

_ROW_HEAD = struct.Struct(">hiq").pack  # row header of every timed table: nfields, len(time), time (column 1)
_TRADE_ID = struct.Struct(">iq").pack
_TRADE_USD = struct.Struct(">id").pack
_TRADE_TAIL = struct.Struct(">iqiq").pack  # first_trade_id, last_trade_id
_CANDLE_TRADES = struct.Struct(">iq").pack


class RowEncoder:
    """Encodes one venue's rows for every table: the venue is fixed when the encoder is made.

    Why an object: a worker collects exactly one venue, so the venue field costs nothing per row. It is
    encoded once, together with each symbol (`venue` and `symbol` are adjacent COPY columns), into a cached
    field pair: a row pays the same single dict lookup for venue + symbol that it paid for the symbol alone.
    """

    __slots__ = ("_pairs", "_pair_cached", "_venue_field", "venue")

    def __init__(self, venue: str) -> None:
        if not valid_venue(venue):
            raise ValueError(f"invalid venue: {venue!r} (expected lowercase letters and digits, e.g. binance)")
        self.venue = venue
        self._venue_field = enc_text(venue)
        self._pairs: dict[str, bytes] = {}
        self._pair_cached = self._pairs.get

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
        # Cache lookups inline (encoded bytes are never empty, so `or` only calls the encoder on a miss).
        return b"".join((
            _ROW_HEAD(11, 8, (time_ms - PG_EPOCH_MS) * 1000),
            self._pair_cached(symbol) or self._venue_symbol(symbol),
            _TRADE_ID(8, trade_id),
            _numeric_cached(price) or enc_numeric(price),
            _numeric_cached(amount) or enc_numeric(amount),
            _TRADE_USD(8, usd_value),
            _word_cached(side) or _enc_word(side),
            _word_cached(save_reason) or _enc_word(save_reason),
            _TRADE_TAIL(8, first_trade_id, 8, last_trade_id),
        ))

    def funding(self, time_ms: int, symbol: str, mark_price: str, index_price: str | None,
                funding_rate: str | None, next_funding_time_ms: int | None) -> bytes:
        """One `funding` tuple (mark price stream event)."""
        return b"".join((
            _ROW_HEAD(7, 8, (time_ms - PG_EPOCH_MS) * 1000),
            self._venue_symbol(symbol),
            enc_numeric_once(mark_price),
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
            enc_numeric_once(price),
            enc_numeric_once(avg_price),
            enc_numeric_once(quantity),
            enc_numeric_once(filled_quantity),
            _enc_word(status),
            _TRADE_USD(8, usd_value),
        ))

    def open_interest(self, time_ms: int, symbol: str, open_interest: str) -> bytes:
        """One `open_interest` tuple."""
        return b"".join((
            _ROW_HEAD(4, 8, (time_ms - PG_EPOCH_MS) * 1000),
            self._venue_symbol(symbol),
            enc_numeric_once(open_interest),
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
            enc_numeric_once(open),
            enc_numeric_once(high),
            enc_numeric_once(low),
            enc_numeric_once(close),
            enc_numeric_once(volume),
            enc_numeric_once(quote_volume),
            _CANDLE_TRADES(8, trades) if trades >= 0 else _NULL,  # < 0: the venue publishes no count
            enc_numeric_once(taker_buy_volume) if taker_buy_volume else _NULL,  # "": not published (OKX, Bybit)
            enc_numeric_once(taker_buy_quote_volume) if taker_buy_quote_volume else _NULL,
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
