"""The TimescaleDB back-end judged by what TimescaleDB itself reports (timescaledb_information views).

Every `timescale` test runs only where TEST_DATABASE_URL points at a server with the extension preloaded;
elsewhere it is skipped with the reason. Written to the TimescaleDB 2.x documentation of each view:
- hypertables, dimensions (time_interval), continuous_aggregates (view_name,
  materialization_hypertable_name, materialized_only), compression_settings (attname,
  segmentby_column_index, orderby_column_index, orderby_asc), jobs (proc_name, hypertable_name,
  schedule_interval, config), job_stats (last_run_status), job_errors (err_message):
  https://docs.tigerdata.com/api/latest/informational-views/
- a continuous aggregate's chunk interval defaults to 10x its source hypertable's:
  https://docs.tigerdata.com/use-timescale/latest/continuous-aggregates/create-a-continuous-aggregate/
- refresh_continuous_aggregate(continuous_aggregate, window_start, window_end), a procedure run with CALL
  outside a transaction block: https://docs.tigerdata.com/api/latest/continuous-aggregates/refresh_continuous_aggregate/
- alter_job(job_id, next_start => ...): https://docs.tigerdata.com/api/latest/jobs-automation/alter_job/

The statements these tests send are also parsed on every server (test_timescale_sql_parses), so a typo
shows up here even where the tests themselves cannot run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from collector.db import timescale
from collector.db.check import run_check
from collector.db.schema import ensure_schema
from collector.db.tables import DEFAULT_RETENTION, DERIVED_CANDLES, TIME_TABLES

NOW = datetime.now(UTC)
HYPERTABLES = ("trades", "funding", "liquidations", "open_interest", "candles_1m")
AGGREGATES = tuple(f"{t}_agg" for t in DERIVED_CANDLES)

# The statements the tests send, named so test_timescale_sql_parses can check each one.
SQL = {
    "hypertables": "SELECT hypertable_name::text FROM timescaledb_information.hypertables "
                   "WHERE hypertable_schema = current_schema()",
    "aggregates": "SELECT view_name::text, materialization_hypertable_name::text, hypertable_name::text, "
                  "materialized_only FROM timescaledb_information.continuous_aggregates "
                  "WHERE view_schema = current_schema()",
    "dimensions": "SELECT hypertable_name::text, column_name::text, time_interval "
                  "FROM timescaledb_information.dimensions WHERE dimension_number = 1",
    "compression": "SELECT hypertable_name::text, attname::text, segmentby_column_index, orderby_column_index, "
                   "orderby_asc FROM timescaledb_information.compression_settings "
                   "WHERE hypertable_schema = current_schema()",
    "jobs": "SELECT job_id, proc_name::text, hypertable_name::text, schedule_interval, config "
            "FROM timescaledb_information.jobs WHERE proc_name::text = ANY(%s)",
    "interval_equals": "SELECT %s::interval = %s::interval",
    # a procedure that commits inside: sent without parameters (simple query protocol), window as literals
    "refresh": "CALL refresh_continuous_aggregate('candles_5m_agg', {}::timestamptz, {}::timestamptz)",
    "job_status": "SELECT last_run_status FROM timescaledb_information.job_stats WHERE job_id = %s",
    "run_soon": "SELECT alter_job(%s, next_start => now())",
}


@pytest.fixture
def tsdb(db_url: str, timescaledb_available: bool) -> str:
    if not timescaledb_available:
        pytest.skip("TimescaleDB extension not installed on this server (set TEST_DATABASE_URL to one that has it)")
    return db_url


def _jobs(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[int, timedelta, dict]]:
    """(proc, relation) -> (job_id, schedule_interval, config); an aggregate's jobs are listed under its view."""
    mat = {m: v for v, m, _, _ in conn.execute(SQL["aggregates"]).fetchall()}
    out: dict[tuple[str, str], tuple[int, timedelta, dict]] = {}
    for job_id, proc, ht, every, config in conn.execute(SQL["jobs"], (list(timescale.POLICY_PROCS),)).fetchall():
        key = (proc, mat.get(ht, ht))
        assert key not in out, f"two {proc} jobs on {key[1]}"
        out[key] = (job_id, every, config)
    return out


