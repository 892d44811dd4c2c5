"""A page fetched as columns, not rows: every series page of the read API (Arrow end to end without a Python
object per value; JSON and CSV make their values from the columns), and Arrow for `symbols` and `latest`.

Why: fetched as rows, 100k trades cost ~1.2M Python objects in psycopg and as many again to lay them out as
Arrow arrays; that, not the Arrow encoding, made an Arrow response barely faster than a JSON one. Here
PostgreSQL aggregates each column of the page into one bytea of fixed-width big-endian values (or, for
text, the values joined by a separator, see SEPARATOR), the whole page arrives as one row of a dozen bytes
objects, and numpy (Arrow's split, for text) turns each into the Arrow column in one vectorised step.

The values are the ones select_list's row SQL gives (collector.api.query; what `symbols` and `latest` fetch
for JSON, and what tests/api compares with): a float is the double
PostgreSQL's ::float8 gives (a series table's NUMERIC column arrives as its exact decimal text and Arrow's
correctly rounding parser reads it, see _decimal_floats); a time is timestamptz's own binary form
(microseconds since 2000-01-01), floored to milliseconds here exactly as the row path's
floor(extract(epoch ...) * 1000) does, but in bulk instead of in numeric arithmetic per row.

Order: the aggregates read the page's ordered subquery directly (a plain Aggregate over a Limit, no join or
grouping between them), which is the case PostgreSQL documents as feeding an aggregate in the subquery's
order; an ORDER BY inside each aggregate would sort the page once per column (EXPLAIN ANALYZE of 100k
trades on a shared 2-core machine: 840 ms against 290 ms).
tests/api/test_arrow_columns.py compares every endpoint's Arrow body with its JSON body row by row.

Pure: builds SQL and decodes bytes; the I/O is collector.api.db's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from collector.api.query import Column, Series, select_list, venue_range_sql
from collector.db.tables import COLUMN_TYPES

# timestamptz's binary epoch (2000-01-01) in Unix milliseconds
_PG_EPOCH_MS = 946_684_800_000
_EMPTY = sql.SQL("''::bytea")
# A validity byte, 1 where the value is not null: a constant per row, no function call or allocation
# (boolsend(c IS NOT NULL), the same bytes, cost 4% more of a 55k-row trades part with its two nullable
# columns: backend CPU from /proc, means of 23 alternating runs, twice, 2026-12-03). E'' strings: the same
# bytes whatever standard_conforming_strings is.
_FALSE = sql.SQL("E'\\\\x00'::bytea")
_TRUE = sql.SQL("E'\\\\x01'::bytea")
TIMESTAMP = pa.timestamp("ms", tz="UTC")
# Between a text column's values (ASCII's unit separator): a value's length then comes from where the
# separators are, instead of an int4send(octet_length(...)) per value. 100k trades' two text columns cost
# PostgreSQL 15 ms over the bare page with lengths, 6 with the separator, and the whole page 109 -> 86 ms
# (backend CPU from /proc, means of 20 and 30 alternating runs, shared 2-core machine at load 2.5-3).
# Text may hold this character: decode counts the values the separators give (exactly n unless a value
# holds one) and raises SeparatorInText, and the caller fetches the page again with text_lengths=True.
SEPARATOR = "\x1f"


class SeparatorInText(ValueError):
    """A text value of the page holds SEPARATOR, so the values cannot be told apart: fetch with lengths."""


def _aggs(i: int, c: Column, text_floats: frozenset[str], text_lengths: bool) -> list[tuple[sql.Composable, bytes]]:
    """The aggregates one column needs: its values (and lengths, for text with text_lengths), then validity
    if nullable; each with its string_agg delimiter, which joins two parts' bytes into those of their rows
    together (_joined)."""
    ci = sql.Identifier(f"c{i}")
    out: list[tuple[sql.Composable, bytes]] = []
    if c.kind == "float" and c.name in text_floats:  # NUMERIC's text: digits, '.', '-', NaN, Infinity; no ','
        out.append((sql.SQL("string_agg(coalesce({c}, '0'), ',')").format(c=ci), b","))
    elif c.kind == "str" and text_lengths:
        out.append((sql.SQL("string_agg(coalesce({c}, ''), '')").format(c=ci), b""))
        out.append((sql.SQL("string_agg(int4send(octet_length(coalesce({c}, ''))), {e})").format(c=ci, e=_EMPTY),
                    b""))
    elif c.kind == "str":
        out.append((sql.SQL("string_agg(coalesce({c}, ''), {sep})").format(c=ci, sep=sql.Literal(SEPARATOR)),
                    SEPARATOR.encode()))
    else:
        send = {"time": "timestamptz_send", "float": "float8send", "int": "int8send"}[c.kind]
        zero = {"time": "'epoch'::timestamptz", "float": "0::float8", "int": "0::int8"}[c.kind]
        out.append((sql.SQL("string_agg({send}(coalesce({c}, {zero})), {e})").format(
            send=sql.SQL(send), c=ci, zero=sql.SQL(zero), e=_EMPTY), b""))
    if c.nullable:
        out.append((sql.SQL("string_agg(CASE WHEN {c} IS NULL THEN {no} ELSE {yes} END, {e})").format(
            c=ci, no=_FALSE, yes=_TRUE, e=_EMPTY), b""))
    return out


def columns_sql(page: sql.Composable, columns: Sequence[Column], given: Mapping[str, str] | None = None,
                text_floats: frozenset[str] = frozenset(), text_lengths: bool = False) -> sql.Composed:
    """One row: the page's row count, then each column as bytes (see _aggs). `page` is the row query with
    raw times (select_list(..., raw_times=True, text_floats=text_floats)), whose outputs are named c0, c1,
    ... A column in `given` is not fetched: the query pins its value (a series page's symbol, from WHERE
    symbol = %(symbol)s). text_lengths: each text value's length is fetched too (see SEPARATOR)."""
    known = given or {}
    aggs = [a for i, c in enumerate(columns) if c.name not in known
            for a, _ in _aggs(i, c, text_floats, text_lengths)]
    return sql.SQL("SELECT count(*), {aggs} FROM ({page}) p").format(aggs=sql.SQL(", ").join(aggs), page=page)


