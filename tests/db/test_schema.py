"""collector.db.schema against a real PostgreSQL: the DDL, the version record, the closed-candle views and
every migration from an older database."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from helpers import partition_names, to_version_5_layout

from collector.db.gaps_repo import OpenGap, open_gaps
from collector.db.partitions import ensure_partitions_for
from collector.db.schema import (
    CLOSED_GRACE,
    SCHEMA_VERSION,
    TIMEFRAMES,
    SchemaError,
    closed_view,
    ensure_schema,
)
from collector.db.tiers_repo import TierRow, load_latest_tiers
from collector.db.timescale import timescale_job_failures, timescale_layout
from collector.pipeline.encode import COLUMNS

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)  # a Wednesday


def test_schema_is_idempotent_and_matches_the_copy_columns(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert ensure_schema(conn, "postgres", now=NOW) == "postgres"
        before = partition_names(conn, "trades")
        assert ensure_schema(conn, "postgres", now=NOW) == "postgres"
        assert ensure_schema(conn, "auto", now=NOW) == "postgres"  # the stored mode wins over auto
        assert partition_names(conn, "trades") == before
        assert conn.execute("SELECT version, mode FROM schema_version ORDER BY version").fetchall() == [
            (v, "postgres") for v in range(1, SCHEMA_VERSION + 1)]
        for table, cols in COLUMNS.items():
            got = tuple(r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (table,)).fetchall())
            assert got == cols, table
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = 'trades'").fetchall())
        assert types["time"] == "timestamp with time zone" and types["price"] == "numeric"


def test_newer_schema_in_database_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        conn.execute("INSERT INTO schema_version (version, mode) VALUES (99, 'postgres')")
        with pytest.raises(SchemaError, match="newer"):
            ensure_schema(conn, "auto", now=NOW)


def test_mode_mismatch_is_a_clear_error(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        with pytest.raises(SchemaError, match="database.mode is timescaledb, but this database was created for "
                                              "postgres"):
            ensure_schema(conn, "timescaledb", now=NOW)


def _closed_rows(conn: psycopg.Connection, view: str) -> set[datetime]:
    return {r[0] for r in conn.execute(f"SELECT time FROM {view} WHERE symbol = 'BTCUSDT'").fetchall()}


def _insert_candle(conn: psycopg.Connection, table: str, t: datetime, width: timedelta, symbol: str = "BTCUSDT") -> None:
    conn.execute(f"INSERT INTO {table} VALUES (%s, 'binance', %s, %s, 1, 1, 1, 1, 1, 1, 1, 1, 1)",
                 (t, symbol, t + width - timedelta(milliseconds=1)))


def test_closed_views_hold_only_finished_periods(db_url: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=now)
        db_now = conn.execute("SELECT now()").fetchone()[0]
        for table, width in TIMEFRAMES.items():
            ensure_partitions_for(conn, table, db_now - 3 * width, db_now)
            origin = datetime(2000, 1, 1, tzinfo=UTC)
            open_start = origin + ((db_now - origin) // width) * width  # the period now() falls in
            closed = open_start - 2 * width  # ended a whole period (>= 1 minute) ago
            _insert_candle(conn, table, closed, width)
            _insert_candle(conn, table, open_start, width)
            view = closed_view(table)
            assert view == f"{table}_closed"
            got = _closed_rows(conn, view)
            assert closed in got and open_start not in got, table
        # a derived period that ended less than a minute ago (at the current minute's start) is not final
        # yet: its last 1m candle may still be in flight
        ended = db_now.replace(second=0, microsecond=0) - timedelta(minutes=5)
        assert db_now - (ended + timedelta(minutes=5)) < CLOSED_GRACE
        _insert_candle(conn, "candles_5m", ended, timedelta(minutes=5), "ETHUSDT")
        assert conn.execute("SELECT count(*) FROM candles_5m_closed WHERE symbol = 'ETHUSDT'").fetchone() == (0,)


def test_a_version_1_database_gains_the_closed_views(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        for table in TIMEFRAMES:  # back to what version 1 left
            conn.execute(f"DROP VIEW {closed_view(table)}")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
        ensure_schema(conn, "auto", now=NOW)
        views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE viewname LIKE 'candles%_closed'")}
        assert views == {f"{t}_closed" for t in TIMEFRAMES}
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)


def test_closed_view_is_served_by_the_venue_symbol_time_key(db_url: str) -> None:
    """EXPLAIN on the plain back-end: one venue's symbol's closed candles come from the primary key, no seq scan."""
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=now)
        ensure_partitions_for(conn, "candles_5m", now - timedelta(days=40), now)
        conn.execute("""
            INSERT INTO candles_5m
            SELECT t, 'binance', 'S' || s, t + INTERVAL '5 minutes' - INTERVAL '1 millisecond', 1, 1, 1, 1, 1, 1, 1, 1, 1
            FROM generate_series(1, 10) s,
                 generate_series(date_bin('5 minutes', now() - INTERVAL '40 days', TIMESTAMPTZ '2000-01-01'),
                                 now(), INTERVAL '5 minutes') t""")
        conn.execute("ANALYZE candles_5m")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT * FROM candles_5m_closed WHERE venue = 'binance' AND symbol = 'S3' "
            "AND time >= now() - INTERVAL '1 day'"))
        assert "Seq Scan" not in plan, plan
        conds = [line.strip() for line in plan.splitlines() if line.strip().startswith("Index Cond:")]
        assert conds and "_pkey" in plan, plan
        # the view's own bound (5 minutes + 1 minute grace) is an index condition, not a filter afterwards
        for c in conds:
            assert "venue = 'binance'::text" in c and "symbol = 'S3'::text" in c and "(\"time\" <= (now() - '00:06:00'::interval))" in c, plan
            assert "(\"time\" >= (now() - '1 day'::interval))" in c, plan
        n = conn.execute("SELECT count(*) FROM candles_5m_closed WHERE venue = 'binance' AND symbol = 'S3' "
                         "AND time >= now() - INTERVAL '1 day'").fetchone()[0]
        assert 286 <= n <= 288  # a day of 5m periods, minus the open one and the one within the grace


def test_timescale_job_queries_are_empty_on_plain_postgres_and_leave_the_transaction_usable(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:  # not autocommit: an error would abort the transaction
        ensure_schema(conn, "postgres", now=NOW)
        assert timescale_job_failures(conn) == []
        assert timescale_layout(conn) == {}
        assert conn.execute("SELECT 1").fetchone() == (1,)  # no aborted transaction behind us


def test_gaps_of_a_version_1_database_are_migrated(db_url: str) -> None:
    """A gaps table as version 1 wrote it (resolved rows only, key symbol, from_id, to_id) gains kind, state
    and reason; filled rows stay filled, given-up ones become unfillable, and the new key takes candles."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        conn.execute("DROP TABLE gaps")
        conn.execute("""CREATE TABLE gaps (symbol TEXT NOT NULL, from_id BIGINT NOT NULL, to_id BIGINT NOT NULL,
                        detected_at TIMESTAMPTZ NOT NULL, filled_at TIMESTAMPTZ,
                        PRIMARY KEY (symbol, from_id, to_id))""")
        conn.execute("INSERT INTO gaps VALUES ('BTCUSDT', 1, 5, %s, %s), ('ETHUSDT', 7, 9, %s, NULL)", (NOW, NOW, NOW))
        conn.execute("DELETE FROM schema_version WHERE version > 1")
        ensure_schema(conn, "postgres", now=NOW)
        rows = conn.execute("SELECT symbol, kind, state, updated_at = detected_at FROM gaps ORDER BY symbol").fetchall()
        assert rows == [("BTCUSDT", "trades", "filled", True), ("ETHUSDT", "trades", "unfillable", True)]
        conn.execute("INSERT INTO gaps (venue, symbol, kind, from_id, to_id, detected_at, state, reason, updated_at) "
                     "VALUES ('binance', 'BTCUSDT', 'candles_1m', 1, 5, %s, 'detected', 'test', %s)", (NOW, NOW))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE gaps SET state = 'lost'")
        assert open_gaps(conn, "binance", ["BTCUSDT", "ETHUSDT"]) == [
            OpenGap("candles_1m", "BTCUSDT", 1, 5, int(NOW.timestamp() * 1000))]


