"""check.py against a real PostgreSQL: each finding provoked by rows inserted for it.

The span arithmetic (which minutes are owed, the funding bucket) is pure and tested directly; each
failure kind is then shown to flip exactly its own finding on an otherwise healthy database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from collector.db.check import (
    DELIVERY_GRACE,
    expected_minutes,
    funding_cap_bucket_ms,
    last_complete_minute,
    plain_retention_rules,
    run_check,
    timescale_retention_rules,
)
from collector.db.partitions import ensure_partitions_for
from collector.db.schema import ensure_schema
from collector.db.timescale import TimescaleLayout

NOW = datetime(2025, 3, 12, 15, 30, 20, tzinfo=UTC)
UNIVERSE = ["BTCUSDT", "ETHUSDT"]
# The demo's collected span: candles 15:20..15:29 (10 closed minutes); 15:29 closed 20 s before NOW, so it
# is still within the delivery grace and the owed span is 15:20..15:28 (9 minutes).
FIRST = datetime(2025, 3, 12, 15, 20, tzinfo=UTC)
MINUTES = 10


def _candles(conn: psycopg.Connection, symbol: str, skip: set[int] = frozenset(), start: datetime = FIRST,
             minutes: int = MINUTES) -> None:
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO candles_1m VALUES (%s, 'binance', %s, %s, 1, 1, 1, 1, 1, 1, 1, 1, 1)", [
            (start + timedelta(minutes=m), symbol, start + timedelta(minutes=m, seconds=59.999))
            for m in range(minutes) if m not in skip])


def _funding(conn: psycopg.Connection, symbol: str, t: datetime) -> None:
    conn.execute("INSERT INTO funding (time, venue, symbol, mark_price) VALUES (%s, 'binance', %s, 1)", (t, symbol))


def healthy(conn: psycopg.Connection) -> None:
    """A clean 10-minute demo of two symbols: a funding row per minute, every 1m candle, three trades."""
    ensure_schema(conn, "postgres", now=NOW)
    for s in UNIVERSE:
        for m in range(MINUTES + 1):
            _funding(conn, s, FIRST + timedelta(minutes=m, seconds=7))
        _candles(conn, s)
    for i, (reason, usd) in enumerate([("large_trade", 100.0), ("large_trade", 300.0), ("time_interval", 5.0)]):
        conn.execute("INSERT INTO trades VALUES (%s, 'binance', 'BTCUSDT', %s, 1, 1, %s, 'buy', %s, 1, 1)",
                     (NOW - timedelta(minutes=5), i, usd, reason))


# --- pure span arithmetic --------------------------------------------------------------------------------


def test_last_complete_minute_leaves_out_the_open_and_the_in_flight_minute() -> None:
    newest = datetime(2025, 3, 12, 15, 29, tzinfo=UTC)  # closed at 15:30:00
    assert last_complete_minute(newest, newest + timedelta(minutes=1) + DELIVERY_GRACE) == newest
    assert last_complete_minute(newest, newest + timedelta(minutes=1, seconds=5)) == newest - timedelta(minutes=1)
    # a stored row for the still-open minute does not make the open minute owed
    assert last_complete_minute(newest, newest + timedelta(seconds=40)) == newest - timedelta(minutes=1)
    assert last_complete_minute(None, newest) is None


def test_expected_minutes_counts_closed_minutes_inclusive() -> None:
    t = datetime(2025, 3, 12, 15, 0, tzinfo=UTC)
    assert expected_minutes(t, t) == 1
    assert expected_minutes(t, t + timedelta(minutes=9)) == 10
    assert expected_minutes(t + timedelta(seconds=1), t + timedelta(minutes=9)) == 9  # partial first minute
    assert expected_minutes(t + timedelta(minutes=3), t) == 0


def test_funding_bucket_follows_min_interval() -> None:
    assert funding_cap_bucket_ms(60) == 60_000 and funding_cap_bucket_ms(0.5) == 500


def test_retention_tolerance_comes_from_the_backend_layout() -> None:
    plain = plain_retention_rules({"trades": timedelta(days=7)}, timedelta(hours=1))
    assert plain["trades"].tolerance == timedelta(days=1, hours=2)  # daily partitions + hourly drop + slack
    assert plain["candles_5m"].tolerance == timedelta(days=31, hours=2)
    assert "candles_1d" not in plain  # kept forever
    layout = {"trades": TimescaleLayout("trades", timedelta(days=1), timedelta(days=1), "7 days"),
              "candles_5m": TimescaleLayout("_materialized_hypertable_7", timedelta(days=70),
                                                    timedelta(days=1), "180 days")}
    rules, problems = timescale_retention_rules({}, layout)
    assert rules["trades"].tolerance == timedelta(days=2, hours=1)  # 1 d chunks + daily job + slack
    assert rules["candles_5m"].tolerance == timedelta(days=71, hours=1)  # the aggregate's 70 d chunks
    assert "_materialized_hypertable_7" in rules["candles_5m"].why
    # a table that should have a retention policy but has none is a problem, not silently skipped
    assert any(p.startswith("funding: no policy_retention job") for p in problems)
    assert not any(p.startswith("candles_1d") for p in problems)


# --- against PostgreSQL -------------------------------------------------------------------------------------


def test_clean_short_demo_is_ok(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
    report = run_check(db_url, None, NOW)
    assert report.ok, report.format()
    assert report.get("candles_1m").summary == "2/2 symbols complete, 2025-03-12 15:20..15:29 UTC"
    trades = report.get("trades")
    assert trades.summary.startswith("3 trades")
    assert any("large_trade" in d and "2 rows" in d and "$200.00" in d for d in trades.details)
    assert report.get("timescaledb_jobs").ok
    assert "OK" in report.format().splitlines()[0]


def test_demo_judged_on_its_own_span_hours_later(db_url: str) -> None:
    """Checked three hours after it stopped, the same demo is still complete: the span is what was collected."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
    report = run_check(db_url, UNIVERSE, NOW + timedelta(hours=3))
    assert report.ok, report.format()
    assert report.get("candles_1m").summary.endswith("15:20..15:30 UTC")  # 15:29 is no longer in flight