def _bytes(value: Any) -> bytes:
    """string_agg over no rows is NULL."""
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else bytes(value)


def constant(value: str, n: int) -> pa.DictionaryArray:
    """`value` n times as a dictionary-encoded column (collector.api.encode.CONSTANT_TYPE): one dictionary
    value and n int8 zeros, so neither the API nor a client makes or copies a string per row (polars reads
    it as Categorical, pandas as category)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array([value], pa.string()))


def decode(row: Sequence[Any], columns: Sequence[Column], given: Mapping[str, str] | None = None,
           text_floats: frozenset[str] = frozenset(),
           text_lengths: bool = False) -> tuple[list[pa.Array], np.ndarray[Any, Any] | None]:
    """columns_sql's row (with the same `given`, `text_floats` and `text_lengths`) -> one Arrow array per
    column (times as timestamp[ms, UTC], a column in `given` as constant()), plus the first time column
    in epoch ms (the cursor is computed from it), or None when the endpoint has no time column. SeparatorInText: fetch with text_lengths."""
    arrays, us = _decode(row, columns, given, text_floats, text_lengths)
    return arrays, None if us is None else to_ms(us)


def to_ms(us: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """timestamptz's microseconds since 2000 -> epoch ms, floored (a time before 2000, negative, floors like
    the row path's floor())."""
    return us // 1000 + _PG_EPOCH_MS


def last_millisecond(ms: np.ndarray[Any, Any]) -> list[int]:
    """A page's times (epoch ms, in order) from its last millisecond on: all query.next_cursor reads of them
    (the same cursor as from the whole column, without a Python int per row)."""
    return ms[np.searchsorted(ms, ms[-1]):].tolist() if len(ms) else []


