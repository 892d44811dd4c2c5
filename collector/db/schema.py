"""The SQL schema, for TimescaleDB or plain PostgreSQL, and the maintenance that keeps it bounded.

One schema, two back-ends:
- TimescaleDB: hypertables, retention and compression policies, candles_5m..1d as continuous aggregates
  over candles_1m. The database itself runs maintenance as background jobs.
- Plain PostgreSQL: native range partitions by time, created ahead (and on demand by the writer) and dropped
  whole when expired; candles_5m..1d are real tables filled by `rollup_candles`.

Every table's key makes a replayed batch harmless: the writer's recovery path inserts with
ON CONFLICT DO NOTHING, so a batch whose commit outcome was unknown can be loaded again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

import psycopg
from psycopg import sql

from collector.pipeline.encode import CANDLE_TABLES, COLUMNS, valid_symbol

log = logging.getLogger(__name__)

Mode = Literal["auto", "timescaledb", "postgres"]

# Bump when the DDL changes and add a step to _MIGRATIONS; a database newer than this refuses to start.
SCHEMA_VERSION = 4

# Arbitrary constant key for pg_advisory_xact_lock: two processes running ensure_schema at once serialise.
_SCHEMA_LOCK_KEY = 0x434F4C4C  # "COLL"

DAY = timedelta(days=1)

# Default retention (None = forever). Trades are the bulk (hundreds of millions of rows a week in keep_all),
# so they go first; derived candles are tiny and worth keeping longer the coarser they are.
DEFAULT_RETENTION: dict[str, timedelta | None] = {
    "trades": 7 * DAY,
    "funding": 30 * DAY,
    "liquidations": 30 * DAY,
    "open_interest": 30 * DAY,
    "candles_1m": 90 * DAY,
    "candles_5m": 180 * DAY,
    "candles_30m": 365 * DAY,
    "candles_4h": 730 * DAY,
    "candles_1d": None,
}

# Partition (plain PostgreSQL) / chunk (TimescaleDB) span per time-partitioned table. Why these:
# - trades daily: by far the largest table and the shortest retention (7 d), so whole days drop cleanly and
#   a day's partition stays small enough for its indexes to live in memory while it is being written.
# - funding / liquidations / open_interest / candles_1m weekly: ~10^5..10^7 rows a week across 500 symbols;
#   with 30..90 d retention a week overshoots retention by at most 7 days.
# - candles_5m / 30m / 4h monthly: <10^6 rows a month; 180 d..2 y retention in ~6..24 partitions.
# - candles_1d yearly: ~180k rows a year and no retention.
Span = Literal["day", "week", "month", "year"]
SPANS: dict[str, Span] = {
    "trades": "day",
    "funding": "week",
    "liquidations": "week",
    "open_interest": "week",
    "candles_1m": "week",
    "candles_5m": "month",
    "candles_30m": "month",
    "candles_4h": "month",
    "candles_1d": "year",
}
SPAN_LENGTH: dict[Span, timedelta] = {"day": DAY, "week": 7 * DAY, "month": 31 * DAY, "year": 366 * DAY}

# Primary keys: (symbol, time, ...) serves "one symbol over a time range" and "latest row of a symbol"
# (backward index scan) directly; the trailing columns make each event unique so a replay is a no-op.
KEYS: dict[str, tuple[str, ...]] = {
    "trades": ("symbol", "time", "trade_id"),
    "funding": ("symbol", "time"),
    "liquidations": ("symbol", "time", "side", "price", "quantity"),
    "open_interest": ("symbol", "time"),
    **{t: ("symbol", "time") for t in CANDLE_TABLES},
    "gaps": ("symbol", "kind", "from_id", "to_id"),
}

_COLUMN_TYPES: dict[str, str] = {
    "time": "TIMESTAMPTZ NOT NULL",
    "symbol": "TEXT NOT NULL",
    "trade_id": "BIGINT NOT NULL",
    "price": "NUMERIC NOT NULL",
    "amount": "NUMERIC NOT NULL",
    "usd_value": "DOUBLE PRECISION NOT NULL",
    "side": "TEXT NOT NULL",
    "save_reason": "TEXT NOT NULL",
    "first_trade_id": "BIGINT",
    "last_trade_id": "BIGINT",
    "mark_price": "NUMERIC NOT NULL",
    "index_price": "NUMERIC",
    "funding_rate": "NUMERIC",
    "next_funding_time": "TIMESTAMPTZ",
    "order_type": "TEXT",
    "avg_price": "NUMERIC",
    "quantity": "NUMERIC NOT NULL",
    "filled_quantity": "NUMERIC",
    "status": "TEXT",
    "open_interest": "NUMERIC NOT NULL",
    "close_time": "TIMESTAMPTZ NOT NULL",
    "open": "NUMERIC NOT NULL",
    "high": "NUMERIC NOT NULL",
    "low": "NUMERIC NOT NULL",
    "close": "NUMERIC NOT NULL",
    "volume": "NUMERIC NOT NULL",
    "quote_volume": "NUMERIC NOT NULL",
    "trades": "BIGINT NOT NULL",
    "taker_buy_volume": "NUMERIC NOT NULL",
    "taker_buy_quote_volume": "NUMERIC NOT NULL",
    "from_id": "BIGINT NOT NULL",
    "to_id": "BIGINT NOT NULL",
    "detected_at": "TIMESTAMPTZ NOT NULL",
    "filled_at": "TIMESTAMPTZ",
    "kind": "TEXT NOT NULL",
    "state": "TEXT NOT NULL",
    "reason": "TEXT NOT NULL",
    "updated_at": "TIMESTAMPTZ NOT NULL",
}

TIME_TABLES = tuple(SPANS)
# In TimescaleDB mode these are continuous aggregates (read-only views), in plain mode tables.
DERIVED_CANDLES: dict[str, timedelta] = {
    "candles_5m": timedelta(minutes=5),
    "candles_30m": timedelta(minutes=30),
    "candles_4h": timedelta(hours=4),
    "candles_1d": DAY,
}
# Each derived interval is built from the next finer one: first/last/max/min/sum compose exactly, so the
# result equals rolling up 1m directly while reading 5..8 rows per bucket instead of up to 1440.
_ROLLUP_SOURCE = {"candles_5m": "candles_1m", "candles_30m": "candles_5m", "candles_4h": "candles_30m",
                  "candles_1d": "candles_4h"}


class SchemaError(RuntimeError):
    """The database cannot be brought to (or is beyond) the schema this code knows."""


# --- DDL ----------------------------------------------------------------------------------------------------------


def _table_ddl(table: str, partitioned: bool) -> sql.Composed:
    cols = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_COLUMN_TYPES[c])) for c in COLUMNS[table]]
    cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, KEYS[table]))))
    tail = sql.SQL(" PARTITION BY RANGE (time)") if partitioned else sql.SQL("")
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}){}").format(
        sql.Identifier(table), sql.SQL(", ").join(cols), tail)


_COMMON_DDL = [
    """CREATE TABLE IF NOT EXISTS symbol_tiers (
        computed_at TIMESTAMPTZ NOT NULL,
        symbol TEXT NOT NULL,
        tier SMALLINT NOT NULL,
        threshold_usd DOUBLE PRECISION NOT NULL,
        p90_usd DOUBLE PRECISION,
        score DOUBLE PRECISION,
        PRIMARY KEY (computed_at, symbol))""",
    # latest tiers per symbol on restart: DISTINCT ON (symbol) ORDER BY symbol, computed_at DESC
    "CREATE INDEX IF NOT EXISTS symbol_tiers_symbol_latest ON symbol_tiers (symbol, computed_at DESC)",
]


def _plain_indexes() -> list[str]:
    # BRIN on time: "every symbol over the last hour" (check, dashboards) cannot use the (symbol, time, ...)
    # keys; a BRIN on append-ordered time costs almost nothing to maintain (a few pages per partition),
    # unlike a btree on the 50k rows/s trades stream. No index on save_reason: 5-ish values, always
    # queried together with a time range, which the BRIN narrows first.
    return [f"CREATE INDEX IF NOT EXISTS {t}_time_brin ON {t} USING brin (time)" for t in TIME_TABLES]


def _create_plain(conn: psycopg.Connection, now: datetime) -> None:
    for t in TIME_TABLES:
        conn.execute(_table_ddl(t, partitioned=True))
    conn.execute(_table_ddl("gaps", partitioned=False))
    for stmt in _plain_indexes():
        conn.execute(stmt)
    ensure_partitions(conn, now)


# TimescaleDB chunk intervals: same reasoning as SPANS (a chunk per day of trades, a week for the rest);
# derived candles are continuous aggregates whose own chunking TimescaleDB derives from the source.
_CHUNK_INTERVAL = {
    "trades": "1 day",
    "funding": "7 days",
    "liquidations": "7 days",
    "open_interest": "7 days",
    "candles_1m": "7 days",
}
# Compress once a chunk is no longer written: trades chunks are a day and only the current day is hot, so
# after 1 day; the weekly tables after 7 days so the chunk being filled is never compressed under the writer.
_COMPRESS_AFTER = {"trades": "1 day", "funding": "7 days", "liquidations": "7 days",
                   "open_interest": "7 days", "candles_1m": "7 days"}
# Continuous-aggregate refresh: end_offset leaves the still-open bucket to real-time aggregation,
# start_offset spans several buckets so late 1m candles are folded in; schedule about once per bucket.
_CAGG_POLICY = {
    "candles_5m": ("1 hour", "5 minutes", "5 minutes"),
    "candles_30m": ("6 hours", "30 minutes", "30 minutes"),
    "candles_4h": ("2 days", "4 hours", "1 hour"),
    "candles_1d": ("7 days", "1 day", "1 hour"),
}
_CAGG_BUCKET = {"candles_5m": "5 minutes", "candles_30m": "30 minutes", "candles_4h": "4 hours",
                "candles_1d": "1 day"}


def _interval_sql(d: timedelta) -> str:
    return f"{int(d.total_seconds())} seconds"


def _create_timescale(conn: psycopg.Connection, retention: Mapping[str, timedelta | None]) -> None:
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
    for t, chunk in _CHUNK_INTERVAL.items():
        conn.execute(_table_ddl(t, partitioned=False))
        conn.execute(f"SELECT create_hypertable('{t}', by_range('time', INTERVAL '{chunk}'), if_not_exists => TRUE)")
        conn.execute(f"ALTER TABLE {t} SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol', "
                     f"timescaledb.compress_orderby = 'time DESC')")
        conn.execute(f"SELECT add_compression_policy('{t}', compress_after => INTERVAL '{_COMPRESS_AFTER[t]}', "
                     f"if_not_exists => TRUE)")
    conn.execute(_table_ddl("gaps", partitioned=False))
    for view, bucket in _CAGG_BUCKET.items():
        # The aggregate itself lives in <view>_agg; <view> is a plain view adding close_time. Why: a
        # continuous aggregate may only use immutable expressions, and timestamptz + interval is merely
        # stable in PostgreSQL, so close_time (bucket end - 1 ms, as Binance reports it) is computed on read.
        # materialized_only = false: the still-open bucket is served by real-time aggregation.
        conn.execute(f"""
            CREATE MATERIALIZED VIEW IF NOT EXISTS {view}_agg
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '{bucket}', time) AS bucket, symbol,
                   first(open, time) AS open, max(high) AS high, min(low) AS low, last(close, time) AS close,
                   sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades,
                   sum(taker_buy_volume) AS taker_buy_volume, sum(taker_buy_quote_volume) AS taker_buy_quote_volume
            FROM candles_1m
            GROUP BY time_bucket(INTERVAL '{bucket}', time), symbol
            WITH NO DATA""")
        conn.execute(f"""
            CREATE OR REPLACE VIEW {view} AS
            SELECT bucket AS time, symbol, bucket + INTERVAL '{bucket}' - INTERVAL '1 millisecond' AS close_time,
                   open, high, low, close, volume, quote_volume, trades::bigint AS trades,
                   taker_buy_volume, taker_buy_quote_volume
            FROM {view}_agg""")
        start, end, every = _CAGG_POLICY[view]
        conn.execute(f"SELECT add_continuous_aggregate_policy('{view}_agg', start_offset => INTERVAL '{start}', "
                     f"end_offset => INTERVAL '{end}', schedule_interval => INTERVAL '{every}', "
                     f"if_not_exists => TRUE)")
    _apply_timescale_retention(conn, retention)


def _apply_timescale_retention(conn: psycopg.Connection, retention: Mapping[str, timedelta | None]) -> None:
    """(Re)set one retention policy per hypertable / continuous aggregate, so a changed config takes effect.

    add_retention_policy(relation, drop_after => INTERVAL) / remove_retention_policy(relation, if_exists):
    https://docs.tigerdata.com/api/latest/data-retention/add_retention_policy/
    """
    for t in TIME_TABLES:
        rel = f"{t}_agg" if t in DERIVED_CANDLES else t
        conn.execute(f"SELECT remove_retention_policy('{rel}', if_exists => TRUE)")
        keep = retention.get(t, DEFAULT_RETENTION.get(t))
        if keep is not None:
            conn.execute(f"SELECT add_retention_policy('{rel}', drop_after => INTERVAL '{_interval_sql(keep)}')")


# --- versioning -------------------------------------------------------------------------------------------------


# create_hypertable(..., by_range(...)), the generalized hypertable API used by _create_timescale, was
# introduced in TimescaleDB 2.13.0: https://docs.tigerdata.com/api/latest/hypertable/create_hypertable/
TIMESCALEDB_MIN_VERSION = (2, 13, 0)

_FIX_PRELOAD = "add timescaledb to shared_preload_libraries in postgresql.conf and restart PostgreSQL"
_FIX_INSTALL = ("install TimescaleDB 2.13 or newer for this PostgreSQL (e.g. the timescaledb-2-postgresql-NN "
                "package), " + _FIX_PRELOAD)


@dataclass(frozen=True)
class ModeFacts:
    """What the server and database say about TimescaleDB, read before anything is created.

    Read with plain queries that cannot kill the connection: a CREATE EXTENSION of a TimescaleDB that is
    installed but not preloaded answers FATAL ("extension timescaledb must be preloaded"), which closes
    the connection, so trying it inside a savepoint is not a safe probe.
    """

    available_version: str | None  # pg_available_extensions.default_version; None = not installed on the server
    preloaded: bool  # the timescaledb library is in shared_preload_libraries
    created_version: str | None  # pg_extension.extversion in this database; None = extension not created
    stored_mode: Literal["timescaledb", "postgres"] | None  # schema_version.mode; None before the first run


@dataclass(frozen=True)
class ModeDecision:
    """decide_mode's answer: a back-end (and whether to CREATE EXTENSION first), or a refusal (error)."""

    mode: Literal["timescaledb", "postgres"] | None
    create_extension: bool = False
    warning: str | None = None  # one line for the log: TimescaleDB is there but cannot be used, and the fix
    error: str | None = None  # one line naming database.mode, the problem and the fix; mode is None


