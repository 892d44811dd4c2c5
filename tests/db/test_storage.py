"""storage.py against a real PostgreSQL: schema, partitions, retention, rollups, tiers."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from collector.db import schema as storage
from collector.db.schema import (
    SchemaError,
    TierRow,
    drop_expired,
    ensure_partitions,
    ensure_partitions_for,
    ensure_schema,
    load_latest_tiers,
    rollup_candles,
    store_tiers,
)
from collector.pipeline.encode import COLUMNS

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)  # a Wednesday


def partitions(conn: psycopg.Connection, table: str) -> list[str]:
    return sorted(r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass", (table,)).fetchall())


def test_schema_is_idempotent_and_matches_the_copy_columns(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert ensure_schema(conn, "postgres", now=NOW) == "postgres"
        before = partitions(conn, "trades")
        assert ensure_schema(conn, "postgres", now=NOW) == "postgres"
        assert ensure_schema(conn, "auto", now=NOW) == "postgres"  # the stored mode wins over auto
        assert partitions(conn, "trades") == before
        assert conn.execute("SELECT version, mode FROM schema_version ORDER BY version").fetchall() == [
            (v, "postgres") for v in range(1, storage.SCHEMA_VERSION + 1)]
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


def test_mode_facts_agree_with_the_server(db_url: str) -> None:
    """Whatever this server has, read_mode_facts reports what its catalogs and settings say."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
                           ).fetchone()
        spl = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        facts = storage.read_mode_facts(conn, None)
    assert facts.available_version == (row[0] if row else None)
    assert facts.preloaded == storage.preload_listed(spl)
    assert facts.created_version is None and facts.stored_mode is None  # a fresh database


def test_mode_facts_readable_without_superuser(db_url: str) -> None:
    """shared_preload_libraries is hidden from ordinary roles: the facts still come without an error."""
    role = f"collector_plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        try:
            conn.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SHOW shared_preload_libraries")
            facts = storage.read_mode_facts(conn, None)
            assert conn.execute("SELECT 1").fetchone() == (1,)  # the session survived
            conn.execute("RESET ROLE")
            spl = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            assert facts.preloaded == storage.preload_listed(spl)
        finally:
            conn.execute("RESET ROLE")
            conn.execute(f"DROP ROLE {role}")


