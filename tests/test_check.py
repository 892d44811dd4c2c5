"""check.py against a real PostgreSQL: each finding provoked by rows inserted for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from collector.check import run_check
from collector.storage import ensure_partitions_for, ensure_schema

NOW = datetime(2025, 3, 12, 15, 30, 20, tzinfo=UTC)
UNIVERSE = ["BTCUSDT", "ETHUSDT"]


def _candles(conn: psycopg.Connection, symbol: str, skip: set[int]) -> None:
    base = NOW.replace(second=0) - timedelta(minutes=90)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO candles_1m VALUES (%s, %s, %s, 1, 1, 1, 1, 1, 1, 1, 1, 1)", [
            (base + timedelta(minutes=m), symbol, base + timedelta(minutes=m, seconds=59.999))
            for m in range(91) if m not in skip])


def healthy(conn: psycopg.Connection) -> None:
    ensure_schema(conn, "postgres", now=NOW)
    for s in UNIVERSE:
        conn.execute("INSERT INTO funding (time, symbol, mark_price) VALUES (%s, %s, 1)",
                     (NOW - timedelta(minutes=5), s))
        _candles(conn, s, set())
    for i, (reason, usd) in enumerate([("large_trade", 100.0), ("large_trade", 300.0), ("time_interval", 5.0)]):
        conn.execute("INSERT INTO trades VALUES (%s, 'BTCUSDT', %s, 1, 1, %s, 'buy', %s, 1, 1)",
                     (NOW - timedelta(minutes=10), i, usd, reason))


def test_healthy_database_is_ok(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
    report = run_check(db_url, UNIVERSE, NOW)
    assert report.ok, report.format()
    trades = report.get("trades")
    assert trades.summary.startswith("3 trades")
    assert any("large_trade" in d and "2 rows" in d and "$200.00" in d for d in trades.details)
    assert "OK" in report.format().splitlines()[0]


def test_each_problem_is_reported(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        # funding: SOLUSDT in the universe but silent for 2 hours
        conn.execute("INSERT INTO funding (time, symbol, mark_price) VALUES (%s, 'SOLUSDT', 1)",
                     (NOW - timedelta(hours=2),))
        # candles: SOLUSDT missing three minutes inside the window
        _candles(conn, "SOLUSDT", {60, 61, 80})
        # duplicates: a table that lost its key
        conn.execute("ALTER TABLE open_interest DROP CONSTRAINT open_interest_pkey")
        for _ in range(3):
            conn.execute("INSERT INTO open_interest VALUES (%s, 'BTCUSDT', 5)", (NOW - timedelta(minutes=1),))
        # retention: a trade 20 days old (trades keep 7 days)
        old = NOW - timedelta(days=20)
        ensure_partitions_for(conn, "trades", old, old)
        conn.execute("INSERT INTO trades VALUES (%s, 'BTCUSDT', 99, 1, 1, 1, 'buy', 'keep_all', 1, 1)", (old,))
    report = run_check(db_url, [*UNIVERSE, "SOLUSDT"], NOW)
    text = report.format()
    assert not report.ok
    assert not report.get("funding").ok and "SOLUSDT" in report.get("funding").details[0]
    assert report.get("candles_1m").details == ["SOLUSDT: 3 of 60 missing"], text
    dup = report.get("duplicates")
    assert not dup.ok and dup.details == ["open_interest: 1 keys duplicated, 2 extra rows"]
    ret = report.get("retention")
    assert not ret.ok and len(ret.details) == 1 and ret.details[0].startswith("trades:")
    assert "PROBLEMS FOUND" in text and "[FAIL] duplicates" in text


def test_universe_is_inferred_and_validated(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
    report = run_check(db_url, None, NOW.timestamp())  # Unix seconds are accepted too
    assert report.get("funding").summary.startswith("2/2") and report.now == NOW
    with pytest.raises(ValueError):
        run_check(db_url, ["bad symbol"], NOW)