def parse_version(v: str) -> tuple[int, ...]:
    """'2.17.2' -> (2, 17, 2); trailing non-numeric parts ('2.14.0-dev') are ignored."""
    parts = []
    for piece in v.split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def preload_listed(setting: str) -> bool:
    """True when a shared_preload_libraries value lists the timescaledb loader.

    Entries may be quoted, carry a path ('$libdir/timescaledb') or a '.so' suffix.
    """
    for item in setting.split(","):
        name = item.strip().strip('"').rsplit("/", 1)[-1]
        if name.endswith(".so"):
            name = name[:-3]
        if name == "timescaledb":
            return True
    return False


def _version_text(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def decide_mode(requested: Mode, facts: ModeFacts) -> ModeDecision:
    """The back-end to use for `requested` given `facts`; pure, so every combination is tested directly.

    - The mode stored by the first run wins: a database's layout cannot change back-end. A stored
      TimescaleDB database needs the extension created and preloaded, else it could not be written.
    - `postgres`: plain partitions, whatever the server has.
    - `timescaledb`: refused, with the fix, unless the extension is available (or already created),
      preloaded and at least TIMESCALEDB_MIN_VERSION.
    - `auto`: TimescaleDB when it could be used; otherwise plain PostgreSQL, with one warning saying how to
      enable TimescaleDB when it is installed but not usable (not preloaded, or too old).
    """
    stored = facts.stored_mode
    if stored is not None:
        if requested not in ("auto", stored):
            return ModeDecision(None, error=f"database.mode is {requested}, but this database was created for "
                                            f"{stored}: set database.mode to {stored} or auto, or use a new database")
        if stored == "postgres":
            return ModeDecision("postgres")
        if facts.created_version is None:
            return ModeDecision(None, error="database.mode: this database was created for timescaledb but the "
                                            "timescaledb extension is missing from it: CREATE EXTENSION timescaledb")
        if not facts.preloaded:
            return ModeDecision(None, error="database.mode: this database was created for timescaledb but "
                                            f"timescaledb is not preloaded: {_FIX_PRELOAD}")
        return ModeDecision("timescaledb")
    if requested == "postgres":
        return ModeDecision("postgres")
    problem = fix = None
    version = facts.created_version or facts.available_version
    if version is None:
        problem, fix = "the timescaledb extension is not installed on this PostgreSQL server", _FIX_INSTALL
    elif not facts.preloaded:
        problem, fix = f"TimescaleDB {version} is installed but not preloaded", _FIX_PRELOAD
    elif parse_version(version) < TIMESCALEDB_MIN_VERSION:
        need = _version_text(TIMESCALEDB_MIN_VERSION)
        problem = f"TimescaleDB {version} is older than {need}, the oldest this collector supports"
        avail = facts.available_version
        if facts.created_version is not None and avail and parse_version(avail) >= TIMESCALEDB_MIN_VERSION:
            fix = f"run ALTER EXTENSION timescaledb UPDATE (version {avail} is installed)"
        else:
            fix = f"upgrade TimescaleDB to {need} or newer"
    if problem is None:
        return ModeDecision("timescaledb", create_extension=facts.created_version is None)
    if requested == "timescaledb":
        return ModeDecision(None, error=f"database.mode is timescaledb, but {problem}: {fix} "
                                        "(or set database.mode: auto to use plain PostgreSQL)")
    if version is None:  # auto on a server without TimescaleDB: plain PostgreSQL is simply the back-end
        return ModeDecision("postgres")
    return ModeDecision("postgres", warning=f"{problem}: using plain PostgreSQL partitions. To use TimescaleDB, "
                                            f"{fix}, before the first run against a new database (a database "
                                            "keeps the back-end it was created with)")


def read_mode_facts(conn: psycopg.Connection, stored: Literal["timescaledb", "postgres"] | None) -> ModeFacts:
    """ModeFacts from catalog views and settings; nothing here can end the session.

    shared_preload_libraries is readable only by superusers and pg_read_all_settings members; for other
    roles the loader's own setting `timescaledb.disable_load` (defined only once the loader is loaded, which
    for a fresh session means preloaded) answers the same question.
    """
    row = conn.execute("SELECT default_version, installed_version FROM pg_available_extensions "
                       "WHERE name = 'timescaledb'").fetchone()
    available, created = (row[0], row[1]) if row else (None, None)
    if created is None:  # installed_version is per database; pg_extension is the authority
        ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        created = ext[0] if ext else None
    preloaded = False
    try:
        with conn.transaction():  # savepoint: "permission denied" is a plain ERROR
            setting = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
        preloaded = preload_listed(setting[0] if setting else "")
    except psycopg.errors.InsufficientPrivilege:
        pass
    if not preloaded:
        loader = conn.execute("SELECT current_setting('timescaledb.disable_load', true)").fetchone()
        preloaded = bool(loader and loader[0] is not None)
    return ModeFacts(available, preloaded, created, stored)


def schema_mode(conn: psycopg.Connection) -> Literal["timescaledb", "postgres"] | None:
    """The back-end the schema was created for, or None before ensure_schema ran."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT mode FROM schema_version ORDER BY version DESC LIMIT 1").fetchone()
    return row[0] if row else None  # type: ignore[return-value]


def ensure_schema(conn: psycopg.Connection, mode: Mode = "auto",
                  retention: Mapping[str, timedelta | None] | None = None,
                  now: datetime | None = None) -> Literal["timescaledb", "postgres"]:
    """Create or upgrade the schema; idempotent. Returns the back-end in use.

    The version and back-end are recorded in `schema_version`; a database written by newer code raises
    SchemaError instead of being written with an outdated layout. The back-end comes from decide_mode (facts
    read first, CREATE EXTENSION only once it is known to work); a refused mode raises SchemaError whose
    message is one line naming database.mode and the fix. Once chosen, the stored mode wins.
    """
    retention = DEFAULT_RETENTION if retention is None else {**DEFAULT_RETENTION, **retention}
    now = now or datetime.now(UTC)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY, mode TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())""")
        row = conn.execute("SELECT version, mode FROM schema_version ORDER BY version DESC LIMIT 1").fetchone()
        if row is not None and row[0] > SCHEMA_VERSION:
            raise SchemaError(f"database schema version {row[0]} is newer than this collector's "
                              f"{SCHEMA_VERSION}: upgrade the collector (refusing to write)")
        decision = decide_mode(mode, read_mode_facts(conn, None if row is None else row[1]))
        if decision.error is not None:
            raise SchemaError(decision.error)
        if decision.warning is not None:  # only on the first run: later runs have a stored mode
            log.warning("%s", decision.warning)
        if decision.create_extension:  # only now: it is known to be available, preloaded and new enough
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        chosen = decision.mode
        for stmt in _COMMON_DDL:
            conn.execute(stmt)
        current = 0 if row is None else row[0]
        for v in range(current + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS[v](conn, chosen, retention, now)
            conn.execute("INSERT INTO schema_version (version, mode) VALUES (%s, %s)", (v, chosen))
        if current == SCHEMA_VERSION:
            if chosen == "timescaledb":
                _apply_timescale_retention(conn, retention)
            else:
                ensure_partitions(conn, now)
    return chosen  # type: ignore[return-value]


def _v1(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None], now: datetime) -> None:
    if mode == "timescaledb":
        _create_timescale(conn, retention)
    else:
        _create_plain(conn, now)