def _split(text: bytes, n: int, sep: str) -> pa.StringArray | None:
    """n values joined by the one-byte `sep` -> a string array of them (split by Arrow in one pass, from the
    bytes as they are), or None when they are not exactly n (a value holds the separator, so they cannot
    be told apart)."""
    if n == 0:
        return pa.array([], pa.string())
    whole = pa.StringArray.from_buffers(1, pa.py_buffer(np.array([0, len(text)], np.int32)), pa.py_buffer(text))
    parts = pc.split_pattern(whole, sep).flatten()
    return parts if len(parts) == n else None


def _decimal_floats(text: bytes, n: int, mask: np.ndarray[Any, Any] | None) -> pa.Array:
    """n comma-separated decimals (NUMERIC's text) -> float64, parsed in bulk by Arrow, whose parser rounds
    correctly (as PostgreSQL's numeric -> float8 does: it prints the numeric and reads it back with
    strtod), so every value is the same double the row path's ::float8 gives (tests/api compare them)."""
    strings = _split(text, n, ",")
    if strings is None:
        raise ValueError("a NUMERIC column's text held a ','")  # numeric_out never writes one
    values = pc.cast(strings, pa.float64())
    return values if mask is None else pc.if_else(pa.array(mask), pa.scalar(None, pa.float64()), values)


def _text(c: Column, data: bytes, values: Iterator[Any], n: int, text_lengths: bool) -> pa.Array:
    """A text column: from its lengths (the next item of `values`) with text_lengths, else from where the
    separators are; then its validity (the next item) if nullable."""
    if text_lengths:
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.frombuffer(_bytes(next(values)), ">i4"), out=offsets[1:])
        strings = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    else:
        split = _split(data, n, SEPARATOR)
        if split is None:
            raise SeparatorInText(f"{c.name}: a value holds the separator {SEPARATOR!r}")
        strings = split
    if not c.nullable:
        return strings
    valid = np.frombuffer(_bytes(next(values)), np.bool_)
    return pc.if_else(pa.array(valid), strings, pa.scalar(None, pa.string()))


def _decode(row: Sequence[Any], columns: Sequence[Column], given: Mapping[str, str] | None,
            text_floats: frozenset[str] = frozenset(),
            text_lengths: bool = False) -> tuple[list[pa.Array], np.ndarray[Any, Any] | None]:
    """decode(), with the first time column as timestamptz's raw microseconds (the exact sort key)."""
    n = int(row[0])
    values = iter(row[1:])
    known = given or {}
    arrays: list[pa.Array] = []
    first_us: np.ndarray[Any, Any] | None = None
    for c in columns:
        if c.name in known:
            arrays.append(constant(known[c.name], n))
            continue
        data = _bytes(next(values))
        if c.kind == "str":
            arrays.append(_text(c, data, values, n, text_lengths))
            continue
        valid = np.frombuffer(_bytes(next(values)), np.bool_) if c.nullable else None
        mask = ~valid if valid is not None else None
        if c.kind == "float" and c.name in text_floats:
            arrays.append(_decimal_floats(data, n, mask))
        elif c.kind == "float":
            arrays.append(pa.array(np.frombuffer(data, ">f8").astype("<f8"), pa.float64(), mask=mask))
        elif c.kind == "int":
            arrays.append(pa.array(np.frombuffer(data, ">i8").astype("<i8"), pa.int64(), mask=mask))
        else:
            us = np.frombuffer(data, ">i8").astype("<i8")
            if first_us is None:
                first_us = us
            arrays.append(pa.array(to_ms(us), pa.int64(), mask=mask).view(TIMESTAMP))
    return arrays, first_us