def _same_interval(conn: psycopg.Connection, a: object, b: object) -> bool:
    return conn.execute(SQL["interval_equals"], (a, b)).fetchone()[0]


@pytest.mark.timescale
def test_every_policy_as_timescaledb_reports_it(tsdb: str) -> None:
    with psycopg.connect(tsdb, autocommit=True) as conn:
        assert ensure_schema(conn, "timescaledb", DEFAULT_RETENTION, now=NOW) == "timescaledb"
        assert ensure_schema(conn, "auto", DEFAULT_RETENTION, now=NOW) == "timescaledb"  # idempotent

        assert {r[0] for r in conn.execute(SQL["hypertables"])} == set(HYPERTABLES)
        aggs = {v: (m, src, only) for v, m, src, only in conn.execute(SQL["aggregates"]).fetchall()}
        assert set(aggs) == set(AGGREGATES)
        assert all(src == "candles_1m" and only is False for _, src, only in aggs.values()), aggs

        dims = {ht: (col, iv) for ht, col, iv in conn.execute(SQL["dimensions"]).fetchall()}
        for t in HYPERTABLES:
            assert dims[t][0] == "time" and _same_interval(conn, dims[t][1], timescale.CHUNK_INTERVAL[t]), (t, dims[t])
        for view, (mat, _, _) in aggs.items():  # 10x candles_1m's 7 days, per the docs
            assert dims[mat][1] == timedelta(days=70), (view, dims[mat])

        comp: dict[str, dict[str, tuple]] = {}
        for ht, col, seg, order, asc in conn.execute(SQL["compression"]).fetchall():
            comp.setdefault(ht, {})[col] = (seg, order, asc)
        for t in HYPERTABLES:
            assert comp[t] == {"venue": (1, None, None), "symbol": (2, None, None), "time": (None, 1, False)}, \
                (t, comp.get(t))

        jobs = _jobs(conn)
        for t in HYPERTABLES:
            _, _, cfg = jobs[("policy_compression", t)]
            assert _same_interval(conn, cfg["compress_after"], timescale.COMPRESS_AFTER[t]), (t, cfg)
        for t in TIME_TABLES:
            rel = f"{t}_agg" if t in DERIVED_CANDLES else t
            keep = DEFAULT_RETENTION[t]
            if keep is None:  # candles_1d keeps forever: no retention job on its materialization table
                assert ("policy_retention", rel) not in jobs
            else:
                _, _, cfg = jobs[("policy_retention", rel)]
                assert _same_interval(conn, cfg["drop_after"], keep), (t, cfg)
        for view, (start, end, every) in timescale.CAGG_POLICY.items():
            _, sched, cfg = jobs[("policy_refresh_continuous_aggregate", f"{view}_agg")]
            assert _same_interval(conn, cfg["start_offset"], start), (view, cfg)
            assert _same_interval(conn, cfg["end_offset"], end), (view, cfg)
            assert _same_interval(conn, sched, every), (view, sched)

        # a changed retention replaces the policy (one job, the new drop_after)
        ensure_schema(conn, "auto", {**DEFAULT_RETENTION, "trades": timedelta(days=3)}, now=NOW)
        _, _, cfg = _jobs(conn)[("policy_retention", "trades")]
        assert _same_interval(conn, cfg["drop_after"], timedelta(days=3)), cfg

        # what check reads back is what TimescaleDB reports, aggregates mapped to their tables
        layout = timescale.timescale_layout(conn)
        assert layout["candles_5m"].hypertable == aggs["candles_5m_agg"][0]
        assert layout["candles_5m"].chunk_interval == timedelta(days=70)
        assert layout["trades"].retention_every == jobs[("policy_retention", "trades")][1]
        assert layout["candles_1d"].retention_every is None
        assert timescale.timescale_job_failures(conn) == []
    report = run_check(tsdb, None, NOW, DEFAULT_RETENTION)
    assert report.ok, report.format()
    assert report.get("timescaledb_jobs").summary == "every policy job's last run succeeded"