# A derived candle's period counts as closed this long after it ended: its last 1m kline closes at the
# period's end and is committed a few seconds later (worker batch + writer flush), the roll-up right after
# it (plain PostgreSQL) or at read time (TimescaleDB real-time aggregation). A minute covers that with room
# for a writer retry, and the view still serves a closed period long before anyone charts it.
CLOSED_GRACE = timedelta(minutes=1)
# Width of each timeframe's period: candles_1m rows exist only once their kline closed (the workers store
# closed klines only), so its view needs no grace.
TIMEFRAMES: dict[str, timedelta] = {"candles_1m": timedelta(minutes=1), **DERIVED_CANDLES}


def closed_view(table: str) -> str:
    """Name of the view that returns only the complete candles of `table` (e.g. candles_5m_closed)."""
    return f"{table}_closed"


def _closed_view_ddl(table: str) -> str:
    """A view with only periods that have ended (time + width <= now() - grace), i.e. final candles.

    The condition is on `time`, not close_time, so the (symbol, time) primary key serves it as an index
    range (and plain partitions / TimescaleDB chunks are pruned at execution): `now()` is stable, so
    PostgreSQL evaluates it once per query and compares it with the key like a constant.
    """
    grace = CLOSED_GRACE if table in DERIVED_CANDLES else timedelta(0)
    return (f"CREATE OR REPLACE VIEW {closed_view(table)} AS SELECT * FROM {table} "
            f"WHERE time <= now() - INTERVAL '{_interval_sql(TIMEFRAMES[table] + grace)}'")