# --- a series page: one aggregate row per venue, merged here ----------------------------------------------------
#
# Why not aggregate the venues' merged page (ORDER BY time, venue, key over their ranges): that is a sort
# of the whole page in PostgreSQL (100k trades: a quarter of the statement, spilling to disk at the default
# work_mem), and the venue column costs two more aggregates. Each venue's range is already in (time, key)
# order (its primary key), and the venue is known per range, so PostgreSQL only reads and aggregates; the
# merge by time, a stable numpy argsort over the venues in name order, is needed only when more than one
# venue has rows.

# A series page's columns pinned by its WHERE: never fetched, built by constant() (Arrow sends them
# dictionary-encoded: collector.api.encode.CONSTANT_TYPE)
PAGE_GIVEN = ("symbol", "venue")
# The series tables' NUMERIC columns: fetched as their decimal text (numeric_out alone), not cast to float8
# in PostgreSQL (numeric_out, then float8in, then float8send), and parsed by Arrow. Two such columns of 100k
# trades: 54-86 ms against 86-146 ms of PostgreSQL (string_agg of each form over the same rows, three
# alternating runs on the shared 2-core machine at load average ~7).
NUMERIC_COLUMNS = frozenset(name for name, kind in COLUMN_TYPES.items() if kind.startswith("NUMERIC"))


def venue_pages_sql(series: Series, with_reason: bool = False, text_lengths: bool = False) -> sql.Composed:
    """One row per venue asked for: the venue, then columns_sql's row over venue_range_sql (raw times).
    Parameters: venues (text[]), then query.venue_range_sql's (first and rows: one of page_parts())."""
    page = venue_range_sql(series, select_list(series.columns, raw_times=True, text_floats=NUMERIC_COLUMNS),
                           with_reason)
    aggs = columns_sql(page, series.columns, dict.fromkeys(PAGE_GIVEN, ""), NUMERIC_COLUMNS, text_lengths)
    return sql.SQL("SELECT v.name, a.* FROM unnest(%(venues)s::text[]) v(name) CROSS JOIN LATERAL ({}) a").format(
        aggs)


# A page of at least this many rows per venue is fetched as two parts at once, on two sessions sharing one
# snapshot (collector.api.db.fetch_parts), so PostgreSQL spends two cores on it: PostgreSQL is most of a
# big page's time (bench/README.md "Read API"; measured at 100k rows). Below it, one statement: the split
# was not measured to pay for its two extra round trips and second session on small pages, so the pages
# the latency targets ask for (1,440 candles, 3,600 trades) stay one statement on one session.
SPLIT_ROWS = 20_000
# The first part's share of a split page, in percent. Not half: the second part's OFFSET walks the first
# part's rows through the index and heap before producing its own, so with halves the second part is the
# longer one and the page waits for it. 100k trades (the statement of one part alone, wall, medians of 21
# alternating runs on the 2-core machine, 2026-12-03): 50k rows 62.5 ms against the other 50k 80.5 ms (so
# passing over a row costs about 30% of producing one), 55k 74.7 ms against 45k 75.2 ms.
FIRST_PART_PERCENT = 55