def test_installed_but_not_preloaded_server(ts_not_preloaded_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The trap of issue 11: auto picks plain PostgreSQL with one warning, timescaledb is refused with the
    fix, and the connection survives both (the stub's install script would end it, as the real one does)."""
    from helpers import STUB_TIMESCALEDB_VERSION

    with psycopg.connect(ts_not_preloaded_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS mode_trap WITH (FORCE)")
        admin.execute("CREATE DATABASE mode_trap")
    url = ts_not_preloaded_url.rsplit("/", 1)[0] + "/mode_trap"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            facts = storage.read_mode_facts(conn, None)
            assert facts == storage.ModeFacts(STUB_TIMESCALEDB_VERSION, False, None, None)
            with pytest.raises(SchemaError) as refused:
                ensure_schema(conn, "timescaledb", now=NOW)
            assert "add timescaledb to shared_preload_libraries" in str(refused.value)
            assert not conn.closed and conn.execute("SELECT 1").fetchone() == (1,)
            with caplog.at_level("WARNING", logger="collector.db.schema"):
                assert ensure_schema(conn, "auto", now=NOW) == "postgres"
                assert ensure_schema(conn, "auto", now=NOW) == "postgres"
            warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert len(warnings) == 1 and "shared_preload_libraries" in warnings[0], warnings
            assert conn.execute("SELECT DISTINCT mode FROM schema_version").fetchall() == [("postgres",)]
            assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == (0,)
    finally:
        with psycopg.connect(ts_not_preloaded_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS mode_trap WITH (FORCE)")


def test_the_stub_kills_a_session_that_creates_the_extension(ts_not_preloaded_url: str) -> None:
    """The fixture is a faithful trap: CREATE EXTENSION there ends the session, even inside a savepoint."""
    with psycopg.connect(ts_not_preloaded_url, autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError), conn.transaction():
            conn.execute("CREATE EXTENSION timescaledb")
        assert conn.closed


def test_partitions_are_created_ahead(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        assert partitions(conn, "trades") == ["trades_p20250312", "trades_p20250313", "trades_p20250314"]
        assert partitions(conn, "funding") == ["funding_p20250310"]  # Monday; +2 days stays in the week
        assert partitions(conn, "candles_5m") == ["candles_5m_p20250301"]
        assert partitions(conn, "candles_1d") == ["candles_1d_p20250101"]
        created = ensure_partitions(conn, NOW + timedelta(days=5))
        assert "trades_p20250319" in created and "funding_p20250317" in created
        assert ensure_partitions(conn, NOW + timedelta(days=5)) == []
        # a row in a partition that exists lands; bounds are half-open at UTC midnight
        conn.execute("INSERT INTO trades VALUES ('2025-03-13 23:59:59.999+00', 'BTCUSDT', 1, 1, 1, 1, 'buy', "
                     "'keep_all', 1, 1)")
        assert conn.execute("SELECT tableoid::regclass::text FROM trades").fetchone() == ("trades_p20250313",)


def _insert_trade(conn: psycopg.Connection, t: datetime, i: int) -> None:
    conn.execute("INSERT INTO trades VALUES (%s, 'BTCUSDT', %s, 1, 1, 1, 'buy', 'keep_all', 1, 1)", (t, i))


def test_drop_expired_drops_exactly_the_expired_partitions(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        ensure_partitions_for(conn, "trades", NOW - timedelta(days=12), NOW)
        ensure_partitions_for(conn, "funding", NOW - timedelta(days=70), NOW)
        for d in range(12):
            _insert_trade(conn, NOW - timedelta(days=d), d)
        for d in range(0, 70, 7):
            conn.execute("INSERT INTO funding (time, symbol, mark_price) VALUES (%s, 'BTCUSDT', 1)",
                         (NOW - timedelta(days=d),))
        dropped = drop_expired(conn, NOW, {"trades": timedelta(days=7)})
        # trades: cutoff 2025-03-05 15:30 -> every day ending at or before it goes (up to 03-04)
        assert [d for d in dropped if d.startswith("trades")] == [
            "trades_p20250228", *(f"trades_p202503{d:02d}" for d in range(1, 5))]
        assert partitions(conn, "trades")[0] == "trades_p20250305"
        oldest = conn.execute("SELECT min(time) FROM trades").fetchone()[0]
        assert oldest == NOW - timedelta(days=7)  # 03-05 15:30 is inside 03-05's partition: kept
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (8,)
        # funding, 30 days: cutoff 02-10 15:30; weeks starting <= 02-03 (ending <= 02-10) go
        assert [d for d in dropped if d.startswith("funding")] == [
            "funding_p20241230", "funding_p20250106", "funding_p20250113", "funding_p20250120",
            "funding_p20250127", "funding_p20250203"]
        assert min(partitions(conn, "funding")) == "funding_p20250210"
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
        assert partitions(conn, "trades")[0] == "trades_p20250228"  # untouched
        assert drop_expired(conn, NOW, tables=("trades",))[0] == "trades_p20250228"


def _candle_rows(start: datetime, minutes: int, missing: set[int], symbol: str, rng: random.Random) -> list[tuple]:
    rows = []
    price = Decimal("100.00")
    for m in range(minutes):
        if m in missing:
            continue
        o = price
        c = (o + Decimal(rng.randint(-50, 50)) / 100).quantize(Decimal("0.01"))
        h = max(o, c) + Decimal(rng.randint(0, 20)) / 100
        lo = min(o, c) - Decimal(rng.randint(0, 20)) / 100
        t = start + timedelta(minutes=m)
        rows.append((t, symbol, t + timedelta(seconds=59.999), o, h, lo, c, Decimal(rng.randint(1, 999)) / 1000,
                     Decimal(rng.randint(1, 99999)) / 100, rng.randint(1, 500), Decimal(rng.randint(0, 999)) / 1000,
                     Decimal(rng.randint(0, 9999)) / 100))
        price = c
    return rows


def _expected(rows: list[tuple], width: timedelta) -> dict[tuple[str, datetime], tuple]:
    """Binance's kline of `width` for each UTC-aligned bucket, computed by hand from the 1m rows."""
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    buckets: dict[tuple[str, datetime], list[tuple]] = {}
    for r in sorted(rows, key=lambda r: r[0]):
        b = origin + ((r[0] - origin) // width) * width
        buckets.setdefault((r[1], b), []).append(r)
    out = {}
    for (sym, b), rs in buckets.items():
        out[(sym, b)] = (b + width - timedelta(milliseconds=1), rs[0][3], max(r[4] for r in rs),
                         min(r[5] for r in rs), rs[-1][6], sum(r[7] for r in rs), sum(r[8] for r in rs),
                         sum(r[9] for r in rs), sum(r[10] for r in rs), sum(r[11] for r in rs))
    return out


def test_rollup_equals_hand_computed_klines(db_url: str) -> None:
    rng = random.Random(7)
    start = datetime(2025, 3, 9, 22, 0, tzinfo=UTC)  # crosses UTC midnight: 4h and 1d alignment matters
    minutes = 10 * 60
    rows = _candle_rows(start, minutes, {3, 4, 61, 125, 300}, "BTCUSDT", rng)  # holes, one a bucket's first
    rows += _candle_rows(start, minutes, {0, 599}, "ETHUSDT", rng)  # first and last minute missing
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        ensure_partitions_for(conn, "candles_1m", start, start + timedelta(minutes=minutes))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO candles_1m VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)
        changed = rollup_candles(conn, start, start + timedelta(minutes=minutes))
        assert changed["candles_5m"] == 2 * 120
        for table, width in storage.DERIVED_CANDLES.items():
            got = {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(
                f"SELECT symbol, time, close_time, open, high, low, close, volume, quote_volume, trades, "
                f"taker_buy_volume, taker_buy_quote_volume FROM {table}").fetchall()}
            assert got == _expected(rows, width), table
        days = {r[0] for r in conn.execute("SELECT time FROM candles_1d").fetchall()}
        assert days == {datetime(2025, 3, 9, tzinfo=UTC), datetime(2025, 3, 10, tzinfo=UTC)}
        four = {r[0] for r in conn.execute("SELECT time FROM candles_4h").fetchall()}
        assert four == {datetime(2025, 3, 9, 20, tzinfo=UTC), datetime(2025, 3, 10, 0, tzinfo=UTC),
                        datetime(2025, 3, 10, 4, tzinfo=UTC)}
        # idempotent: nothing changes on a rerun
        assert set(rollup_candles(conn, start, start + timedelta(minutes=minutes)).values()) == {0}
        # a late 1m candle for a hole updates every level, touching only its buckets
        late = _candle_rows(start + timedelta(minutes=61), 1, set(), "BTCUSDT", rng)
        conn.execute("INSERT INTO candles_1m VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", late[0])
        changed = rollup_candles(conn, late[0][0], late[0][0] + timedelta(minutes=1))
        assert changed == {"candles_5m": 1, "candles_30m": 1, "candles_4h": 1, "candles_1d": 1}
        got5 = {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(
            "SELECT symbol, time, close_time, open, high, low, close, volume, quote_volume, trades, "
            "taker_buy_volume, taker_buy_quote_volume FROM candles_5m").fetchall()}
        assert got5 == _expected(rows + late, timedelta(minutes=5))


def _closed_rows(conn: psycopg.Connection, view: str) -> set[datetime]:
    return {r[0] for r in conn.execute(f"SELECT time FROM {view} WHERE symbol = 'BTCUSDT'").fetchall()}


def _insert_candle(conn: psycopg.Connection, table: str, t: datetime, width: timedelta, symbol: str = "BTCUSDT") -> None:
    conn.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, 1, 1, 1, 1, 1, 1, 1, 1, 1)",
                 (t, symbol, t + width - timedelta(milliseconds=1)))


def test_closed_views_hold_only_finished_periods(db_url: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=now)
        db_now = conn.execute("SELECT now()").fetchone()[0]
        for table, width in storage.TIMEFRAMES.items():
            ensure_partitions_for(conn, table, db_now - 3 * width, db_now)
            origin = datetime(2000, 1, 1, tzinfo=UTC)
            open_start = origin + ((db_now - origin) // width) * width  # the period now() falls in
            closed = open_start - 2 * width  # ended a whole period (>= 1 minute) ago
            _insert_candle(conn, table, closed, width)
            _insert_candle(conn, table, open_start, width)
            view = storage.closed_view(table)
            assert view == f"{table}_closed"
            got = _closed_rows(conn, view)
            assert closed in got and open_start not in got, table
        # a derived period that ended less than a minute ago (at the current minute's start) is not final
        # yet: its last 1m candle may still be in flight
        ended = db_now.replace(second=0, microsecond=0) - timedelta(minutes=5)
        assert db_now - (ended + timedelta(minutes=5)) < storage.CLOSED_GRACE
        _insert_candle(conn, "candles_5m", ended, timedelta(minutes=5), "ETHUSDT")
        assert conn.execute("SELECT count(*) FROM candles_5m_closed WHERE symbol = 'ETHUSDT'").fetchone() == (0,)


def test_a_version_1_database_gains_the_closed_views(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        for table in storage.TIMEFRAMES:  # back to what version 1 left
            conn.execute(f"DROP VIEW {storage.closed_view(table)}")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
        ensure_schema(conn, "auto", now=NOW)
        views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE viewname LIKE 'candles%_closed'")}
        assert views == {f"{t}_closed" for t in storage.TIMEFRAMES}
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (storage.SCHEMA_VERSION,)


def test_closed_view_is_served_by_the_symbol_time_key(db_url: str) -> None:
    """EXPLAIN on the plain back-end: one symbol's closed candles come from the primary key, no seq scan."""
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=now)
        ensure_partitions_for(conn, "candles_5m", now - timedelta(days=40), now)
        conn.execute("""
            INSERT INTO candles_5m
            SELECT t, 'S' || s, t + INTERVAL '5 minutes' - INTERVAL '1 millisecond', 1, 1, 1, 1, 1, 1, 1, 1, 1
            FROM generate_series(1, 10) s,
                 generate_series(date_bin('5 minutes', now() - INTERVAL '40 days', TIMESTAMPTZ '2000-01-01'),
                                 now(), INTERVAL '5 minutes') t""")
        conn.execute("ANALYZE candles_5m")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT * FROM candles_5m_closed WHERE symbol = 'S3' AND time >= now() - INTERVAL '1 day'"))
        assert "Seq Scan" not in plan, plan
        conds = [line.strip() for line in plan.splitlines() if line.strip().startswith("Index Cond:")]
        assert conds and "_pkey" in plan, plan
        # the view's own bound (5 minutes + 1 minute grace) is an index condition, not a filter afterwards
        for c in conds:
            assert "symbol = 'S3'::text" in c and "(\"time\" <= (now() - '00:06:00'::interval))" in c, plan
            assert "(\"time\" >= (now() - '1 day'::interval))" in c, plan
        n = conn.execute("SELECT count(*) FROM candles_5m_closed WHERE symbol = 'S3' "
                         "AND time >= now() - INTERVAL '1 day'").fetchone()[0]
        assert 286 <= n <= 288  # a day of 5m periods, minus the open one and the one within the grace


def test_tiers_round_trip_latest_wins(db_url: str) -> None:
    t1 = NOW - timedelta(hours=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        store_tiers(conn, {"BTCUSDT": TierRow(1, 100_000.0, 80_000.0, 0.9), "ETHUSDT": (2, 50_000.0, None, None)}, t1)
        store_tiers(conn, {"BTCUSDT": TierRow(2, 90_000.5, 70_000.0, 0.7)}, NOW)
        store_tiers(conn, {"BTCUSDT": TierRow(2, 90_000.5, 70_000.0, 0.7)}, NOW)  # replay: no-op
        assert load_latest_tiers(conn) == {"BTCUSDT": TierRow(2, 90_000.5, 70_000.0, 0.7),
                                           "ETHUSDT": TierRow(2, 50_000.0, None, None)}
        assert conn.execute("SELECT count(*) FROM symbol_tiers").fetchone() == (3,)
        with pytest.raises(ValueError):
            store_tiers(conn, {"bad'sym": TierRow(1, 1.0, None, None)}, NOW)


def test_timescale_job_queries_are_empty_on_plain_postgres_and_leave_the_transaction_usable(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:  # not autocommit: an error would abort the transaction
        ensure_schema(conn, "postgres", now=NOW)
        assert storage.timescale_job_failures(conn) == []
        assert storage.timescale_layout(conn) == {}
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
        conn.execute("INSERT INTO gaps (symbol, kind, from_id, to_id, detected_at, state, reason, updated_at) "
                     "VALUES ('BTCUSDT', 'candles_1m', 1, 5, %s, 'detected', 'test', %s)", (NOW, NOW))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE gaps SET state = 'lost'")
        assert storage.open_gaps(conn, ["BTCUSDT", "ETHUSDT"]) == [
            storage.OpenGap("candles_1m", "BTCUSDT", 1, 5, int(NOW.timestamp() * 1000))]


def test_refresh_window_covers_whole_complete_buckets_only() -> None:
    m, five = 60_000, 300_000
    t = 1_767_225_600_000  # a 5m boundary
    # a late candle at minute 2 of a complete bucket: exactly that bucket
    assert storage.refresh_window(five, t + 2 * m, t + 3 * m, t + 20 * m) == (t, t + five)
    # candles across two buckets: both
    assert storage.refresh_window(five, t + 4 * m, t + 6 * m, t + 20 * m) == (t, t + 2 * five)
    # the bucket of the newest candle is still open: left to real-time aggregation
    assert storage.refresh_window(five, t + 2 * m, t + 3 * m, t + 3 * m) is None
    assert storage.refresh_window(five, t + 4 * m, t + 6 * m, t + 6 * m) == (t, t + five)
    # the candle that closes a bucket completes it
    assert storage.refresh_window(five, t + 4 * m, t + 5 * m, t + 5 * m) == (t, t + five)