def _v2(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None], now: datetime) -> None:
    """candles_<tf>_closed views: the same SQL on both back-ends (over tables or over the aggregate views)."""
    for table in TIMEFRAMES:
        conn.execute(_closed_view_ddl(table))


def _v3_checkpoints(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None],
                    now: datetime) -> None:
    """Each symbol's last checkpoint (collector.runtime.checkpoints), so a full restart resumes the workers' state.

    One row per symbol, overwritten by the supervisor; times are epoch milliseconds like the checkpoint
    records they copy (NULL = nothing to resume)."""
    conn.execute("""CREATE TABLE IF NOT EXISTS checkpoints (
        symbol TEXT PRIMARY KEY,
        last_trade_id BIGINT,
        last_kline_open_ms BIGINT,
        funding_ms BIGINT,
        filter_price DOUBLE PRECISION,
        filter_ts_ms BIGINT,
        oi_polled_ms BIGINT,
        updated_ms BIGINT NOT NULL)""")


def _v4_gaps(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None], now: datetime) -> None:
    """gaps becomes the repair queue: a row from detection on, with its kind, state and reason.

    Idempotent on purpose: a database created by this code's _v1 already has the columns and key (the DDL
    follows COLUMNS/KEYS), one created by version 1 code gets them here. Rows from version 1 were
    written once resolved: filled when filled_at is set, else given up.
    """
    conn.execute("""ALTER TABLE gaps ADD COLUMN IF NOT EXISTS kind TEXT, ADD COLUMN IF NOT EXISTS state TEXT,
                    ADD COLUMN IF NOT EXISTS reason TEXT, ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ""")
    conn.execute("""UPDATE gaps SET kind = coalesce(kind, 'trades'),
                        state = coalesce(state, CASE WHEN filled_at IS NULL THEN 'unfillable' ELSE 'filled' END),
                        reason = coalesce(reason, 'recorded before schema version 4'),
                        updated_at = coalesce(updated_at, filled_at, detected_at)
                    WHERE kind IS NULL OR state IS NULL OR reason IS NULL OR updated_at IS NULL""")
    conn.execute("""ALTER TABLE gaps ALTER COLUMN kind SET NOT NULL, ALTER COLUMN state SET NOT NULL,
                    ALTER COLUMN reason SET NOT NULL, ALTER COLUMN updated_at SET NOT NULL""")
    conn.execute("ALTER TABLE gaps DROP CONSTRAINT IF EXISTS gaps_pkey")
    conn.execute("ALTER TABLE gaps ADD PRIMARY KEY (symbol, kind, from_id, to_id)")
    conn.execute("ALTER TABLE gaps DROP CONSTRAINT IF EXISTS gaps_state_check")
    conn.execute(f"ALTER TABLE gaps ADD CONSTRAINT gaps_state_check CHECK (state IN "
                 f"({', '.join(repr(s) for s in GAP_STATES)}))")
    # what a starting worker asks for: the unfinished repairs of its symbols
    conn.execute("CREATE INDEX IF NOT EXISTS gaps_open ON gaps (symbol) WHERE state IN ('detected', 'filling')")