def test_a_version_4_database_keeps_its_tiers_under_the_renamed_column(db_url: str) -> None:
    """Version 5 renames symbol_tiers.p90_usd to size_quantile_usd; the rows a version 4 database holds stay."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        to_version_5_layout(conn)
        # back to what version 4 left: the column under its old name, rows written by version 4 code
        conn.execute("ALTER TABLE symbol_tiers RENAME COLUMN size_quantile_usd TO p90_usd")
        conn.execute("DELETE FROM schema_version WHERE version > 4")
        conn.execute("""INSERT INTO symbol_tiers (computed_at, symbol, tier, threshold_usd, p90_usd, score)
                        VALUES (%s, 'BTCUSDT', 0, 2e6, 1e6, 0.9), (%s, 'ETHUSDT', 3, %s, NULL, NULL)""",
                     (NOW, NOW, math.inf))
        ensure_schema(conn, "auto", now=NOW)
        cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_name = 'symbol_tiers' ORDER BY ordinal_position")]
        # version 6 appended the venue (ALTER TABLE ADD COLUMN places it last)
        assert cols == ["computed_at", "symbol", "tier", "threshold_usd", "size_quantile_usd", "score", "venue"]
        assert load_latest_tiers(conn, "binance") == {"BTCUSDT": TierRow(0, 2e6, 1e6, 0.9),
                                           "ETHUSDT": TierRow(3, math.inf, None, None)}
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        ensure_schema(conn, "auto", now=NOW)  # and the next start finds nothing left to rename
        assert len(load_latest_tiers(conn, "binance")) == 2
