"""TimescaleDB: the hypertables, policies and continuous aggregates it gets, and what it reports back.

Why a module of its own: on TimescaleDB the database runs retention, compression and candle roll-ups
itself as background jobs, so the collector's part is to create them exactly per the TimescaleDB 2.x
docs (create_timescale, apply_retention) and to read their outcome from the informational views
(timescale_job_failures for `check`, /health and /metrics; timescale_layout for `check`'s retention rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

import psycopg

from collector.db.tables import (
    DERIVED_CANDLES,
    KEYS,
    TIME_TABLES,
    add_venue_column,
    candle_counts_nullable,
    interval_sql,
    primary_key,
    relation_exists,
    set_primary_key,
    table_ddl,
    with_default_retention,
)
from collector.pipeline.encode import CANDLE_TABLES

# --- what ensure_schema creates ---------------------------------------------------------------------------------

# TimescaleDB chunk intervals: same reasoning as SPANS (a chunk per day of trades, a week for the rest);
# derived candles are continuous aggregates whose own chunking TimescaleDB derives from the source.
CHUNK_INTERVAL = {
    "trades": "1 day",
    "funding": "7 days",
    "liquidations": "7 days",
    "open_interest": "7 days",
    "candles_1m": "7 days",
}
# Compress once a chunk is no longer written: trades chunks are a day and only the current day is hot, so
# after 1 day; the weekly tables after 7 days so the chunk being filled is never compressed under the writer.
COMPRESS_AFTER = {"trades": "1 day", "funding": "7 days", "liquidations": "7 days",
                  "open_interest": "7 days", "candles_1m": "7 days"}
# Continuous-aggregate refresh: end_offset leaves the still-open bucket to real-time aggregation,
# start_offset spans several buckets so late 1m candles are folded in; schedule about once per bucket.
CAGG_POLICY = {
    "candles_5m": ("1 hour", "5 minutes", "5 minutes"),
    "candles_30m": ("6 hours", "30 minutes", "30 minutes"),
    "candles_4h": ("2 days", "4 hours", "1 hour"),
    "candles_1d": ("7 days", "1 day", "1 hour"),
}
CAGG_BUCKET = {"candles_5m": "5 minutes", "candles_30m": "30 minutes", "candles_4h": "4 hours",
               "candles_1d": "1 day"}


def create_timescale(conn: psycopg.Connection, retention: Mapping[str, timedelta | None]) -> None:
    """Hypertables, compression, retention, continuous aggregates, exactly per the TimescaleDB 2.x docs.

    create_hypertable(relation, dimension => by_range(column, interval), if_not_exists => ...):
      https://docs.tigerdata.com/api/latest/hypertable/create_hypertable/ (generalized API, TimescaleDB 2.13+)
    ALTER TABLE ... SET (timescaledb.compress, timescaledb.compress_segmentby, timescaledb.compress_orderby):
      https://docs.tigerdata.com/api/latest/compression/alter_table_compression/
    add_compression_policy(hypertable, compress_after => INTERVAL, if_not_exists => BOOL):
      https://docs.tigerdata.com/api/latest/compression/add_compression_policy/
    CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) ... GROUP BY time_bucket(...) WITH NO DATA:
      https://docs.tigerdata.com/api/latest/continuous-aggregates/create_materialized_view/
    first(value, time) / last(value, time):
      https://docs.tigerdata.com/api/latest/hyperfunctions/first/ and .../last/
    add_continuous_aggregate_policy(continuous_aggregate, start_offset, end_offset, schedule_interval,
      if_not_exists): https://docs.tigerdata.com/api/latest/continuous-aggregates/add_continuous_aggregate_policy/
    """
    for t, chunk in CHUNK_INTERVAL.items():
        conn.execute(table_ddl(t, partitioned=False))
        conn.execute(f"SELECT create_hypertable('{t}', by_range('time', INTERVAL '{chunk}'), if_not_exists => TRUE)")
        _enable_compression(conn, t)
    conn.execute(table_ddl("gaps", partitioned=False))
    _create_candle_aggregates(conn)
    apply_retention(conn, retention)


def _enable_compression(conn: psycopg.Connection, table: str) -> None:
    """Compression segmented by (venue, symbol): a segment holds one contract's rows, which is what every
    query filters on, and two venues' BTCUSDT never share one."""
    conn.execute(f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = 'venue, symbol', "
                 f"timescaledb.compress_orderby = 'time DESC')")
    conn.execute(f"SELECT add_compression_policy('{table}', compress_after => INTERVAL '{COMPRESS_AFTER[table]}', "
                 f"if_not_exists => TRUE)")