_MIGRATIONS = {1: _v1, 2: _v2, 3: _v3_checkpoints, 4: _v4_gaps}


# --- gaps: the durable repair queue ---------------------------------------------------------------------------

# A gap's states and their rank: a row is only ever replaced by a version of at least the same rank (and,
# within a rank, a newer updated_at). So a late "filling" cannot undo "filled", and two processes
# repairing the same range (a successor and a predecessor still draining) cannot move it backwards.
GAP_STATES: dict[str, int] = {"detected": 0, "filling": 0, "unfillable": 1, "filled": 2}
OPEN_GAP_STATES = ("detected", "filling")


def _gap_rank(ref: str) -> str:
    return f"CASE {ref}.state " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in GAP_STATES.items()) + " END"


def upsert_gaps_sql(stage: str) -> sql.Composed:
    """Move staged gap rows into `gaps`, keeping per key the most advanced version (see GAP_STATES).

    Why an upsert and not COPY: a gap is written at detection, again when its repair starts and once
    more when it ends, under the same key. DISTINCT ON collapses versions that arrive in one flush
    (ON CONFLICT DO UPDATE may not touch a row twice in one statement).
    """
    cols = COLUMNS["gaps"]
    key = KEYS["gaps"]
    return sql.SQL("""
        INSERT INTO gaps AS g ({cols})
        SELECT DISTINCT ON ({key}) {cols} FROM {stage}
        ORDER BY {key}, {rank_s} DESC, updated_at DESC
        ON CONFLICT ({key}) DO UPDATE SET filled_at = EXCLUDED.filled_at, state = EXCLUDED.state,
            reason = EXCLUDED.reason, updated_at = EXCLUDED.updated_at
        WHERE {rank_new} > {rank_old} OR ({rank_new} = {rank_old} AND EXCLUDED.updated_at >= g.updated_at)
        """).format(cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    key=sql.SQL(", ").join(map(sql.Identifier, key)), stage=sql.Identifier(stage),
                    rank_s=sql.SQL(_gap_rank(stage)), rank_new=sql.SQL(_gap_rank("EXCLUDED")),
                    rank_old=sql.SQL(_gap_rank("g")))


