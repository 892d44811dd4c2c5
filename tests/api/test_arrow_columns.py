"""The Arrow path (a page fetched as columns, collector.api.columnar) carries exactly the JSON path's values.

JSON is checked against SQL ground truth (test_endpoints.py); here every endpoint's Arrow body must equal
its JSON body value by value, page by page (the same next_cursor), with the column types the schema
promises (series pages make both formats from one column fetch; `symbols` and `latest` fetch JSON as rows). The edge cases the collector's data may not contain (times before
2000 and inside a millisecond, NULLs in every kind, multi-byte text, an empty page) are checked on a
literal page, against the row path's own SQL.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import psycopg
import pyarrow as pa
import pytest
from conftest import SEP_SYMBOL, SUBMS_SYMBOL, TIE_SYMBOL
from psycopg import sql

from collector.api import columnar, encode, query

ARROW = {"Accept": encode.ARROW_MEDIA_TYPE}
WIDE = {"start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "time_format": "ms"}
_PY = {"time": int, "float": float, "int": int, "str": str}


def _arrow_rows(table: pa.Table, columns: tuple[query.Column, ...],
                constant: tuple[str, ...] = ()) -> list[list[Any]]:
    assert table.schema.remove_metadata() == encode.arrow_schema(columns, constant)
    cols = [table.column(c.name).cast(pa.int64()).to_pylist() if c.kind == "time"
            else table.column(c.name).to_pylist() for c in columns]
    rows = [list(r) for r in zip(*cols, strict=True)]
    for r in rows:
        for c, v in zip(columns, r, strict=True):
            assert v is None and c.nullable or type(v) is _PY[c.kind], (c, v)
    return rows


def both_pages(api_url: str, path: str, columns: tuple[query.Column, ...],
               **params: Any) -> tuple[list[list[Any]], int]:
    """Every page in JSON and in Arrow, asserting each pair equal (rows and cursor); all rows, page count.
    A series page's symbol and venue must arrive dictionary-encoded (encode.CONSTANT_TYPE)."""
    constant = () if path in ("symbols", "latest") else columnar.PAGE_GIVEN
    out: list[list[Any]] = []
    pages = 0
    params = dict(params)
    while True:
        j = httpx.get(f"{api_url}/api/v1/{path}", params=params, timeout=30)
        a = httpx.get(f"{api_url}/api/v1/{path}", params=params, headers=ARROW, timeout=30)
        assert j.status_code == 200 and a.status_code == 200, (j.text, a.text)
        assert a.headers["content-type"] == encode.ARROW_MEDIA_TYPE
        body = j.json()
        want = [[row[c.name] for c in columns] for row in body["data"]]
        table = pa.ipc.open_stream(a.content).read_all()
        assert _arrow_rows(table, columns, constant) == want, (path, params)
        cursor = (table.schema.metadata or {}).get(b"next_cursor")
        assert (cursor.decode() if cursor else None) == body["next_cursor"] == a.headers.get("x-next-cursor")
        out += want
        pages += 1
        if body["next_cursor"] is None:
            return out, pages
        params["cursor"] = body["next_cursor"]


@pytest.fixture(scope="module")
def symbols(filled_db: str) -> list[str]:
    with psycopg.connect(filled_db) as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT symbol FROM candles_1m ORDER BY 1")]


def test_candles_every_timeframe(api_url: str, symbols: list[str]) -> None:
    for tf in query.TIMEFRAMES:
        for partial in ("false", "true"):
            rows, _ = both_pages(api_url, "candles", query.CANDLE_COLUMNS, symbol=symbols[0], timeframe=tf,
                                 include_partial=partial, **WIDE)
            assert rows or (tf, partial) != ("1m", "true")
    rows, pages = both_pages(api_url, "candles", query.CANDLE_COLUMNS, symbol=symbols[0], limit=3, **WIDE)
    assert len(rows) >= 8 and pages >= 3


@pytest.mark.parametrize("limit", [1, 3, 7, 1000])
def test_trades_pages_inside_one_millisecond(api_url: str, limit: int) -> None:
    for symbol in (TIE_SYMBOL, SUBMS_SYMBOL):
        rows, _ = both_pages(api_url, "trades", query.TRADE_COLUMNS, symbol=symbol, limit=limit, **WIDE)
        assert len(rows) == {TIE_SYMBOL: 40, SUBMS_SYMBOL: 8}[symbol]
    assert any(r[-1] is None for r in both_pages(api_url, "trades", query.TRADE_COLUMNS, symbol=TIE_SYMBOL,
                                                 **WIDE)[0])