def test_missing_candle_inside_the_span_fails(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        _candles(conn, "SOLUSDT", skip={2, 3, 6})  # three holes in SOLUSDT's 15:20..15:28
        for m in range(MINUTES):
            _funding(conn, "SOLUSDT", FIRST + timedelta(minutes=m, seconds=9))
    report = run_check(db_url, None, NOW)
    assert not report.ok
    assert report.get("candles_1m").details == ["SOLUSDT: 3 of 9 missing"], report.format()
    assert [f.name for f in report.findings if not f.ok] == ["candles_1m"]


def test_symbol_starting_later_is_judged_from_its_first_row_and_one_with_none_from_the_collections(
        db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        _candles(conn, "NEWUSDT", start=FIRST + timedelta(minutes=5), minutes=5)  # listed at 15:25
        _funding(conn, "NEWUSDT", FIRST + timedelta(minutes=5))
        _funding(conn, "NOCANDLEUSDT", FIRST + timedelta(minutes=5))  # collected (funding) but no candle
    report = run_check(db_url, None, NOW)
    assert report.get("candles_1m").details == ["NOCANDLEUSDT: 9 of 9 missing"], report.format()


def test_since_judges_every_symbol_from_that_time(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        _candles(conn, "SOLUSDT", skip={0, 1, 2})  # first row 15:23: late for the collection, or new?
        for m in range(MINUTES):
            _funding(conn, "SOLUSDT", FIRST + timedelta(minutes=m, seconds=9))
    assert run_check(db_url, None, NOW).ok  # by default: judged from its own first row
    since = run_check(db_url, None, NOW, since=FIRST - timedelta(hours=1)).get("candles_1m")
    assert since.details == ["SOLUSDT: 3 of 9 missing"]  # from the collection's start (later than --since)


def test_symbol_collected_before_the_lookback_owes_the_whole_lookback(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        _candles(conn, "SOLUSDT", skip={0, 1, 2})
        old = NOW - timedelta(days=2)
        ensure_partitions_for(conn, "candles_1m", old, old)
        _candles(conn, "SOLUSDT", start=old.replace(second=0), minutes=1)
    # lookback starts 2025-03-11 15:30:20: owed 15:31 (03-11) .. 15:28 (03-12) = 1438 minutes, 6 stored
    report = run_check(db_url, ["SOLUSDT"], NOW)
    assert report.get("candles_1m").details == ["SOLUSDT: 1432 of 1438 missing"], report.format()


def test_doubled_funding_minute_fails(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        _funding(conn, "ETHUSDT", FIRST + timedelta(minutes=4, seconds=31))  # a second row in 15:24
    report = run_check(db_url, None, NOW)
    cap = report.get("funding_cap")
    assert not cap.ok and cap.details == ["ETHUSDT 2025-03-12 15:24:00: 2 rows"], report.format()
    assert [f.name for f in report.findings if not f.ok] == ["funding_cap"]
    # a wider configured interval puts two rows of different minutes into one bucket
    wide = run_check(db_url, None, NOW, funding_interval_s=120).get("funding_cap")
    assert not wide.ok and len(wide.details) == 2 * 5  # 15:20..15:29 in 2-minute buckets, both symbols


def test_expired_row_fails(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        old = NOW - timedelta(days=20)  # trades keep 7 days: 20 days is past any partition + schedule slack
        ensure_partitions_for(conn, "trades", old, old)
        conn.execute("INSERT INTO trades VALUES (%s, 'binance', 'BTCUSDT', 99, 1, 1, 1, 'buy', 'keep_all', 1, 1)", (old,))
        # within tolerance: a day-partition's worth past 7 days is what hourly partition drops leave
        edge = NOW - timedelta(days=7, hours=20)
        ensure_partitions_for(conn, "trades", edge, edge)
        conn.execute("INSERT INTO trades VALUES (%s, 'binance', 'BTCUSDT', 98, 1, 1, 1, 'buy', 'keep_all', 1, 1)", (edge,))
    ret = run_check(db_url, None, NOW).get("retention")
    assert not ret.ok and len(ret.details) == 1 and ret.details[0].startswith("trades: oldest row 2025-02-20")
    assert "daily partitions dropped every 1 h" in ret.details[0]


def test_symbol_that_went_silent_within_the_lookback_fails_without_a_universe(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        _funding(conn, "SOLUSDT", FIRST - timedelta(hours=3))  # collected earlier today, silent since
    funding = run_check(db_url, None, NOW).get("funding")
    assert not funding.ok and funding.details == ["missing: SOLUSDT"] and funding.summary.startswith("2/3")


def test_unkeyed_duplicates_and_silent_symbol_fail(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        _funding(conn, "SOLUSDT", FIRST - timedelta(hours=2))  # in the universe but silent for 2 hours
        conn.execute("ALTER TABLE open_interest DROP CONSTRAINT open_interest_pkey")
        for _ in range(3):
            conn.execute("INSERT INTO open_interest VALUES (%s, 'binance', 'BTCUSDT', 5)", (NOW - timedelta(minutes=1),))
    report = run_check(db_url, [*UNIVERSE, "SOLUSDT"], NOW)
    text = report.format()
    assert not report.get("funding").ok and "SOLUSDT" in report.get("funding").details[0]
    dup = report.get("duplicates")
    assert not dup.ok and dup.details == ["open_interest: 1 keys duplicated, 2 extra rows"]
    assert "PROBLEMS FOUND" in text and "[FAIL] duplicates" in text


def test_universe_is_validated_and_unix_seconds_accepted(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
    report = run_check(db_url, None, NOW.timestamp())
    assert report.get("funding").summary.startswith("2/2") and report.now == NOW
    with pytest.raises(ValueError):
        run_check(db_url, ["bad symbol"], NOW)


def test_data_types_not_collected_are_not_judged(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        for m in range(MINUTES):
            _funding(conn, "BTCUSDT", FIRST + timedelta(minutes=m))
    names = [f.name for f in run_check(db_url, None, NOW, data_types=["funding"]).findings]
    assert "candles_1m" not in names and "trades" not in names and "funding_cap" in names


def test_recorded_liquidation_holes_are_reported_not_failed(db_url: str) -> None:
    """A liquidations gap row (exchange ms; collector.pipeline.liquidation_holes) is listed, so a reader can tell
    a quiet market from a hole; it is final (no venue has the history), so it does not fail the report."""
    lo_ms = int((NOW - timedelta(minutes=4)).timestamp() * 1000)
    with psycopg.connect(db_url, autocommit=True) as conn:
        healthy(conn)
        assert run_check(db_url, None, NOW).get("liquidation_holes").summary == "no liquidation hole recorded"
        conn.execute("""INSERT INTO gaps VALUES ('binance', 'BTCUSDT', 'liquidations', %s, %s, %s, NULL, 'unfillable',
                            'no liquidation history on Binance', %s)""", (lo_ms, lo_ms + 42_000, NOW, NOW))
        conn.execute("""INSERT INTO gaps VALUES ('okx', 'BTC-USDT-SWAP', 'liquidations', %s, %s, %s, NULL,
                            'unfillable', 'no liquidation history on OKX', %s)""", (lo_ms, lo_ms + 9_000, NOW, NOW))
    report = run_check(db_url, None, NOW)
    assert report.ok, report.format()
    holes = report.get("liquidation_holes")
    assert holes.summary.startswith("1 recorded times of 1 symbols without their liquidations")
    assert holes.details == ["BTCUSDT                 1 holes, 42 s in all, 2025-03-12 15:26:20..2025-03-12 15:27:02 UTC "
                             "(no liquidation history on Binance)"]
    assert "liquidation_holes" not in [f.name for f in run_check(db_url, None, NOW, data_types=["funding"]).findings]
