"""What each read-API endpoint selects, as SQL composed only from a fixed whitelist, plus its paging rules.

Pure: no I/O, so the rules that decide what a user can make the database do are tested directly. User
input only ever reaches PostgreSQL as a bound parameter; the only identifiers in a statement are the table
and column names spelled out in this module (a timeframe picks one of five fixed candle relations).

Every value leaves the database already in the wire's shape: times as epoch milliseconds (int8), NUMERIC
as float8 (the conversion a quant would otherwise do by hand), so no Decimal or datetime object is built
per row. The Arrow path (collector.api.columnar) asks for times raw (raw_times) and floors them to
milliseconds in bulk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import sql

Kind = Literal["time", "float", "int", "str"]


@dataclass(frozen=True)
class Column:
    """One output column: its name in the response, its wire kind, whether it may be null."""

    name: str
    kind: Kind
    nullable: bool = False


def _cols(spec: str) -> tuple[Column, ...]:
    """'time:time symbol:str index_price:float?' -> Columns (a trailing ? marks a nullable column)."""
    out = []
    for item in spec.split():
        name, _, kind = item.partition(":")
        out.append(Column(name, kind.rstrip("?"), kind.endswith("?")))  # type: ignore[arg-type]
    return tuple(out)


CANDLE_COLUMNS = _cols("time:time venue:str symbol:str close_time:time open:float high:float low:float close:float "
                       "volume:float quote_volume:float trades:int? taker_buy_volume:float? "
                       "taker_buy_quote_volume:float?")  # null where the venue publishes none (OKX, Bybit)
TRADE_COLUMNS = _cols("time:time venue:str symbol:str trade_id:int price:float amount:float usd_value:float side:str "
                      "save_reason:str first_trade_id:int? last_trade_id:int?")
FUNDING_COLUMNS = _cols("time:time venue:str symbol:str mark_price:float index_price:float? funding_rate:float? "
                        "next_funding_time:time?")
LIQUIDATION_COLUMNS = _cols("time:time venue:str symbol:str side:str order_type:str? price:float avg_price:float? "
                            "quantity:float filled_quantity:float? status:str? usd_value:float")
OPEN_INTEREST_COLUMNS = _cols("time:time venue:str symbol:str open_interest:float")
SYMBOL_COLUMNS = _cols("symbol:str venue:str tier:int threshold_usd:float size_quantile_usd:float? score:float? computed_at:time")
LATEST_COLUMNS = _cols("symbol:str venue:str funding_time:time? funding_rate:float? mark_price:float? "
                       "open_interest_time:time? open_interest:float? candle_time:time? close:float?")

# The venues the collector stores (collection.exchanges). Every endpoint takes an optional `venue`: given,
# only that venue's rows; omitted, every venue's, each row naming its venue. Why not default to binance: a
# default would silently hide the other venues' rows from a client that never heard of them.
Venue = Literal["binance", "bybit", "okx"]
VENUES: tuple[Venue, ...] = ("binance", "bybit", "okx")


def venues_param(venue: Venue | None) -> list[str]:
    """The `venues` query parameter: the one asked for, or every venue."""
    if venue is not None and venue not in VENUES:
        raise BadParameter(f"venue: expected one of {', '.join(VENUES)}, got {venue[:32]!r}")
    return [venue] if venue is not None else list(VENUES)


Timeframe = Literal["1m", "5m", "30m", "4h", "1d"]
TIMEFRAMES: tuple[Timeframe, ...] = ("1m", "5m", "30m", "4h", "1d")
SaveReason = Literal["large_trade", "price_change", "time_interval", "keep_all"]


@dataclass(frozen=True)
class Series:
    """A per-symbol time series endpoint: which relation, which columns, how rows are totally ordered."""

    table: str
    columns: tuple[Column, ...]
    # After (time, venue): the rest of the table's primary key, so the order is total and a page boundary
    # inside rows of one millisecond is well defined.
    tiebreak: tuple[str, ...] = ()


SERIES: dict[str, Series] = {
    "trades": Series("trades", TRADE_COLUMNS, ("trade_id",)),
    "funding": Series("funding", FUNDING_COLUMNS),
    "liquidations": Series("liquidations", LIQUIDATION_COLUMNS, ("side", "price", "quantity")),
    "open_interest": Series("open_interest", OPEN_INTEREST_COLUMNS),
}


def candle_series(timeframe: Timeframe, include_partial: bool) -> Series:
    """candles_<tf>_closed (complete periods only, collector.db.schema.closed_view) or candles_<tf>."""
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"timeframe: expected one of {', '.join(TIMEFRAMES)}, got {timeframe!r}")
    table = f"candles_{timeframe}" if include_partial else f"candles_{timeframe}_closed"
    return Series(table, CANDLE_COLUMNS)


def select_list(columns: tuple[Column, ...], sources: tuple[sql.Composable, ...] | None = None,
                raw_times: bool = False, text_floats: frozenset[str] = frozenset()) -> sql.Composable:
    """The output columns in wire shape, aliased c0, c1, ... (`sources`: each column's expression, by default
    its name). raw_times keeps time columns as timestamptz, and the float columns named in text_floats
    (NUMERIC ones) come as their exact decimal text, for collector.api.columnar, which converts both in
    bulk instead of per row."""
    parts: list[sql.Composable] = []
    for i, c in enumerate(columns):
        src = sources[i] if sources is not None else sql.Identifier(c.name)
        if c.kind == "time" and not raw_times:
            # floor, not the cast's rounding: a time with sub-millisecond digits stays in its own millisecond,
            # which the cursor's `time >= ms` relies on (the collector itself stores whole milliseconds)
            expr: sql.Composable = sql.SQL("floor(extract(epoch FROM {}) * 1000)::int8").format(src)
        elif c.kind == "float" and c.name in text_floats:
            expr = sql.SQL("{}::text").format(src)
        elif c.kind == "float":
            expr = sql.SQL("{}::float8").format(src)
        elif c.kind == "str":
            expr = sql.SQL("{}::text").format(src)
        else:
            expr = src
        parts.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(f"c{i}")))
    return sql.SQL(", ").join(parts)


def venue_range_sql(series: Series, cols: sql.Composable, with_reason: bool = False) -> sql.Composed:
    """Rows first .. first + rows of one venue's (v.name's) rows of the symbol's [lo, end), in (time, key)
    order: a range of its (venue, symbol, time, ...) primary key, read in index order, so no sort (plain
    partitions and TimescaleDB chunks are pruned by the range). `cols` is the select list, computed outside
    the LIMIT so the rows an OFFSET passes over cost no cast (collector.api.columnar fetches a big page as
    two such parts at once); the caller supplies v.

    Parameters: symbol, lo, end, (save_reason), first, rows. A page (rows skip .. skip + limit of every
    venue's rows in (time, venue, key) order) is exact from these ranges with first = 0 and rows = skip +
    limit: a row among the first skip + limit of the merged order is among the first skip + limit of its
    own venue, so a page costs the same with one venue or three (collector.api.columnar.merge_venues merges
    them)."""
    reason = sql.SQL(" AND save_reason = %(save_reason)s") if with_reason else sql.SQL("")
    inner = sql.SQL(", ").join(sql.Identifier(c) for c in ("time", *series.tiebreak))
    return sql.SQL("SELECT {cols} FROM (SELECT * FROM {table} WHERE venue = v.name AND symbol = %(symbol)s "
                   "AND time >= %(lo)s AND time < %(end)s{reason} ORDER BY {inner} "
                   "LIMIT %(rows)s OFFSET %(first)s) r").format(
        cols=cols, table=sql.Identifier(series.table), reason=reason, inner=inner)


# Every (venue, symbol) with a tier, by a loose index scan of symbol_tiers_latest (venue, symbol, computed_at
# DESC): one descent per contract, the first key above the previous (venue, symbol). symbol_tiers keeps every
# computation (24 h apart by default, never expired), so a DISTINCT over the table grows with the history:
# with a year of it (496 symbols x 365), `latest` took 250-320 ms and `symbols` 115-140 ms against 5-6 and
# 2-3 ms with one day (a throwaway script, plain PostgreSQL 15, 2026-12-02). Every venue's contracts are
# walked (a few hundred descents each) and the venues asked for filtered after.
_TIERED = """tiered(venue, symbol) AS (
    (SELECT venue, symbol FROM symbol_tiers ORDER BY venue, symbol LIMIT 1)
    UNION ALL
    SELECT n.venue, n.symbol FROM tiered k CROSS JOIN LATERAL (
        SELECT s.venue, s.symbol FROM symbol_tiers s WHERE (s.venue, s.symbol) > (k.venue, k.symbol)
        ORDER BY s.venue, s.symbol LIMIT 1) n
)"""


def symbols_sql(raw_times: bool = False) -> sql.Composed:
    """Each symbol's most recent tier computation on the venues asked for (parameter: venues), ordered by
    symbol then venue: the contracts by _TIERED's loose scan, then each one's newest row by one backward
    scan of the symbol_tiers_latest index, so the cost grows with the contracts, not the history kept."""
    return sql.SQL("WITH RECURSIVE " + _TIERED + """
SELECT {cols} FROM (SELECT t.* FROM tiered k CROSS JOIN LATERAL (
    SELECT * FROM symbol_tiers s WHERE s.venue = k.venue AND s.symbol = k.symbol
    ORDER BY s.computed_at DESC LIMIT 1) t WHERE k.venue = ANY(%(venues)s)) t
ORDER BY symbol, venue""").format(cols=select_list(SYMBOL_COLUMNS, raw_times=raw_times))


# The (venue, symbol)s `latest` covers: every one the collector has computed a tier for (_TIERED), plus every one with
# a 1m candle in the last hour (a fresh installation has no tiers yet). The recent ones are found by a loose
# index scan, one probe of candles_1m's (venue, symbol, time) key per contract: walking the key backwards,
# the first entry below the previous (venue, symbol) is the next contract's latest candle, so an active
# symbol costs one descent. (A DISTINCT over the last hour's rows relied on the BRIN on time, which only
# narrows summarised page ranges: the symbol list alone took 150 ms against 5 ms, 496 symbols, bench/api.py's
# prefill, JIT off; measured before the venue column.) Each contract's last row of each table is then one
# backward scan of its key, so the cost grows with the number of contracts, not with the history kept.
_LATEST_SOURCES = tuple(sql.SQL(src) for src in (
    "u.symbol", "u.venue", "f.time", "f.funding_rate", "f.mark_price", "o.time", "o.open_interest", "c.time",
    "c.close"))
_LATEST_FROM = sql.SQL("""
FROM (SELECT venue, symbol FROM tiered
      UNION
      SELECT venue, symbol FROM recent WHERE symbol IS NOT NULL) u
LEFT JOIN LATERAL (SELECT time, funding_rate, mark_price FROM funding WHERE venue = u.venue AND symbol = u.symbol
                   ORDER BY time DESC LIMIT 1) f ON true
LEFT JOIN LATERAL (SELECT time, open_interest FROM open_interest WHERE venue = u.venue AND symbol = u.symbol
                   ORDER BY time DESC LIMIT 1) o ON true
LEFT JOIN LATERAL (SELECT time, close FROM candles_1m WHERE venue = u.venue AND symbol = u.symbol
                   ORDER BY time DESC LIMIT 1) c ON true
WHERE u.venue = ANY(%(venues)s)
ORDER BY u.symbol, u.venue""")


_RECENT_SYMBOLS = sql.SQL("WITH RECURSIVE " + _TIERED + """, recent(venue, symbol) AS (
    (SELECT venue, symbol FROM candles_1m WHERE time > now() - INTERVAL '1 hour'
     ORDER BY venue DESC, symbol DESC, time DESC LIMIT 1)
    UNION ALL
    SELECT n.venue, n.symbol FROM recent r CROSS JOIN LATERAL (
        SELECT c.venue, c.symbol FROM candles_1m c
        WHERE (c.venue, c.symbol) < (r.venue, r.symbol) AND c.time > now() - INTERVAL '1 hour'
        ORDER BY c.venue DESC, c.symbol DESC, c.time DESC LIMIT 1) n
)
""")


def latest_sql(raw_times: bool = False) -> sql.Composed:
    """Every symbol's last funding, open interest and 1m close per venue asked for (parameter: venues;
    LATEST_COLUMNS' order)."""
    cols = select_list(LATEST_COLUMNS, _LATEST_SOURCES, raw_times)
    return sql.SQL("{recent}SELECT {cols} {rest}").format(recent=_RECENT_SYMBOLS, cols=cols, rest=_LATEST_FROM)


# --- parameters ----------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The time grammar, exactly as the OpenAPI document states it (TIME_SCHEMA): epoch milliseconds, an
# RFC 3339 date-time, or an RFC 3339 full-date (midnight UTC). A stricter grammar than Python's
# fromisoformat on purpose: what the document calls valid is accepted and nothing else is.
_MS = re.compile(r"-?\d{1,15}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_CURSOR = re.compile(r"(\d{1,15})_(\d{1,9})")
# The range PostgreSQL and Python both represent (years 1..9999), in epoch milliseconds.
MIN_MS = -62135596800000
MAX_MS = 253402300799999
_MIN_TIME = datetime.min.replace(tzinfo=UTC)
_MAX_TIME = datetime.max.replace(tzinfo=UTC)

TIME_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"},
                         {"type": "integer", "minimum": MIN_MS, "maximum": MAX_MS}]}