@pytest.mark.parametrize("limit", [1, 2, 4, 1000])
def test_text_holding_the_separator(api_url: str, limit: int) -> None:
    """A page whose text holds columnar.SEPARATOR is fetched again with lengths: the same rows as JSON."""
    rows, _ = both_pages(api_url, "trades", query.TRADE_COLUMNS, symbol=SEP_SYMBOL, limit=limit, **WIDE)
    side = [c.name for c in query.TRADE_COLUMNS].index("side")
    assert [r[side] for r in rows] == ["sell€"] * 3 + [f"b{columnar.SEPARATOR}uy"] + ["sell€"] * 2


def test_separator_detected_on_a_literal_page(db_url: str) -> None:
    """Decoding by separators refuses a page whose text holds one (never splits a value); with lengths
    the same page decodes to its values, NULL and empty text included."""
    columns = query._cols("t:time s:str? u:str")
    values = [None, "", f"a{columnar.SEPARATOR}b", columnar.SEPARATOR, "é"]
    literal = sql.SQL("(SELECT 'epoch'::timestamptz AS t, x AS s, 'u' || o AS u, o FROM unnest({}::text[]) "
                      "WITH ORDINALITY v(x, o)) v ORDER BY o").format(sql.Literal(values))
    page = sql.SQL("SELECT {} FROM {}").format(query.select_list(columns, raw_times=True), literal)
    with psycopg.connect(db_url) as conn:
        fast = conn.cursor(binary=True).execute(columnar.columns_sql(page, columns)).fetchone()
        slow = conn.cursor(binary=True).execute(columnar.columns_sql(page, columns, text_lengths=True)).fetchone()
    assert fast is not None and slow is not None
    with pytest.raises(columnar.SeparatorInText, match="^s: "):
        columnar.decode(fast, columns)
    arrays, _ = columnar.decode(slow, columns, text_lengths=True)
    assert arrays[1].to_pylist() == values and arrays[2].to_pylist() == [f"u{i}" for i in range(1, 6)]


def test_trades_by_reason(api_url: str, symbols: list[str]) -> None:
    total = 0
    for reason in ("large_trade", "price_change", "time_interval", "keep_all"):
        total += len(both_pages(api_url, "trades", query.TRADE_COLUMNS, symbol=symbols[0], save_reason=reason,
                                **WIDE)[0])
    assert total == len(both_pages(api_url, "trades", query.TRADE_COLUMNS, symbol=symbols[0], **WIDE)[0]) > 0


@pytest.mark.parametrize("table,columns", [("funding", query.FUNDING_COLUMNS),
                                           ("liquidations", query.LIQUIDATION_COLUMNS),
                                           ("open_interest", query.OPEN_INTEREST_COLUMNS)])
def test_funding_liquidations_open_interest(api_url: str, filled_db: str, table: str,
                                            columns: tuple[query.Column, ...]) -> None:
    with psycopg.connect(filled_db) as conn:
        row = conn.execute(sql.SQL("SELECT symbol FROM {} GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").format(
            sql.Identifier(table))).fetchone()
    assert row is not None
    assert both_pages(api_url, table, columns, symbol=row[0], **WIDE)[0]


def test_symbols_and_latest(api_url: str, symbols: list[str]) -> None:
    got = both_pages(api_url, "symbols", query.SYMBOL_COLUMNS, time_format="ms")[0]
    assert [r[0] for r in got] == symbols and any(r[4] is None for r in got)
    got = both_pages(api_url, "latest", query.LATEST_COLUMNS, time_format="ms")[0]
    assert [r[0] for r in got] == symbols


def test_an_empty_page_is_typed(api_url: str) -> None:
    rows, _ = both_pages(api_url, "trades", query.TRADE_COLUMNS, symbol="NOSUCHUSDT", **WIDE)
    assert rows == []


@pytest.mark.parametrize("times", [[], [5], [5, 5, 5], [-3, -2, -2], [1, 2, 2, 3, 3, 3], [0, 0, 1, 1]])
def test_last_millisecond_gives_the_whole_columns_cursor(times: list[int]) -> None:
    ms = np.array(times, np.int64)
    tail = columnar.last_millisecond(ms)
    assert all(type(t) is int for t in tail)
    for start in (query.Cursor(0), query.Cursor(times[-1] if times else 0, 4)):
        assert query.next_cursor(tail, start, len(times), len(times) + 1) == query.next_cursor(
            times, start, len(times), len(times) + 1)


_EDGE_COLUMNS = query._cols("t:time f:float? i:int? s:str? n:time?")


