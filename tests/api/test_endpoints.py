"""Every endpoint's rows equal the SQL ground truth, over real HTTP, on data the collector wrote.

The truth is read here with plain psycopg (NUMERIC as Decimal, times as datetime) and converted in
Python, independently of the API's own SQL casts; the API is asked for epoch-ms times so the two compare
exactly. Paging, formats and parameter errors are checked against the same data.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pytest
from conftest import SEP_SYMBOL, SUBMS_SYMBOL, TIE_SYMBOL

from collector.api import query
from collector.api.encode import iso
from collector.db import schema

WIDE = {"start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "time_format": "ms"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _wire(v: Any) -> Any:
    if isinstance(v, datetime):
        return (v - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(v, Decimal):
        return float(v)
    return v


def truth(db: str, sql: str, params: tuple[Any, ...] = ()) -> list[list[Any]]:
    with psycopg.connect(db) as conn:
        return [[_wire(v) for v in r] for r in conn.execute(sql, params).fetchall()]  # type: ignore[arg-type]


def get_rows(api_url: str, path: str, columns: tuple[query.Column, ...], **params: Any) -> list[list[Any]]:
    """All rows of a JSON request (following next_cursor), as lists in the endpoint's column order."""
    out: list[list[Any]] = []
    params = dict(params)
    while True:
        r = httpx.get(f"{api_url}/api/v1/{path}", params=params, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        out += [[row[c.name] for c in columns] for row in body["data"]]
        assert r.headers.get("x-next-cursor") == body["next_cursor"]
        if body["next_cursor"] is None:
            return out
        params["cursor"] = body["next_cursor"]


def _names(columns: tuple[query.Column, ...]) -> str:
    return ", ".join(c.name for c in columns)


@pytest.fixture(scope="module")
def symbols(filled_db: str) -> list[str]:
    return [r[0] for r in truth(filled_db, "SELECT DISTINCT symbol FROM candles_1m ORDER BY 1")]


def test_candles_every_timeframe_complete_and_partial(api_url: str, filled_db: str, symbols: list[str]) -> None:
    for tf, width in zip(query.TIMEFRAMES, schema.TIMEFRAMES.values(), strict=True):
        got: dict[bool, list[list[Any]]] = {}
        for partial in (False, True):
            table = f"candles_{tf}" if partial else f"candles_{tf}_closed"
            want = truth(filled_db, f"SELECT {_names(query.CANDLE_COLUMNS)} FROM {table} WHERE symbol = %s "
                                    "ORDER BY time", (symbols[0],))
            got[partial] = get_rows(api_url, "candles", query.CANDLE_COLUMNS, symbol=symbols[0], timeframe=tf,
                                    include_partial=str(partial).lower(), **WIDE)
            assert got[partial] == want, (tf, partial)
        assert len(got[True]) >= (8 if tf == "1m" else 1)
        # complete periods only: those that ended (plus the grace for derived candles) before now
        grace = timedelta(0) if tf == "1m" else schema.CLOSED_GRACE
        now_ms = (datetime.now(UTC) - _EPOCH) // timedelta(milliseconds=1)
        ended = [r for r in got[True] if r[0] + (width + grace) // timedelta(milliseconds=1) <= now_ms]
        assert got[False] == ended, tf


def test_trades_all_and_by_reason(api_url: str, filled_db: str, symbols: list[str]) -> None:
    sql = f"SELECT {_names(query.TRADE_COLUMNS)} FROM trades WHERE symbol = %s ORDER BY time, trade_id"
    for s in (symbols[0], TIE_SYMBOL, SEP_SYMBOL):
        want = truth(filled_db, sql, (s,))
        assert want
        assert get_rows(api_url, "trades", query.TRADE_COLUMNS, symbol=s, **WIDE) == want
    reasons = [r[0] for r in truth(filled_db, "SELECT DISTINCT save_reason FROM trades")]
    assert len(reasons) >= 2
    for reason in reasons:
        want = truth(filled_db, f"SELECT {_names(query.TRADE_COLUMNS)} FROM trades WHERE symbol = %s "
                                "AND save_reason = %s ORDER BY time, trade_id", (symbols[0], reason))
        assert get_rows(api_url, "trades", query.TRADE_COLUMNS, symbol=symbols[0], save_reason=reason,
                        **WIDE) == want


def test_time_range_is_start_inclusive_end_exclusive(api_url: str, filled_db: str, symbols: list[str]) -> None:
    all_rows = truth(filled_db, f"SELECT {_names(query.CANDLE_COLUMNS)} FROM candles_1m WHERE symbol = %s "
                                "ORDER BY time", (symbols[0],))
    lo, hi = all_rows[2][0], all_rows[5][0]
    got = get_rows(api_url, "candles", query.CANDLE_COLUMNS, symbol=symbols[0], start=str(lo), end=str(hi),
                   time_format="ms")
    assert got == all_rows[2:5]


@pytest.mark.parametrize("table,columns,order", [
    ("funding", query.FUNDING_COLUMNS, "time"),
    ("liquidations", query.LIQUIDATION_COLUMNS, "time, side, price, quantity"),
    ("open_interest", query.OPEN_INTEREST_COLUMNS, "time"),
])
def test_funding_liquidations_open_interest(api_url: str, filled_db: str, table: str,
                                            columns: tuple[query.Column, ...], order: str) -> None:
    symbol = truth(filled_db, f"SELECT symbol FROM {table} GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0][0]
    want = truth(filled_db, f"SELECT {_names(columns)} FROM {table} WHERE symbol = %s ORDER BY {order}", (symbol,))
    assert want
    assert get_rows(api_url, table, columns, symbol=symbol, **WIDE) == want


def test_symbols_are_the_latest_tiers(api_url: str, filled_db: str, symbols: list[str]) -> None:
    want = truth(filled_db, f"SELECT {_names(query.SYMBOL_COLUMNS)} FROM symbol_tiers t WHERE computed_at = "
                            "(SELECT max(computed_at) FROM symbol_tiers u WHERE u.symbol = t.symbol) ORDER BY symbol")
    got = get_rows(api_url, "symbols", query.SYMBOL_COLUMNS, time_format="ms")
    assert got == want and [r[0] for r in got] == symbols
    assert any(r[4] is None for r in got) and any(r[5] is None for r in got)  # nullable columns stay null


def test_latest_for_every_symbol(api_url: str, filled_db: str, symbols: list[str]) -> None:
    want = []
    for s in symbols:
        f = truth(filled_db, "SELECT time, funding_rate, mark_price FROM funding WHERE symbol = %s "
                             "ORDER BY time DESC LIMIT 1", (s,))
        o = truth(filled_db, "SELECT time, open_interest FROM open_interest WHERE symbol = %s "
                             "ORDER BY time DESC LIMIT 1", (s,))
        c = truth(filled_db, "SELECT time, close FROM candles_1m WHERE symbol = %s ORDER BY time DESC LIMIT 1", (s,))
        want.append([s, "binance", *(f[0] if f else [None] * 3), *(o[0] if o else [None] * 2), *(c[0] if c else [None] * 2)])
    got = get_rows(api_url, "latest", query.LATEST_COLUMNS, time_format="ms")
    assert got == want
    assert all(v is not None for row in got for v in row)  # every symbol has all three after the run


@pytest.mark.parametrize("limit", [1, 3, 4, 5, 7])
def test_pages_split_inside_one_millisecond(api_url: str, filled_db: str, limit: int) -> None:
    want = truth(filled_db, f"SELECT {_names(query.TRADE_COLUMNS)} FROM trades WHERE symbol = %s "
                            "ORDER BY time, trade_id", (TIE_SYMBOL,))
    assert len(want) == 40
    assert get_rows(api_url, "trades", query.TRADE_COLUMNS, symbol=TIE_SYMBOL, limit=limit, **WIDE) == want


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_pages_over_sub_millisecond_times(api_url: str, filled_db: str, limit: int) -> None:
    want = truth(filled_db, f"SELECT {_names(query.TRADE_COLUMNS)} FROM trades WHERE symbol = %s "
                            "ORDER BY time, trade_id", (SUBMS_SYMBOL,))
    assert len(want) == 8
    assert get_rows(api_url, "trades", query.TRADE_COLUMNS, symbol=SUBMS_SYMBOL, limit=limit, **WIDE) == want


def test_page_size_and_cursor(api_url: str, symbols: list[str]) -> None:
    r = httpx.get(f"{api_url}/api/v1/candles", params={"symbol": symbols[0], "limit": 2, **WIDE})
    body = r.json()
    assert len(body["data"]) == 2
    assert body["next_cursor"] == f"{body['data'][1]['time']}_1"


def test_arrow_csv_and_iso_carry_the_same_rows(api_url: str, symbols: list[str]) -> None:
    params = {"symbol": symbols[0], "timeframe": "1m", **WIDE}
    rows = get_rows(api_url, "candles", query.CANDLE_COLUMNS, **params)
    arrow = httpx.get(f"{api_url}/api/v1/candles", params=params,
                      headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.schema.field("time").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("open").type == pa.float64() and table.schema.field("trades").type == pa.int64()
    cols = [table.column(c.name).cast(pa.int64()).to_pylist() if c.kind == "time"
            else table.column(c.name).to_pylist() for c in query.CANDLE_COLUMNS]
    assert [list(r) for r in zip(*cols, strict=True)] == rows

    text = httpx.get(f"{api_url}/api/v1/candles", params={**params, "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(text.text)))
    assert lines[0] == [c.name for c in query.CANDLE_COLUMNS]
    assert lines[1:] == [[str(v) for v in r] for r in rows]

    iso_rows = httpx.get(f"{api_url}/api/v1/candles", params={**params, "time_format": "iso"}).json()["data"]
    assert [r["time"] for r in iso_rows] == [iso(r[0]) for r in rows]
    assert datetime.fromisoformat(iso_rows[0]["time"]) == _EPOCH + timedelta(milliseconds=rows[0][0])


@pytest.mark.parametrize("params,status,named", [
    ({"symbol": "btcusdt"}, 422, "symbol"),
    ({}, 422, "symbol"),
    ({"symbol": "BTCUSDT", "timeframe": "2m"}, 422, "timeframe"),
    ({"symbol": "BTCUSDT", "start": "yesterday"}, 400, "start"),
    ({"symbol": "BTCUSDT", "end": "99999999999999999"}, 400, "end"),
    ({"symbol": "BTCUSDT", "start": "2025-03-12T15:00"}, 400, "start"),
    ({"symbol": "BTCUSDT", "end": "2025-02-30"}, 400, "end"),
    ({"symbol": "BTCUSDT", "cursor": "abc"}, 400, "cursor"),
    ({"symbol": "BTCUSDT", "limit": "0"}, 422, "limit"),
    ({"symbol": "BTCUSDT", "limit": "5001"}, 422, "limit"),
    ({"symbol": "BTCUSDT", "include_partial": "maybe"}, 422, "include_partial"),
    ({"symbol": "BTCUSDT", "format": "xml"}, 422, "format"),
])
def test_bad_parameters_name_the_parameter(api_url: str, params: dict[str, str], status: int, named: str) -> None:
    r = httpx.get(f"{api_url}/api/v1/candles", params=params)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    if status == 400:
        assert detail.startswith(f"{named}:")
    else:
        assert named in [e["loc"][-1] for e in detail]


def test_start_after_end_is_an_empty_range(api_url: str, symbols: list[str]) -> None:
    r = httpx.get(f"{api_url}/api/v1/candles", params={"symbol": symbols[0], "start": "2100-01-01",
                                                       "end": "2020-01-01"})
    assert r.status_code == 200 and r.json() == {"data": [], "next_cursor": None}


def test_save_reason_outside_the_known_set_is_refused(api_url: str) -> None:
    r = httpx.get(f"{api_url}/api/v1/trades", params={"symbol": "BTCUSDT", "save_reason": "x'; DROP TABLE trades"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "save_reason"