def _candle(t: datetime, volume: int) -> tuple:
    return (t, "BTCUSDT", t + timedelta(seconds=59.999), 10, 12, 9, 11, volume, volume * 10, 3, 1, 10)


@pytest.mark.timescale
def test_late_1m_candle_reaches_candles_5m_after_a_window_refresh(tsdb: str) -> None:
    """A 1m candle older than the refresh policy's start_offset is not picked up by the policy; refreshing
    the affected window (what the writer does for late candles) puts it into candles_5m."""
    bucket = datetime(2000, 1, 1, tzinfo=UTC) + ((NOW - timedelta(hours=3) - datetime(2000, 1, 1, tzinfo=UTC))
                                                   // timedelta(minutes=5)) * timedelta(minutes=5)
    start = timescale.CAGG_POLICY["candles_5m"][0]
    with psycopg.connect(tsdb, autocommit=True) as conn:
        ensure_schema(conn, "timescaledb", DEFAULT_RETENTION, now=NOW)
        assert conn.execute("SELECT %s < now() - %s::interval", (bucket, start)).fetchone()[0]
        insert = "INSERT INTO candles_1m (time, symbol, close_time, open, high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, venue) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s, 'binance')"
        with conn.cursor() as cur:
            cur.executemany(insert, [_candle(bucket + timedelta(minutes=m), m + 1) for m in range(4)])
        refresh = sql.SQL(SQL["refresh"]).format(sql.Literal(bucket), sql.Literal(bucket + timedelta(minutes=5)))
        conn.execute(refresh)
        vol = "SELECT volume FROM candles_5m WHERE symbol = 'BTCUSDT' AND time = %s"
        assert conn.execute(vol, (bucket,)).fetchone() == (Decimal(1 + 2 + 3 + 4),)
        conn.execute(insert, _candle(bucket + timedelta(minutes=4), 5))  # the late minute
        conn.execute(refresh)
        assert conn.execute(vol, (bucket,)).fetchone() == (Decimal(15),)
        closed = "SELECT close, volume FROM candles_5m_closed WHERE symbol = 'BTCUSDT' AND time = %s"
        assert conn.execute(closed, (bucket,)).fetchone() == (Decimal(11), Decimal(15))


@pytest.mark.timescale
@pytest.mark.timeout(240)
def test_failing_policy_job_is_reported_by_check_and_the_writer(tsdb: str) -> None:
    """A refresh job that cannot get its lock fails; job_stats says so and every reader reports it."""
    from collector.writer.service import Writer

    with psycopg.connect(tsdb, autocommit=True) as conn:
        ensure_schema(conn, "timescaledb", DEFAULT_RETENTION, now=NOW)
        recent = NOW.replace(second=0, microsecond=0) - timedelta(minutes=30)  # inside the policy's window
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO candles_1m (time, symbol, close_time, open, high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, venue) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s, 'binance')",
                            [_candle(recent + timedelta(minutes=m), 1) for m in range(10)])
        job_id = _jobs(conn)[("policy_refresh_continuous_aggregate", "candles_5m_agg")][0]
        dbname = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{dbname}" SET lock_timeout = \'200ms\'')  # background jobs connect anew
    with psycopg.connect(tsdb) as locker:
        locker.execute("LOCK TABLE candles_1m IN ACCESS EXCLUSIVE MODE")  # held until rollback
        with psycopg.connect(tsdb, autocommit=True) as conn:
            conn.execute(SQL["run_soon"], (job_id,))
            deadline = time.monotonic() + 180
            while conn.execute(SQL["job_status"], (job_id,)).fetchone()[0] != "Failed":
                assert time.monotonic() < deadline, "the refresh job never ran into the held lock"
                time.sleep(0.5)
        locker.rollback()
    with psycopg.connect(tsdb, autocommit=True) as conn:
        failures = timescale.timescale_job_failures(conn)
    assert [(f.job_id, f.proc_name, f.relation) for f in failures] == [
        (job_id, "policy_refresh_continuous_aggregate", "candles_5m_agg")]
    assert failures[0].error and "lock" in failures[0].error, failures
    jobs = run_check(tsdb, None, NOW, DEFAULT_RETENTION).get("timescaledb_jobs")
    assert not jobs.ok and jobs.details == [failures[0].describe()]
    w = Writer(tsdb, mode="timescaledb")
    try:
        w.connection()
        w.maintenance.poll_jobs(0.0)
        assert w.stats.jobs_failing == {"policy_refresh_continuous_aggregate": 1} and w.stats.jobs_checked_ms
    finally:
        w.close(0.0)


