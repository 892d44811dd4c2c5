"""collector.db.partitions against a real PostgreSQL: partitions ahead of the clock, retention by whole partition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from helpers import partition_names

from collector.db.partitions import drop_expired, ensure_partitions, ensure_partitions_for
from collector.db.schema import ensure_schema

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)  # a Wednesday


def test_partitions_are_created_ahead(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        assert partition_names(conn, "trades") == ["trades_p20250312", "trades_p20250313", "trades_p20250314"]
        assert partition_names(conn, "funding") == ["funding_p20250310"]  # Monday; +2 days stays in the week
        assert partition_names(conn, "candles_5m") == ["candles_5m_p20250301"]
        assert partition_names(conn, "candles_1d") == ["candles_1d_p20250101"]
        created = ensure_partitions(conn, NOW + timedelta(days=5))
        assert "trades_p20250319" in created and "funding_p20250317" in created
        assert ensure_partitions(conn, NOW + timedelta(days=5)) == []
        # a row in a partition that exists lands; bounds are half-open at UTC midnight
        conn.execute("INSERT INTO trades VALUES ('2025-03-13 23:59:59.999+00', 'binance', 'BTCUSDT', 1, 1, 1, 1, 'buy', "
                     "'keep_all', 1, 1)")
        assert conn.execute("SELECT tableoid::regclass::text FROM trades").fetchone() == ("trades_p20250313",)


def _insert_trade(conn: psycopg.Connection, t: datetime, i: int) -> None:
    conn.execute("INSERT INTO trades VALUES (%s, 'binance', 'BTCUSDT', %s, 1, 1, 1, 'buy', 'keep_all', 1, 1)", (t, i))


def test_drop_expired_drops_exactly_the_expired_partitions(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        ensure_partitions_for(conn, "trades", NOW - timedelta(days=12), NOW)
        ensure_partitions_for(conn, "funding", NOW - timedelta(days=70), NOW)
        for d in range(12):
            _insert_trade(conn, NOW - timedelta(days=d), d)
        for d in range(0, 70, 7):
            conn.execute("INSERT INTO funding (time, venue, symbol, mark_price) VALUES (%s, 'binance', 'BTCUSDT', 1)",
                         (NOW - timedelta(days=d),))
        dropped = drop_expired(conn, NOW, {"trades": timedelta(days=7)})
        # trades: cutoff 2025-03-05 15:30 -> every day ending at or before it goes (up to 03-04)
        assert [d for d in dropped if d.startswith("trades")] == [
            "trades_p20250228", *(f"trades_p202503{d:02d}" for d in range(1, 5))]
        assert partition_names(conn, "trades")[0] == "trades_p20250305"
        oldest = conn.execute("SELECT min(time) FROM trades").fetchone()[0]
        assert oldest == NOW - timedelta(days=7)  # 03-05 15:30 is inside 03-05's partition: kept
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (8,)
        # funding, 30 days: cutoff 02-10 15:30; weeks starting <= 02-03 (ending <= 02-10) go
        assert [d for d in dropped if d.startswith("funding")] == [
            "funding_p20241230", "funding_p20250106", "funding_p20250113", "funding_p20250120",
            "funding_p20250127", "funding_p20250203"]
        assert min(partition_names(conn, "funding")) == "funding_p20250210"
        assert conn.execute("SELECT min(time) FROM funding").fetchone()[0] >= NOW - timedelta(days=37)
        assert drop_expired(conn, NOW, {"trades": timedelta(days=7)}) == []  # idempotent


def test_drop_expired_can_be_limited_to_one_table(db_url: str) -> None:
    """The writer runs retention one table per transaction, so each DROP's locks are held briefly."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        ensure_partitions_for(conn, "trades", NOW - timedelta(days=12), NOW)
        ensure_partitions_for(conn, "funding", NOW - timedelta(days=70), NOW)
        dropped = drop_expired(conn, NOW, tables=("funding",))
        assert dropped and all(d.startswith("funding_") for d in dropped)
        assert partition_names(conn, "trades")[0] == "trades_p20250228"  # untouched
        assert drop_expired(conn, NOW, tables=("trades",))[0] == "trades_p20250228"