def _create_candle_aggregates(conn: psycopg.Connection) -> None:
    """candles_5m..1d: a continuous aggregate per timeframe, grouped by venue and symbol, plus its policy."""
    for view, bucket in CAGG_BUCKET.items():
        # The aggregate itself lives in <view>_agg; <view> is a plain view adding close_time. Why: a
        # continuous aggregate may only use immutable expressions, and timestamptz + interval is merely
        # stable in PostgreSQL, so close_time (bucket end - 1 ms, as Binance reports it) is computed on read.
        # materialized_only = false: the still-open bucket is served by real-time aggregation.
        conn.execute(f"""
            CREATE MATERIALIZED VIEW IF NOT EXISTS {view}_agg
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '{bucket}', time) AS bucket, venue, symbol,
                   first(open, time) AS open, max(high) AS high, min(low) AS low, last(close, time) AS close,
                   sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades,
                   sum(taker_buy_volume) AS taker_buy_volume, sum(taker_buy_quote_volume) AS taker_buy_quote_volume
            FROM candles_1m
            GROUP BY time_bucket(INTERVAL '{bucket}', time), venue, symbol
            WITH NO DATA""")
        conn.execute(f"""
            CREATE OR REPLACE VIEW {view} AS
            SELECT bucket AS time, venue, symbol,
                   bucket + INTERVAL '{bucket}' - INTERVAL '1 millisecond' AS close_time,
                   open, high, low, close, volume, quote_volume, trades::bigint AS trades,
                   taker_buy_volume, taker_buy_quote_volume
            FROM {view}_agg""")
        start, end, every = CAGG_POLICY[view]
        conn.execute(f"SELECT add_continuous_aggregate_policy('{view}_agg', start_offset => INTERVAL '{start}', "
                     f"end_offset => INTERVAL '{end}', schedule_interval => INTERVAL '{every}', "
                     f"if_not_exists => TRUE)")


# --- schema version 6: every table gains the venue ------------------------------------------------------------