def test_timescale_sql_parses(db_url: str) -> None:
    """Every statement above and collector.db.timescale's informational-view queries are valid SQL: PostgreSQL parses a
    statement before it looks its relations up, so on a server without TimescaleDB each must fail only
    because a relation, function or procedure is missing, never with a syntax error."""
    statements: list[tuple[str | sql.Composed, list | None]] = [
        (q, [None] * q.count("%s") or None) for k, q in SQL.items() if k != "refresh"]
    statements += [
        (sql.SQL(SQL["refresh"]).format(sql.Literal(NOW), sql.Literal(NOW)), None),
        (timescale.job_failures_sql(True), [list(timescale.POLICY_PROCS)]),
        (timescale.job_failures_sql(False), [list(timescale.POLICY_PROCS)]),
        (timescale.layout_sql(), None),
    ]
    with psycopg.connect(db_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('timescaledb_information.jobs')").fetchone()[0] is not None:
            pytest.skip("TimescaleDB is installed here: the timescale tests run these statements for real")
        for stmt, params in statements:
            try:
                conn.execute(stmt, params)
            except psycopg.errors.SyntaxError as e:
                pytest.fail(f"syntax error: {e}\n{stmt!r}")
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction):
                pass  # parsed; TimescaleDB's objects are missing here


class _VersionFiveCatalog:
    """Stands in for a TimescaleDB database at schema version 5 while migrate_to_venues decides what to run:
    every relation exists, no table has a venue column, every key is the old one. It only records the
    statements; the test below has a real PostgreSQL parse each of them."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, stmt: object, params: object = None) -> _VersionFiveCatalog:
        text = stmt if isinstance(stmt, str) else stmt.as_string(None)  # type: ignore[attr-defined]
        self.statements.append(text)
        self._last = text
        return self

    def fetchone(self) -> tuple[object, ...] | None:
        if "to_regclass(%s) IS NOT NULL" in self._last:
            return (True,)
        if "pg_constraint" in self._last:
            return ("old_pkey", ["symbol", "time"])
        return None  # pg_attribute: no venue column anywhere


def test_version_6_timescale_statements_parse(db_url: str) -> None:
    """The TimescaleDB path of schema version 6 (not runnable here) issues only statements PostgreSQL can
    parse: each may fail for a missing relation, function or TimescaleDB option, never with a syntax error."""
    catalog = _VersionFiveCatalog()
    timescale.migrate_to_venues(catalog, DEFAULT_RETENTION)  # type: ignore[arg-type]
    ddl = catalog.statements
    assert any("decompress_chunk" in s for s in ddl) and any("compress_segmentby = 'venue, symbol'" in s for s in ddl)
    assert any("DROP MATERIALIZED VIEW candles_5m_agg" in s for s in ddl)
    assert any("GROUP BY time_bucket(INTERVAL '5 minutes', time), venue, symbol" in s for s in ddl)
    with psycopg.connect(db_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('timescaledb_information.jobs')").fetchone()[0] is not None:
            pytest.skip("TimescaleDB is installed here: the timescale tests run these statements for real")
        for stmt in ddl:
            if "%s" in stmt:
                continue  # the catalogue probes above, answered by _VersionFiveCatalog
            try:
                conn.execute(stmt)
            except psycopg.errors.SyntaxError as e:
                pytest.fail(f"syntax error: {e}\n{stmt}")
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedObject,
                    psycopg.errors.InvalidParameterValue):
                pass  # parsed; the relations or TimescaleDB's functions and options are missing here