class OpenGap(NamedTuple):
    kind: str
    symbol: str
    from_id: int
    to_id: int
    detected_ms: int


def open_gaps(conn: psycopg.Connection, symbols: list[str]) -> list[OpenGap]:
    """The unfinished repairs (detected or filling) of `symbols`, oldest first: what a worker takes over."""
    rows = conn.execute("""SELECT kind, symbol, from_id, to_id, (extract(epoch FROM detected_at) * 1000)::bigint
                           FROM gaps WHERE state IN ('detected', 'filling') AND symbol = ANY(%s)
                           ORDER BY detected_at""", (symbols,)).fetchall()
    return [OpenGap(*r) for r in rows]


# --- partitions (plain PostgreSQL) ----------------------------------------------------------------------------


def span_start(span: Span, t: datetime) -> datetime:
    """Start (UTC) of the partition of `span` containing t; weeks start on Monday (ISO)."""
    t = t.astimezone(UTC)
    day = datetime(t.year, t.month, t.day, tzinfo=UTC)
    if span == "day":
        return day
    if span == "week":
        return day - timedelta(days=day.weekday())
    if span == "month":
        return datetime(t.year, t.month, 1, tzinfo=UTC)
    return datetime(t.year, 1, 1, tzinfo=UTC)


def span_next(span: Span, start: datetime) -> datetime:
    if span == "day":
        return start + DAY
    if span == "week":
        return start + 7 * DAY
    if span == "month":
        return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return datetime(start.year + 1, 1, 1, tzinfo=UTC)


def partition_name(table: str, start: datetime) -> str:
    return f"{table}_p{start:%Y%m%d}"


_PARTITION_RE = re.compile(r"^(?P<table>[a-z0-9_]+)_p(?P<date>\d{8})$")

# Partitions kept ready ahead of the clock: a day of trades, a span for the others (so at least the next
# partition always exists). The writer also creates partitions on demand, so this only keeps COPY on its
# fast path; 2 days covers a maintenance run being skipped or the clock crossing midnight mid-flush.
DEFAULT_AHEAD = timedelta(days=2)