def migrate_to_venues(conn: psycopg.Connection, retention: Mapping[str, timedelta | None]) -> list[str]:
    """Version 6 on TimescaleDB: the hypertables gain `venue` in their key and segmentby, and the candle
    aggregates are rebuilt grouped by venue. Existing rows become 'binance'. Returns the archive tables made.

    Followed, statement by statement (TimescaleDB 2.x docs):
    - remove_compression_policy(hypertable, if_exists) first, so no job compresses a chunk mid-migration
      (https://docs.tigerdata.com/api/latest/compression/remove_compression_policy/; the decompress_chunk
      page asks for the policy to be stopped before decompressing).
    - SELECT decompress_chunk(c, true) FROM show_chunks('<hypertable>') c: every compressed chunk back to
      row form (https://docs.tigerdata.com/api/latest/compression/decompress_chunk/), because "creation of
      unique constraints on compressed chunks is not supported. You can add them by disabling compression on
      the hypertable and re-enabling after constraint creation" (https://docs.tigerdata.com/api/latest/compression/).
    - ALTER TABLE ... SET (timescaledb.compress = false), then ADD COLUMN venue TEXT NOT NULL DEFAULT
      'binance' (a NOT NULL column with a default is supported on hypertables, compressed ones from 2.6:
      https://docs.tigerdata.com/use-timescale/latest/compression/modify-a-schema/), the primary key
      swapped, candles_1m's trade count and taker-buy volumes made nullable (ALTER COLUMN ... DROP NOT NULL,
      while compression is off), compression re-enabled with compress_segmentby = 'venue, symbol' (ALTER TABLE (Compression):
      https://docs.tigerdata.com/api/latest/compression/alter_table_compression/) and its policy re-added;
      the policy recompresses the old chunks on its next runs.
    - A continuous aggregate's query cannot be altered, so each candles_<tf>_agg is dropped with DROP
      MATERIALIZED VIEW, which also removes its refresh and retention policies
      (https://docs.tigerdata.com/api/latest/continuous-aggregates/drop_materialized_view/), after copying
      the buckets older than the oldest stored 1m candle (which a new aggregate could not rebuild) into a
      plain table candles_<tf>_v5_archive. Recreated WITH NO DATA (CREATE MATERIALIZED VIEW cannot refresh
      inside ensure_schema's transaction); ensure_schema then refreshes every complete bucket of the stored
      1m candles outside it (collector.db.rollups.refresh_candle_views: CALL refresh_continuous_aggregate
      with an explicit window, https://docs.tigerdata.com/api/latest/continuous-aggregates/
      refresh_continuous_aggregate/).
    """
    archives: list[str] = []
    for view in CAGG_BUCKET:
        conn.execute(f"DROP VIEW IF EXISTS {view}_closed")
        conn.execute(f"DROP VIEW IF EXISTS {view}")  # recreated below with the venue column
        if relation_exists(conn, f"{view}_agg") and not _has_column(conn, f"{view}_agg", "venue"):
            archive = f"{view}_v5_archive"
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {archive} AS
                             SELECT 'binance'::text AS venue, a.* FROM {view}_agg a
                             WHERE a.bucket < coalesce((SELECT min(time) FROM candles_1m), 'infinity')""")
            archives.append(archive)
            conn.execute(f"DROP MATERIALIZED VIEW {view}_agg")
    for t in CHUNK_INTERVAL:
        key = primary_key(conn, t)
        if key is not None and key[1] == KEYS[t]:
            continue  # created by this code's create_timescale (a new database) or migrated already
        conn.execute(f"SELECT remove_compression_policy('{t}', if_exists => TRUE)")
        conn.execute(f"SELECT decompress_chunk(c, true) FROM show_chunks('{t}') c")
        conn.execute(f"ALTER TABLE {t} SET (timescaledb.compress = false)")
        add_venue_column(conn, t)
        set_primary_key(conn, t, KEYS[t])
        if t in CANDLE_TABLES:  # candles_1m: the derived timeframes are aggregates, their columns follow it
            candle_counts_nullable(conn, t)
        _enable_compression(conn, t)
    _create_candle_aggregates(conn)
    apply_retention(conn, retention)
    return archives


def _has_column(conn: psycopg.Connection, relation: str, column: str) -> bool:
    """pg_attribute, not information_schema.columns: the latter lists no materialized relations."""
    row = conn.execute("""SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s
                          AND attnum > 0 AND NOT attisdropped""", (relation, column)).fetchone()
    return row is not None


def apply_retention(conn: psycopg.Connection, retention: Mapping[str, timedelta | None]) -> None:
    """(Re)set one retention policy per hypertable / continuous aggregate, so a changed config takes effect.

    add_retention_policy(relation, drop_after => INTERVAL) / remove_retention_policy(relation, if_exists):
    https://docs.tigerdata.com/api/latest/data-retention/add_retention_policy/
    """
    retention = with_default_retention(retention)
    for t in TIME_TABLES:
        rel = f"{t}_agg" if t in DERIVED_CANDLES else t
        conn.execute(f"SELECT remove_retention_policy('{rel}', if_exists => TRUE)")
        keep = retention.get(t)
        if keep is not None:
            conn.execute(f"SELECT add_retention_policy('{rel}', drop_after => INTERVAL '{interval_sql(keep)}')")


# --- what TimescaleDB reports about its own jobs and layout --------------------------------------------------

# The policies ensure_schema creates; any other job in the database (user actions, telemetry) is not ours.
POLICY_PROCS = ("policy_retention", "policy_compression", "policy_refresh_continuous_aggregate")


class JobFailure(NamedTuple):
    """A collector policy job whose last run failed, as timescaledb_information reports it."""

    job_id: int
    proc_name: str
    relation: str  # the hypertable, or the continuous aggregate (<view>_agg) for its materialization table
    total_failures: int
    last_run_started_at: datetime | None
    error: str | None  # the newest err_message in job_errors (None when the view is absent or empty)

    def describe(self) -> str:
        when = f" at {self.last_run_started_at:%Y-%m-%d %H:%M} UTC" if self.last_run_started_at else ""
        err = self.error or "no error recorded in timescaledb_information.job_errors"
        return (f"job {self.job_id} ({self.proc_name} on {self.relation}) failed{when}, "
                f"{self.total_failures} failures in total: {err}")


def _our_hypertables_sql() -> str:
    """(hypertable_name, relation) for the collector's hypertables and its aggregates' materialization tables."""
    ours = ", ".join(f"('{t}', '{t}')" for t in TIME_TABLES if t not in DERIVED_CANDLES)
    return f"""SELECT * FROM (VALUES {ours}) o(hypertable_name, relation)
               UNION ALL
               SELECT materialization_hypertable_name::text, view_name::text
               FROM timescaledb_information.continuous_aggregates
               WHERE view_schema = current_schema() AND view_name::text IN
                     ({", ".join(f"'{t}_agg'" for t in DERIVED_CANDLES)})"""


def job_failures_sql(with_errors: bool = True) -> str:
    """The query behind timescale_job_failures (one parameter: the proc names), exposed so a test can
    have PostgreSQL parse it where TimescaleDB is absent."""
    error = ("""(SELECT e.err_message FROM timescaledb_information.job_errors e WHERE e.job_id = s.job_id
                 ORDER BY e.finish_time DESC NULLS LAST LIMIT 1)""" if with_errors else "NULL::text")
    return f"""
        WITH ours AS ({_our_hypertables_sql()})
        SELECT s.job_id, j.proc_name::text, o.relation, s.total_failures, s.last_run_started_at, {error}
        FROM timescaledb_information.job_stats s
        JOIN timescaledb_information.jobs j ON j.job_id = s.job_id
        JOIN ours o ON o.hypertable_name = j.hypertable_name::text
        WHERE s.last_run_status = 'Failed' AND j.proc_name::text = ANY(%s)
          AND j.hypertable_schema::text IN (current_schema(), '_timescaledb_internal')
        ORDER BY s.job_id"""


def timescale_job_failures(conn: psycopg.Connection) -> list[JobFailure]:
    """The collector's TimescaleDB policy jobs whose last run failed; [] on plain PostgreSQL.

    One query for everyone who asks (`check`, the writer's periodic poll behind /health and /metrics).
    Read-only; uses only the documented informational views (TimescaleDB 2.x):
    timescaledb_information.job_stats (job_id, hypertable_name, last_run_status 'Success'/'Failed',
      last_run_started_at, total_failures): https://docs.tigerdata.com/api/latest/informational-views/job_stats/
    timescaledb_information.jobs (job_id, proc_name, hypertable_name):
      https://docs.tigerdata.com/api/latest/informational-views/jobs/
    timescaledb_information.job_errors (job_id, proc_name, start_time, finish_time, sqlerrcode, err_message;
      since 2.9, and only rows the current role may see): .../informational-views/job_errors/
    Without the extension the timescaledb_information schema does not exist: checked first, so the query
    never raises (and never aborts the caller's transaction) on plain PostgreSQL.
    """
    if not relation_exists(conn, "timescaledb_information.job_stats"):
        return []
    query = job_failures_sql(with_errors=relation_exists(conn, "timescaledb_information.job_errors"))
    rows = conn.execute(query, (list(POLICY_PROCS),)).fetchall()
    return [JobFailure(int(r[0]), r[1], r[2], int(r[3] or 0), r[4], r[5]) for r in rows]


class TimescaleLayout(NamedTuple):
    """What TimescaleDB reports for one of the collector's tables (hypertable or continuous aggregate)."""

    hypertable: str  # the hypertable whose chunks hold the rows (the materialization table for an aggregate)
    chunk_interval: timedelta | None  # timescaledb_information.dimensions.time_interval
    retention_every: timedelta | None  # schedule_interval of its policy_retention job (None: no such job)
    drop_after: str | None  # that job's config->>'drop_after', as TimescaleDB prints the interval


def layout_sql() -> str:
    """The query behind timescale_layout, exposed so a test can have PostgreSQL parse it."""
    return f"""
        WITH ours AS ({_our_hypertables_sql()})
        SELECT o.relation, o.hypertable_name,
               (SELECT d.time_interval FROM timescaledb_information.dimensions d
                 WHERE d.hypertable_name::text = o.hypertable_name AND d.dimension_number = 1),
               j.schedule_interval, j.config->>'drop_after'
        FROM ours o
        LEFT JOIN timescaledb_information.jobs j
               ON j.hypertable_name::text = o.hypertable_name AND j.proc_name::text = 'policy_retention'"""


def timescale_layout(conn: psycopg.Connection) -> dict[str, TimescaleLayout]:
    """Per table of TIME_TABLES: real chunk interval and retention job schedule; {} on plain PostgreSQL.

    Read from timescaledb_information.dimensions (time_interval), .jobs (schedule_interval, config) and
    .continuous_aggregates (materialization_hypertable_name), so `check` judges retention by what the
    database actually does rather than by what ensure_schema asked for.
    """
    if not relation_exists(conn, "timescaledb_information.dimensions"):
        return {}
    rows = conn.execute(layout_sql()).fetchall()
    out: dict[str, TimescaleLayout] = {}
    for relation, hypertable, chunk, every, drop_after in rows:
        table = relation.removesuffix("_agg")
        out[table] = TimescaleLayout(hypertable, chunk, every, drop_after)
    return out