def test_edge_values_equal_the_row_path(db_url: str) -> None:
    """Times before 2000 and with microseconds (floored, never rounded), NULL in every kind, NaN and
    infinities, multi-byte and empty text: the columns decode to the row path's values."""
    base = datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    values = [
        (base, 1.5, 7, "é€😀", None),
        (base + timedelta(microseconds=1), None, None, None, base),
        (datetime(1970, 1, 1, tzinfo=UTC) - timedelta(microseconds=1), float("nan"), -(2**63) + 1, "", base),
        (datetime(2025, 3, 12, 15, 0, 0, 123_456, tzinfo=UTC), float("-inf"), 2**63 - 1, "BTCUSDT", None),
        (datetime(2025, 3, 12, 15, 0, 0, 999_000, tzinfo=UTC), 1e-300, 0, None, base + timedelta(days=9000)),
    ]
    literal = sql.SQL("(VALUES {}) v(t, f, i, s, n)").format(sql.SQL(", ").join(
        sql.SQL("({}::timestamptz, {}::float8, {}::int8, {}::text, {}::timestamptz)").format(*map(sql.Literal, r))
        for r in values))
    sources = tuple(sql.SQL("v.{}").format(sql.Identifier(c.name)) for c in _EDGE_COLUMNS)

    def page(raw: bool) -> sql.Composed:
        return sql.SQL("SELECT {} FROM {} ORDER BY v.t").format(
            query.select_list(_EDGE_COLUMNS, sources, raw_times=raw), literal)

    with psycopg.connect(db_url) as conn:
        want = [list(r) for r in conn.cursor(binary=True).execute(page(False)).fetchall()]
        got_row = conn.cursor(binary=True).execute(columnar.columns_sql(page(True), _EDGE_COLUMNS)).fetchone()
        empty = conn.cursor(binary=True).execute(columnar.columns_sql(
            sql.SQL("{} LIMIT 0").format(page(True)), _EDGE_COLUMNS)).fetchone()
    assert got_row is not None and empty is not None
    arrays, ms = columnar.decode(got_row, _EDGE_COLUMNS)
    table = pa.Table.from_arrays(arrays, schema=encode.arrow_schema(_EDGE_COLUMNS))
    got = _arrow_rows(table, _EDGE_COLUMNS)
    assert ms is not None and ms.tolist() == [r[0] for r in want]
    assert [r[0] for r in want] == [-1, 946684799999, 946684800000, 1741791600123, 1741791600999]

    def same(a: Any, b: Any) -> bool:
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert all(same(x, y) for x, y in zip(g, w, strict=True)), (g, w)
    empty_arrays, empty_ms = columnar.decode(empty, _EDGE_COLUMNS)
    assert [len(a) for a in empty_arrays] == [0] * len(_EDGE_COLUMNS) and empty_ms is not None
    assert [a.type for a in empty_arrays] == [f.type for f in encode.arrow_schema(_EDGE_COLUMNS)]


_DECIMALS = ["0.1", "100.25", "0.0000001", "123456789.123456789123", "0.000000000000000000000000001234",
             "9007199254740993", "-42.5", "0", "NaN", "Infinity", "-Infinity", None,
             "1" + "0" * 300, "0." + "3" * 120, "2.5e-320"]


def test_numeric_text_floats_equal_the_float8_casts(db_url: str) -> None:
    """A NUMERIC column read as decimal text and parsed by Arrow (collector.api.columnar's path for the
    series tables) gives the double PostgreSQL's ::float8 gives: rounding at 17 digits, beyond 2**53,
    subnormal, 300 digits, NaN, the infinities and NULL; plus 20,000 random decimals of trade-like scale."""
    rng = random.Random(15)
    randoms = [f"{rng.randrange(10**12)}.{rng.randrange(10**9):09d}" for _ in range(10_000)]
    randoms += [f"0.{rng.randrange(10**17):017d}" for _ in range(10_000)]
    values = _DECIMALS + randoms
    columns = query._cols("t:time price:float?")
    numeric = frozenset({"price"})
    literal = sql.SQL("(SELECT 'epoch'::timestamptz AS t, x::numeric AS price, o FROM unnest({}::text[]) "
                      "WITH ORDINALITY u(x, o)) v").format(sql.Literal(values))
    sources = (sql.SQL("v.t"), sql.SQL("v.price"))

    def page(**kw: Any) -> sql.Composed:
        return sql.SQL("SELECT {} FROM {} ORDER BY v.o").format(query.select_list(columns, sources, **kw), literal)

    with psycopg.connect(db_url) as conn:
        want = [r[1] for r in conn.cursor(binary=True).execute(page()).fetchall()]
        got_row = conn.cursor(binary=True).execute(columnar.columns_sql(
            page(raw_times=True, text_floats=numeric), columns, text_floats=numeric)).fetchone()
    assert got_row is not None
    arrays, _ = columnar.decode(got_row, columns, text_floats=numeric)
    got = arrays[1].to_pylist()
    assert arrays[1].type == pa.float64() and len(got) == len(want) == len(values)
    bad = [(v, g, w) for v, g, w in zip(values, got, want, strict=True)
           if not (g == w or (g is not None and w is not None and math.isnan(g) and math.isnan(w)))]
    assert bad == []
    assert got[values.index(None)] is None and got[values.index("2.5e-320")] == 2.5e-320