def ensure_partitions_for(conn: psycopg.Connection, table: str, lo: datetime, hi: datetime) -> list[str]:
    """Create every partition of `table` covering [lo, hi] (inclusive); returns the names created."""
    span = SPANS[table]
    start = span_start(span, lo)
    created: list[str] = []
    existing = _partitions(conn, table)
    while start <= hi:
        end = span_next(span, start)
        name = partition_name(table, start)
        if name not in existing:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(name), sql.Identifier(table), sql.Literal(start), sql.Literal(end)))
            created.append(name)
        start = end
    return created


def ensure_partitions(conn: psycopg.Connection, now: datetime, ahead: timedelta = DEFAULT_AHEAD,
                      tables: tuple[str, ...] = TIME_TABLES) -> list[str]:
    """Make sure every time-partitioned table has partitions from `now` to `now + ahead`.

    No DEFAULT partition, on purpose: rows landing in it would later block creating the partition that
    should hold them (PostgreSQL refuses to attach over rows sitting in the default). Instead partitions are
    created ahead here and, for backfills or a stalled maintenance, on demand by the writer when COPY
    reports "no partition of relation ... found for row".
    """
    created: list[str] = []
    for t in tables:
        created += ensure_partitions_for(conn, t, now, now + ahead)
    return created


def _partitions(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute("""SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                           WHERE i.inhparent = to_regclass(%s)""", (table,)).fetchall()
    return {r[0] for r in rows}


def drop_expired(conn: psycopg.Connection, now: datetime,
                 retention: Mapping[str, timedelta | None] | None = None,
                 tables: tuple[str, ...] = TIME_TABLES) -> list[str]:
    """Drop partitions lying entirely before now - retention; returns their names (oldest first per table).

    A partition that still holds one row younger than the cut-off is kept whole: retention is honoured to
    within one partition span, never by deleting rows one by one. `tables` lets the writer do one table per
    transaction, so the ACCESS EXCLUSIVE locks a DROP takes are held only briefly between its flushes.
    """
    retention = DEFAULT_RETENTION if retention is None else {**DEFAULT_RETENTION, **retention}
    dropped: list[str] = []
    for t in tables:
        keep = retention.get(t)
        if keep is None:
            continue
        cutoff = now - keep
        span = SPANS[t]
        for name in sorted(_partitions(conn, t)):
            m = _PARTITION_RE.match(name)
            if not m or m["table"] != t:
                continue  # not ours: leave it alone
            start = datetime.strptime(m["date"], "%Y%m%d").replace(tzinfo=UTC)
            if span_next(span, start) <= cutoff:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                dropped.append(name)
    return dropped


# --- candle rollups (plain PostgreSQL) --------------------------------------------------------------------------

_BIN_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"  # a UTC midnight: 4h and 1d buckets align to 00:00 UTC


def _rollup_sql(target: str, source: str, width: timedelta) -> sql.Composed:
    w = sql.Literal(width)
    return sql.SQL("""
        INSERT INTO {target} AS t (time, symbol, close_time, open, high, low, close, volume, quote_volume,
                                   trades, taker_buy_volume, taker_buy_quote_volume)
        SELECT b, symbol, b + {w} - INTERVAL '1 millisecond',
               (array_agg(open ORDER BY time))[1], max(high), min(low), (array_agg(close ORDER BY time DESC))[1],
               sum(volume), sum(quote_volume), sum(trades), sum(taker_buy_volume), sum(taker_buy_quote_volume)
        FROM (SELECT date_bin({w}, time, {origin}) AS b, * FROM {source}
              WHERE time >= date_bin({w}, %(since)s, {origin})
                AND time < date_bin({w}, %(until)s - INTERVAL '1 microsecond', {origin}) + {w}) s
        GROUP BY b, symbol
        ON CONFLICT (symbol, time) DO UPDATE SET
            close_time = EXCLUDED.close_time, open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
            close = EXCLUDED.close, volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume,
            trades = EXCLUDED.trades, taker_buy_volume = EXCLUDED.taker_buy_volume,
            taker_buy_quote_volume = EXCLUDED.taker_buy_quote_volume
        WHERE (t.open, t.high, t.low, t.close, t.volume, t.quote_volume, t.trades, t.taker_buy_volume,
               t.taker_buy_quote_volume)
              IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
               EXCLUDED.quote_volume, EXCLUDED.trades, EXCLUDED.taker_buy_volume, EXCLUDED.taker_buy_quote_volume)
        """).format(target=sql.Identifier(target), source=sql.Identifier(source), w=w,
                    origin=sql.SQL(_BIN_ORIGIN))


def rollup_candles(conn: psycopg.Connection, since: datetime, until: datetime) -> dict[str, int]:
    """Recompute every 5m/30m/4h/1d candle whose bucket overlaps [since, until) from candles_1m.

    Same values as Binance's own klines of that interval: open of the first 1m candle, close of the last,
    max high, min low, summed volumes and trade counts, close_time = bucket end - 1 ms; buckets in UTC.
    Idempotent (upsert, rows rewritten only when they changed); the still-open bucket is recomputed on the
    next call. In TimescaleDB mode the continuous aggregates do this and the call returns {}.
    Returns rows inserted or changed per table.
    """
    if schema_mode(conn) == "timescaledb":
        return {}
    changed: dict[str, int] = {}
    with conn.transaction():
        for target, width in DERIVED_CANDLES.items():
            lo = span_start("day", since) - width  # generous: partition bounds only
            ensure_partitions_for(conn, target, lo, until)
            cur = conn.execute(_rollup_sql(target, _ROLLUP_SOURCE[target], width), {"since": since, "until": until})
            changed[target] = cur.rowcount
    return changed


# --- candle views (TimescaleDB) -----------------------------------------------------------------------------


def refresh_window(bucket_ms: int, since_ms: int, until_ms: int, complete_ms: int) -> tuple[int, int] | None:
    """The refresh window (ms, aligned to UTC buckets) for 1m candles landed over [since, until).

    refresh_continuous_aggregate refreshes only buckets lying wholly inside its window, so the window is
    widened to bucket bounds; it stops at the last bucket that is complete by `complete_ms` (end of the
    newest 1m candle stored) because materialising a still-open bucket would hide its later candles from
    real-time aggregation until the next refresh. None when no complete bucket is affected.
    """
    start = since_ms // bucket_ms * bucket_ms
    end = min(-(-until_ms // bucket_ms) * bucket_ms, complete_ms // bucket_ms * bucket_ms)
    return (start, end) if end > start else None


def refresh_candle_views(conn: psycopg.Connection, since_ms: int, until_ms: int, complete_ms: int) -> int:
    """TimescaleDB: re-materialise every complete 5m..1d bucket containing 1m candles of [since, until).

    The refresh policies only look back 1 h / 6 h / 2 d / 7 d, so a candle stored later than that (REST
    repair, spool replay) would never reach the views; this refreshes exactly its buckets. Per the
    TimescaleDB 2.x docs, CALL refresh_continuous_aggregate(continuous_aggregate, window_start,
    window_end) cannot run inside a transaction block: `conn` must be in autocommit mode
    (https://docs.tigerdata.com/api/latest/continuous-aggregates/refresh_continuous_aggregate/).
    Returns how many views were refreshed.
    """
    if not conn.autocommit:
        raise ValueError("refresh_continuous_aggregate needs an autocommit connection")
    refreshed = 0
    for view, width in DERIVED_CANDLES.items():
        window = refresh_window(int(width.total_seconds() * 1000), since_ms, until_ms, complete_ms)
        if window is None:
            continue
        lo, hi = (datetime.fromtimestamp(ms / 1000, UTC) for ms in window)
        conn.execute(sql.SQL("CALL refresh_continuous_aggregate({}, {}, {})").format(
            sql.Literal(f"{view}_agg"), sql.Literal(lo), sql.Literal(hi)))
        refreshed += 1
    return refreshed


# --- tiers ---------------------------------------------------------------------------------------------------


class TierRow(NamedTuple):
    tier: int
    threshold_usd: float
    p90_usd: float | None
    score: float | None


def store_tiers(conn: psycopg.Connection, assignments: Mapping[str, object], computed_at: datetime) -> int:
    """Append one tier computation (symbol -> TierRow or any object with the same attributes).

    History is kept (one row per symbol per computation); re-storing the same computed_at is a no-op.
    """
    rows = []
    for symbol, a in assignments.items():
        if not valid_symbol(symbol):
            raise ValueError(f"invalid symbol: {symbol!r}")
        if isinstance(a, tuple):
            tier, thr, p90, score = a
        else:
            tier, thr = a.tier, a.threshold_usd  # type: ignore[attr-defined]
            p90, score = getattr(a, "p90_usd", None), getattr(a, "score", None)
        rows.append((computed_at, symbol, int(tier), float(thr), p90, score))
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("""INSERT INTO symbol_tiers (computed_at, symbol, tier, threshold_usd, p90_usd, score)
                           VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""", rows)
    return len(rows)


def load_latest_tiers(conn: psycopg.Connection) -> dict[str, TierRow]:
    """Each symbol's most recent tier, so a restart resumes where the last computation left off."""
    rows = conn.execute("""SELECT DISTINCT ON (symbol) symbol, tier, threshold_usd, p90_usd, score
                           FROM symbol_tiers ORDER BY symbol, computed_at DESC""").fetchall()
    return {r[0]: TierRow(*r[1:]) for r in rows}


@dataclass(frozen=True)
class TableInfo:
    """What check.py and the writer need to know about a table, whichever the back-end."""

    name: str
    key: tuple[str, ...]
    retention: timedelta | None
    span: timedelta


def table_info(retention: Mapping[str, timedelta | None] | None = None) -> dict[str, TableInfo]:
    retention = DEFAULT_RETENTION if retention is None else {**DEFAULT_RETENTION, **retention}
    return {t: TableInfo(t, KEYS[t], retention.get(t), SPAN_LENGTH[SPANS[t]]) for t in TIME_TABLES}


# --- TimescaleDB: what the database reports about its own jobs and layout -----------------------------------

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


def _has_relation(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


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
    if not _has_relation(conn, "timescaledb_information.job_stats"):
        return []
    query = job_failures_sql(with_errors=_has_relation(conn, "timescaledb_information.job_errors"))
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
    if not _has_relation(conn, "timescaledb_information.dimensions"):
        return {}
    rows = conn.execute(layout_sql()).fetchall()
    out: dict[str, TimescaleLayout] = {}
    for relation, hypertable, chunk, every, drop_after in rows:
        table = relation.removesuffix("_agg")
        out[table] = TimescaleLayout(hypertable, chunk, every, drop_after)
    return out