CURSOR_SCHEMA: dict[str, Any] = {"type": "string", "pattern": f"^{_CURSOR.pattern}$"}


class BadParameter(ValueError):
    """A request parameter that cannot be used; the message starts with the parameter's name."""


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(milliseconds=1)


def parse_time(name: str, value: str) -> datetime:
    """Epoch milliseconds, an RFC 3339 date-time or a full-date (UTC) -> an aware datetime in UTC.

    A date-time whose offset moves it past year 1 or 9999 is clamped to that end of the range (it selects
    the same rows: none are stored there)."""
    v = value.strip()
    if _MS.fullmatch(v):
        ms = int(v)
        if not MIN_MS <= ms <= MAX_MS:
            raise BadParameter(f"{name}: epoch milliseconds out of range: {value!r}")
        return ms_to_datetime(ms)
    if _DATE.fullmatch(v) or _DATETIME.fullmatch(v):
        try:
            t = datetime.fromisoformat(v.upper())
        except ValueError:
            pass
        else:
            if t.tzinfo is None:
                return t.replace(tzinfo=UTC)
            try:
                return t.astimezone(UTC)
            except OverflowError:
                return _MIN_TIME if t.year == 1 else _MAX_TIME
    raise BadParameter(f"{name}: expected an RFC 3339 time (2025-03-12T15:00:00Z), a date (2025-03-12) or "
                       f"epoch milliseconds, got {value[:64]!r}")


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: rows at time >= ms, skipping the first `skip` rows at exactly ms.

    A time cursor rather than an offset: a page costs the same however deep into the history it is, and
    rows arriving meanwhile (appended at the end) do not shift it. `skip` counts the rows of one
    millisecond already returned, so a boundary inside same-time rows neither repeats nor loses one.
    """

    ms: int
    skip: int = 0

    def encode(self) -> str:
        return f"{self.ms}_{self.skip}"


def parse_cursor(value: str) -> Cursor:
    m = _CURSOR.fullmatch(value)
    if not m:
        raise BadParameter(f"cursor: expected the next_cursor of a previous page (like 1741791600000_0), "
                           f"got {value[:64]!r}")
    return Cursor(min(int(m.group(1)), MAX_MS), int(m.group(2)))  # past the last time: an empty page


def next_cursor(times: list[int], start: Cursor, limit: int, fetched: int) -> Cursor | None:
    """The cursor after a page (`times`: the page's time column, ms), or None when nothing follows.

    `fetched` is how many rows the query returned for LIMIT limit + 1: more than `limit` means at least
    one row follows the page.
    """
    if fetched <= limit or not times:
        return None
    last = times[-1]
    same = 0
    for t in reversed(times):
        if t != last:
            break
        same += 1
    return Cursor(last, same + (start.skip if last == start.ms else 0))


@dataclass(frozen=True)
class Window:
    """The time range of a request, resolved: [start, end) plus where this page begins."""

    start: datetime
    end: datetime
    cursor: Cursor


DEFAULT_SPAN = timedelta(days=1)


def resolve_window(start: str | None, end: str | None, cursor: str | None, now: datetime) -> Window:
    """start/end/cursor parameters -> a Window; end defaults to now, start to a day before end.

    start at or after end is an empty range (an empty page), not an error."""
    t_end = parse_time("end", end) if end is not None else now
    if start is not None:
        t_start = parse_time("start", start)
    else:
        t_start = t_end - DEFAULT_SPAN if t_end - datetime.min.replace(tzinfo=UTC) > DEFAULT_SPAN else t_end
    cur = parse_cursor(cursor) if cursor is not None else Cursor(datetime_to_ms(t_start))
    return Window(t_start, t_end, cur)
