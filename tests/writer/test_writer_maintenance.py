"""collector.writer.maintenance against a real PostgreSQL: candles rolled up (or views refreshed) after 1m
candles land, late candles recompute exactly their periods, retention right after a recovery, and upkeep that
gives way to a reader instead of stalling flushes, and the TimescaleDB job poll."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from helpers import now_ms, trade_ids, trades_batch
from writer_helpers import DAY_MS, DEAD_DSN, Clock, candle_5m, candles_batch, tick_until

from collector.db import partitions
from collector.pipeline.batches import BatchBuilder
from collector.pipeline.encode import RowEncoder
from collector.writer.maintenance import JOBS_POLL_S, MAINTENANCE_LOCK_TIMEOUT_MS, merge_ranges
from collector.writer.service import Writer

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them


def test_candles_are_rolled_up_after_1m_lands(db_url: str) -> None:
    w = Writer(db_url, mode="postgres")
    t0 = (now_ms() // 300_000) * 300_000 - 600_000  # two closed 5m buckets ago
    b = BatchBuilder("candles_1m")
    for m in range(5):
        t = t0 + m * 60_000
        b.add(BINANCE.candle(t, "BTCUSDT", t + 59_999, str(100 + m), str(101 + m), str(99 + m), str(100.5 + m),
                            "1.5", "150", 10, "0.5", "50"), t)
    batch = b.take()
    assert batch is not None
    w.add(batch)
    assert w.flush()
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT open::text, high::text, low::text, close::text, volume::text, trades "
                           "FROM candles_5m").fetchone()
    assert row == ("100", "105", "99", "104.5", "7.5", 50)
    assert w.stats.candles_count == 5
    w.close()


def test_a_late_candle_fixes_the_rollups_built_over_its_hole(db_url: str) -> None:
    """Minute 2 is missing when the 5m (and 1d) candles are first rolled up; it arrives later (REST repair,
    spool replay) in a batch of its own: exactly its periods are recomputed and now equal the full roll-up."""
    w = Writer(db_url, mode="postgres")
    t0 = (now_ms() // DAY_MS) * DAY_MS - DAY_MS  # yesterday: every bucket closed
    w.add(candles_batch(t0, [0, 1, 3, 4, 5]))
    assert w.flush()
    assert candle_5m(db_url) == ("100", "105", "99", "104.5", "6.0", 40)  # built over the hole
    w.add(candles_batch(t0, [2]))
    assert w.flush()
    assert candle_5m(db_url) == ("100", "105", "99", "104.5", "7.5", 50)
    assert candle_5m(db_url, "candles_1d") == ("100", "106", "99", "105.5", "9.0", 60)
    w.close()


def test_late_candle_periods_are_recomputed_one_range_each() -> None:
    assert merge_ranges([(5, 7), (1, 3), (3, 4), (10, 12), (11, 15)]) == [(1, 4), (5, 7), (10, 15)]
    assert merge_ranges([]) == []


@pytest.mark.timescale
def test_timescaledb_views_take_a_late_candle(db_url: str, timescaledb_available: bool) -> None:
    """On TimescaleDB the 5m bucket is materialised over the hole once it is complete; the late candle's
    landing refreshes exactly that bucket (refresh_continuous_aggregate), so the view shows the full one."""
    if not timescaledb_available:
        pytest.skip("TimescaleDB extension not installed on this server")
    w = Writer(db_url, mode="timescaledb")
    t0 = (now_ms() // DAY_MS) * DAY_MS - DAY_MS
    w.add(candles_batch(t0, [0, 1, 3, 4, 5]))
    assert w.flush()
    with psycopg.connect(db_url) as conn:  # the bucket is materialised (not real-time aggregation)
        schema, table = conn.execute("SELECT materialization_hypertable_schema, materialization_hypertable_name "
                                     "FROM timescaledb_information.continuous_aggregates "
                                     "WHERE view_name = 'candles_5m_agg'").fetchone()
        assert conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0] == 1
    assert candle_5m(db_url) == ("100", "105", "99", "104.5", "6.0", 40)
    w.add(candles_batch(t0, [2]))
    assert w.flush()
    assert candle_5m(db_url) == ("100", "105", "99", "104.5", "7.5", 50)
    w.close()


@pytest.mark.timescale
def test_timescaledb_refuses_derived_candles(db_url: str, timescaledb_available: bool) -> None:
    if not timescaledb_available:
        pytest.skip("TimescaleDB extension not installed on this server")
    w = Writer(db_url, mode="timescaledb")
    w.connection()
    b = BatchBuilder("candles_5m")
    b.add(BINANCE.candle(0, "BTCUSDT", 299_999, "1", "1", "1", "1", "1", "1", 1, "1", "1"), 0)
    batch = b.take()
    assert batch is not None
    w.add(batch)
    assert w.stats.refused_batches == 1 and w.pending_rows() == 0
    w.close()


# --- maintenance after an outage ---------------------------------------------------------------------------------


def expired_trades_partition(db_url: str) -> str:
    """Create a trades partition 30 days old (retention: 7 days) and return its name."""
    old = datetime.now(UTC) - timedelta(days=30)
    with psycopg.connect(db_url, autocommit=True) as conn:
        (name,) = partitions.ensure_partitions_for(conn, "trades", old, old)
    return name


def partition_exists(db_url: str, name: str) -> bool:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def test_retention_runs_right_after_a_recovery(db_url: str, tmp_path: Path) -> None:
    clock = Clock()
    w = Writer(db_url, mode="postgres", clock=clock, spool_dir=tmp_path / "spool")
    assert tick_until(w, clock, lambda: not w.maintenance.todo and w.maintenance.next_run > clock())  # hourly now
    name = expired_trades_partition(db_url)
    w.sink.drop_connection()
    w.dsn, live = DEAD_DSN, w.dsn  # outage
    w.add(trades_batch(1, 10))
    clock.advance(1.0)
    w.tick()
    assert w.stats.errors == 1
    w.dsn = live
    clock.advance(60.0)  # well past the retry, far from the hourly maintenance
    assert tick_until(w, clock, lambda: not partition_exists(db_url, name))
    assert w.stats.partitions_dropped == 1 and trade_ids(db_url) == list(range(1, 11))
    w.close()


def test_maintenance_gives_way_to_a_reader_instead_of_stalling_flushes(db_url: str) -> None:
    clock = Clock()
    w = Writer(db_url, mode="postgres", clock=clock)
    w.connection()
    name = expired_trades_partition(db_url)
    with psycopg.connect(db_url) as reader:
        reader.execute(f'SELECT count(*) FROM "{name}"')  # holds ACCESS SHARE until the transaction ends
        w.add(trades_batch(1, 10))
        clock.advance(1.0)
        t0 = time.monotonic()
        assert tick_until(w, clock, lambda: "maintenance of trades" in (w.stats.last_error or ""))
        elapsed = time.monotonic() - t0
        # the DROP waited for its lock at most MAINTENANCE_LOCK_TIMEOUT_MS, then gave up; the flush landed
        assert elapsed < MAINTENANCE_LOCK_TIMEOUT_MS / 1000 + 2.0, elapsed
        assert trade_ids(db_url) == list(range(1, 11)) and partition_exists(db_url, name)
    clock.advance(60.0)
    assert tick_until(w, clock, lambda: not partition_exists(db_url, name))
    w.close()


# --- TimescaleDB job health ---------------------------------------------------------------------------------------
# Without TimescaleDB the poll must find nothing failing, never error, and run at most once per JOBS_POLL_S. The
# failing-job path on a real TimescaleDB is tests/db/test_timescaledb.py::test_failing_policy_job_is_reported_by_check_and_the_writer.


def test_job_poll_runs_once_a_minute_and_finds_nothing_on_plain_postgres(db_url: str) -> None:
    mono, wall = Clock(1000.0), Clock(1_750_000_000.0)
    w = Writer(db_url, mode="postgres", clock=mono, wall=wall)
    try:
        w.tick()
        assert w.backend == "postgres" and w.stats.errors == 0
        assert w.stats.jobs_checked_ms == 1_750_000_000_000 and w.stats.jobs_failing == {}
        mono.t += JOBS_POLL_S - 1
        wall.t += JOBS_POLL_S - 1
        w.tick()
        assert w.stats.jobs_checked_ms == 1_750_000_000_000  # not yet due
        mono.t += 1
        wall.t += 1
        w.tick()
        assert w.stats.jobs_checked_ms == (1_750_000_000 + JOBS_POLL_S) * 1000 and w.stats.errors == 0
        assert w.stats.snapshot()["jobs_failing"] == {}
    finally:
        w.close(0.0)
