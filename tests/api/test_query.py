"""collector.api.query and encode as plain functions: time grammar, cursors, paging arithmetic, format
negotiation; and the column specs against the real schema's types and nullability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from collector.api import encode, query
from collector.api.query import BadParameter, Cursor

NOW = datetime(2025, 3, 12, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize("text,expected", [
    ("1741791600000", datetime(2025, 3, 12, 15, 0, tzinfo=UTC)),
    ("0", datetime(1970, 1, 1, tzinfo=UTC)),
    ("2025-03-12", datetime(2025, 3, 12, tzinfo=UTC)),
    ("2025-03-12T15:00:00Z", datetime(2025, 3, 12, 15, 0, tzinfo=UTC)),
    ("2025-03-12t15:00:00.123456789z", datetime(2025, 3, 12, 15, 0, 0, 123456, tzinfo=UTC)),
    ("2025-03-12T17:00:00+02:00", datetime(2025, 3, 12, 15, 0, tzinfo=UTC)),
    ("0001-01-01T00:00:00+05:00", datetime.min.replace(tzinfo=UTC)),
    ("9999-12-31T23:59:59-05:00", datetime.max.replace(tzinfo=UTC)),
])
def test_time_grammar(text: str, expected: datetime) -> None:
    assert query.parse_time("start", text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2025-03-12T15:00", "2025-03-12 15:00:00Z", "2025-02-30",
                                  "1e12", "99999999999999999", str(query.MAX_MS + 1), "", "2025-03-12T15:00:00+0200"])
def test_time_grammar_refuses_naming_the_parameter(text: str) -> None:
    with pytest.raises(BadParameter, match="^end: "):
        query.parse_time("end", text)


def test_cursor_round_trip_and_refusals() -> None:
    assert query.parse_cursor(Cursor(1741791600000, 3).encode()) == Cursor(1741791600000, 3)
    assert query.parse_cursor("999999999999999_0") == Cursor(query.MAX_MS, 0)
    for bad in ("", "1_", "_1", "1-2", "a_b", "1_2_3", "-1_0"):
        with pytest.raises(BadParameter, match="^cursor: "):
            query.parse_cursor(bad)


def test_next_cursor_counts_rows_of_the_last_millisecond() -> None:
    start = Cursor(100)
    assert query.next_cursor([100, 101, 102], start, 3, 3) is None  # nothing beyond the page
    assert query.next_cursor([100, 101, 102], start, 3, 4) == Cursor(102, 1)
    assert query.next_cursor([100, 102, 102], start, 3, 4) == Cursor(102, 2)
    assert query.next_cursor([100, 100, 100], start, 3, 4) == Cursor(100, 3)
    # a page entirely inside the millisecond the cursor already pointed into adds to its skip
    assert query.next_cursor([100, 100], Cursor(100, 5), 2, 3) == Cursor(100, 7)
    assert query.next_cursor([100, 101], Cursor(100, 5), 2, 3) == Cursor(101, 1)


def test_window_defaults_and_cursor() -> None:
    w = query.resolve_window(None, None, None, NOW)
    assert (w.start, w.end, w.cursor) == (NOW - timedelta(days=1), NOW, Cursor(query.datetime_to_ms(w.start)))
    w = query.resolve_window("2025-03-01", "2025-03-02", "1741791600000_4", NOW)
    assert w.cursor == Cursor(1741791600000, 4) and w.end == datetime(2025, 3, 2, tzinfo=UTC)
    assert query.resolve_window(None, "0001-01-01", None, NOW).start == datetime.min.replace(tzinfo=UTC)


def test_timeframes_select_only_their_whitelisted_relation() -> None:
    for tf in query.TIMEFRAMES:
        assert query.candle_series(tf, False).table == f"candles_{tf}_closed"
        assert query.candle_series(tf, True).table == f"candles_{tf}"
    with pytest.raises(ValueError, match="timeframe"):
        query.candle_series("1m; DROP TABLE trades", False)  # type: ignore[arg-type]


def test_negotiation_and_iso() -> None:
    assert encode.negotiate(None, None) == "json"
    assert encode.negotiate(None, "text/csv, */*") == "csv"
    assert encode.negotiate(None, "application/vnd.apache.arrow.stream") == "arrow"
    assert encode.negotiate("json", "application/vnd.apache.arrow.stream") == "json"
    assert encode.iso(1741791600123) == "2025-03-12T15:00:00.123Z"
    assert encode.iso(-1) == "1969-12-31T23:59:59.999Z"


_KIND_OF_TYPE = {"timestamp with time zone": "time", "numeric": "float", "double precision": "float",
                 "bigint": "int", "smallint": "int", "text": "str"}


def test_column_specs_match_the_schema(db_url: str) -> None:
    from collector.db.schema import ensure_schema

    with psycopg.connect(db_url) as conn:
        ensure_schema(conn, "postgres")
        conn.commit()
        info = {(t, c): (_KIND_OF_TYPE.get(d, d), n == "YES") for t, c, d, n in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public'").fetchall()}
    specs = {name: s.columns for name, s in query.SERIES.items()}
    specs |= {"candles_1m": query.CANDLE_COLUMNS, "symbol_tiers": query.SYMBOL_COLUMNS}
    for table, columns in specs.items():
        assert {c.name for c in columns} == {c for t, c in info if t == table}, table  # every column served
        for c in columns:
            assert (c.kind, c.nullable) == info[(table, c.name)], (table, c.name)
