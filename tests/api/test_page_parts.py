"""A big page fetched as two parts on two sessions (collector.api.columnar.page_parts, db.fetch_parts) is the
page one statement gives: the parts read one snapshot, so rows committed meanwhile are in neither or in the
whole page, never in one part only; and every endpoint's pages, split, equal the unsplit ones in JSON and
in Arrow (the merge of the parts, per venue, keeps the (time, venue, key) order).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import SEP_SYMBOL, SUBMS_SYMBOL, TIE_SYMBOL
from psycopg_pool import AsyncConnectionPool
from test_arrow_columns import WIDE, both_pages

from collector.api import columnar, db, query
from collector.db import partitions, schema, tables


class _CommitWhenLending(AsyncConnectionPool[psycopg.AsyncConnection[Any]]):
    """A real pool that, when a second session is asked for while one is out, first commits a row from
    another session: the commit lands after the first session's snapshot and before the second's first
    statement, where only an imported snapshot keeps the two parts consistent."""

    writer_url = ""
    committed = 0

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        if self.get_stats().get("pool_available", 0) < self.get_stats().get("pool_size", 0):
            async with await psycopg.AsyncConnection.connect(self.writer_url, autocommit=True) as w:
                await w.execute("INSERT INTO parts_t VALUES (0)")
            self.committed += 1
        return await super().getconn(timeout)


def test_parts_read_one_snapshot_while_rows_are_committed(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE parts_t (i int)")
        conn.execute("INSERT INTO parts_t SELECT generate_series(1, 10)")
    stmt = psycopg.sql.SQL("SELECT %(part)s::int, pg_backend_pid(), (SELECT count(*) FROM parts_t)")

    async def run() -> tuple[list[tuple[Any, ...]], int]:
        pool = _CommitWhenLending(db_url, min_size=2, max_size=2, open=False,
                                  kwargs={"autocommit": True}, name="parts-test")
        pool.writer_url = db_url
        await pool.open(wait=True)
        try:
            rows = await db.fetch_parts(pool, stmt, [{"part": 0}, {"part": 1}])
        finally:
            await pool.close()
        return rows, pool.committed

    rows, committed = asyncio.run(run())
    assert committed == 1  # the row was committed between the parts' snapshots
    assert [r[0] for r in rows] == [0, 1]
    assert rows[0][1] != rows[1][1], "the parts ran on one session: the two-session path was not taken"
    assert [r[2] for r in rows] == [10, 10]


def test_parts_on_one_session_when_the_pool_has_no_spare(db_url: str) -> None:
    """A pool of one session: the parts run one after the other on it, in order, still one snapshot."""
    stmt = psycopg.sql.SQL("SELECT %(part)s::int, pg_backend_pid()")

    async def run() -> list[tuple[Any, ...]]:
        pool = db.make_pool(db_url, 1, 5000)
        await pool.open(wait=True)
        try:
            return await db.fetch_parts(pool, stmt, [{"part": i} for i in range(3)])
        finally:
            await pool.close()

    rows = asyncio.run(run())
    assert [r[0] for r in rows] == [0, 1, 2] and len({r[1] for r in rows}) == 1


@pytest.mark.parametrize(("total", "want"), [
    (1, [(0, 1)]), (columnar.SPLIT_ROWS - 1, [(0, columnar.SPLIT_ROWS - 1)]),
    (columnar.SPLIT_ROWS, [(0, 11_000), (11_000, 9_000)]), (100_001, [(0, 55_001), (55_001, 45_000)])])
def test_page_parts_cover_the_page_once(total: int, want: list[tuple[int, int]]) -> None:
    assert [(p["first"], p["rows"]) for p in columnar.page_parts(total - 1, 1)] == want


def test_the_smallest_split_page_has_a_row_in_each_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """55% of two rows rounds up to both: the first part gives one back, so no part is empty."""
    monkeypatch.setattr(columnar, "SPLIT_ROWS", 2)
    assert [(p["first"], p["rows"]) for p in columnar.page_parts(1, 1)] == [(0, 1), (1, 1)]


def _nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"], *(n for child in plan.get("Plans", ()) for n in _nodes(child))]


def test_a_big_pages_parts_read_the_key_in_order_after_analyze(db_url: str) -> None:
    """With the statistics of 100k trades of one symbol, PostgreSQL prices the second part of a split page
    (OFFSET 55,001) cheaper as a bitmap scan and a sort of the whole range, which spills to disk and took 80
    against 50 ms (collector.api.db._ORDERED). Every part's plan, as fetch_parts runs it, walks the primary key
    with no Sort; one part alone too."""
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    with psycopg.connect(db_url) as conn:
        schema.ensure_schema(conn, "postgres")
        for table in tables.TIME_TABLES:
            partitions.ensure_partitions_for(conn, table, t0 - timedelta(days=1), t0 + timedelta(days=1))
        # as bench/api.py's prefill: an hour of 496 other symbols' rows in time order, then the big symbol's
        # written together. The partition's size matters: with 1.8M other rows the planner prefers the sort,
        # with 0.5M it walks the index anyway.
        conn.execute("""INSERT INTO trades SELECT %(t0)s::timestamptz + n * interval '2 ms', 'binance',
                               'S' || n %% 496 || 'USDT', n, 100, 1, 100, 'buy', 'keep_all', n, n
                        FROM generate_series(1, 1800000) n""", {"t0": t0})
        conn.execute("""INSERT INTO trades SELECT %(t0)s::timestamptz + n * interval '36 ms', 'binance', 'BIGUSDT',
                               n, 100, 1, 100, 'buy', 'keep_all', n, n FROM generate_series(1, 100000) n""", {"t0": t0})
        conn.commit()
        conn.execute("ANALYZE trades")
        conn.commit()
    stmt = psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + columnar.venue_pages_sql(query.SERIES["trades"])
    page = {"venues": ["binance"], "symbol": "BIGUSDT", "lo": datetime(1970, 1, 1, tzinfo=UTC),
            "end": datetime(2100, 1, 1, tzinfo=UTC)}  # as bench/api.py asks: every row of the symbol

    async def plans(parts: list[dict[str, int]]) -> list[list[str]]:
        pool = db.make_pool(db_url, 2, 5000)
        await pool.open(wait=True)
        try:
            rows = await db.fetch_parts(pool, stmt, [{**page, **p} for p in parts])
        finally:
            await pool.close()
        return [_nodes(r[0][0]["Plan"]) for r in rows]

    split = asyncio.run(plans(columnar.page_parts(0, 100_001)))
    alone = asyncio.run(plans(columnar.page_parts(0, columnar.SPLIT_ROWS - 1)))
    assert len(split) == 2 and len(alone) == 1
    for nodes in split + alone:
        assert "Index Scan" in nodes and "Sort" not in nodes, nodes


@pytest.fixture(scope="module")
def symbol(filled_db: str) -> str:
    """A symbol the collector filled (candles, funding, open interest; liquidations if it had any)."""
    with psycopg.connect(filled_db) as conn:
        row = conn.execute("SELECT symbol FROM liquidations GROUP BY symbol ORDER BY count(*) DESC LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])


def _every_page(api_url: str, symbol: str) -> list[Any]:
    out: list[Any] = []
    for sym in (TIE_SYMBOL, SUBMS_SYMBOL, SEP_SYMBOL):
        for limit in (1, 3, 7, 1000):
            out.append(both_pages(api_url, "trades", query.TRADE_COLUMNS, symbol=sym, limit=limit, **WIDE))
    out.append(both_pages(api_url, "trades", query.TRADE_COLUMNS, symbol=TIE_SYMBOL, save_reason="large_trade",
                          limit=2, **WIDE))
    for table in ("funding", "liquidations", "open_interest"):
        out.append(both_pages(api_url, table, query.SERIES[table].columns, symbol=symbol, limit=5, **WIDE))
    out.append(both_pages(api_url, "candles", query.CANDLE_COLUMNS, symbol=symbol, limit=4, **WIDE))
    return out


def test_split_pages_equal_the_one_statement_pages(api_url: str, symbol: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page split into two parts (SPLIT_ROWS 2), including pages skipping rows of one millisecond,
    pages refetched with text lengths and filtered by save_reason: the same rows and cursors, in JSON and
    Arrow (both_pages compares those), as one statement per page."""
    whole = _every_page(api_url, symbol)
    monkeypatch.setattr(columnar, "SPLIT_ROWS", 2)
    split = _every_page(api_url, symbol)
    assert split == whole
    assert sum(len(rows) for rows, _ in whole) > 200