def page_parts(skip: int, limit: int) -> list[dict[str, int]]:
    """venue_pages_sql's `first` and `rows` for each part of a page of skip + limit rows per venue: one
    part, or, for a page of SPLIT_ROWS or more, two: FIRST_PART_PERCENT of its rows (rounded up), then the
    rest. Their rows, in part order, are the page's (when every part reads one snapshot)."""
    total = skip + limit
    if total < SPLIT_ROWS:
        return [{"first": 0, "rows": total}]
    first = min(total - 1, -(-total * FIRST_PART_PERCENT // 100))  # never an empty second part
    return [{"first": 0, "rows": first}, {"first": first, "rows": total - first}]


def _joined(parts: Sequence[Sequence[Any]], columns: Sequence[Column], given: Mapping[str, str],
            text_lengths: bool) -> list[Any]:
    """One venue's consecutive parts (columns_sql rows, after the venue) -> the one row columns_sql would
    give for their rows together: each aggregate's bytes joined (text and NUMERIC text with their
    separator between two parts that have values). Joining the bytes before the one decode costs the API
    less than decoding each part and concatenating the Arrow arrays (a memcpy of the bytes against a
    second pass of every column: 100k trades, 35 ms for one part and 44 for two decoded apart, merge_venues
    timed in-process by time.process_time, medians of 7, load ~12)."""
    if len(parts) == 1:
        return list(parts[0])
    counts = [int(p[0]) for p in parts]
    out: list[Any] = [sum(counts)]
    k = 1
    for c in columns:
        if c.name in given:
            continue
        for _, sep in _aggs(0, c, NUMERIC_COLUMNS, text_lengths):  # venue_pages_sql's aggregates
            chunks = [_bytes(p[k]) for p, n in zip(parts, counts, strict=True) if n]
            out.append(sep.join(chunks))
            k += 1
    return out


def merge_venues(rows: Sequence[Sequence[Any]], columns: Sequence[Column], symbol: str, skip: int,
                 limit: int, text_lengths: bool = False) -> tuple[list[pa.Array], np.ndarray[Any, Any]]:
    """venue_pages_sql's rows (of every part of page_parts(), in part order) -> the page: rows skip ..
    skip + limit of the (time, venue, key) order, as Arrow arrays, plus its time column in epoch ms.

    A venue's parts are joined in part order (its first skip + limit rows, see _joined). The venues are then
    concatenated in name order (binance < bybit < okx in every collation), each in its own (time, key)
    order, then stably sorted by exact time (microseconds, not the floored milliseconds: two venues' rows
    inside one millisecond keep their true order), which is (time, venue, key) order. Arrow's
    concatenation unifies the venues' one-value dictionaries (symbol: one value, venue: one per venue)."""
    by_venue: dict[str, list[Sequence[Any]]] = {}
    for row in rows:  # in part order, so each venue's parts stay in order
        by_venue.setdefault(str(row[0]), []).append(row[1:])
    pages = [_decode(_joined(by_venue[v], columns, dict.fromkeys(PAGE_GIVEN, ""), text_lengths), columns,
                     {"symbol": symbol, "venue": v}, NUMERIC_COLUMNS, text_lengths) for v in sorted(by_venue)]
    if not pages:
        raise ValueError("venue_pages_sql returned no row: no venue was asked for")
    filled = [p for p in pages if p[1] is not None and len(p[1])]
    if len(filled) <= 1:
        arrays, us = (filled or pages)[0]
        assert us is not None  # every series has its time first
        return [a.slice(skip, limit) for a in arrays], to_ms(us[skip:skip + limit])
    all_us = np.concatenate([p[1] for p in filled if p[1] is not None])
    take = np.argsort(all_us, kind="stable")[skip:skip + limit]
    order = pa.array(take)
    merged = [pa.concat_arrays([p[0][i] for p in filled]).take(order) for i in range(len(columns))]
    return merged, to_ms(all_us[take])


def empty_pages(series: Iterable[Series]) -> list[list[pa.Array]]:
    """An empty page of each series, through merge_venues as a fetched page goes (one venue's row of no rows).

    Why: the app decodes and renders these while it starts (collector.api.app's lifespan), because pyarrow
    imports pandas, when installed, the first time it converts a numpy array (335 modules): the first request
    after a start took 170-470 ms against ~10 ms for the next (throwaway probes and bench/api.py's slowest
    request, 2026-12-03). tests/api/test_first_request.py checks that the first requests import nothing."""
    out = []
    for s in series:
        aggregates = sum(len(_aggs(i, c, NUMERIC_COLUMNS, False)) for i, c in enumerate(s.columns)
                         if c.name not in PAGE_GIVEN)
        arrays, _ = merge_venues([("binance", 0, *([None] * aggregates))], s.columns, "", 0, 0)
        out.append(arrays)
    return out
