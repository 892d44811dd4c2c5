"""The SQL schema and its versions: what ensure_schema creates, and the migrations between versions.

One schema, two back-ends (chosen once per database by collector.db.mode):
- TimescaleDB: hypertables, retention and compression policies, candles_5m..1d as continuous aggregates
  over candles_1m (collector.db.timescale). The database itself runs maintenance as background jobs.
- Plain PostgreSQL: native range partitions by time (collector.db.partitions), created ahead (and on demand
  by the writer) and dropped whole when expired; candles_5m..1d are real tables filled by
  collector.db.rollups.

Every table's key makes a replayed batch harmless: the writer's recovery path inserts with
ON CONFLICT DO NOTHING, so a batch whose commit outcome was unknown can be loaded again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import psycopg

from collector.db import rollups, timescale
from collector.db.gaps_repo import GAP_STATES
from collector.db.mode import Backend, Mode, decide_mode, read_mode_facts
from collector.db.partitions import ensure_partitions
from collector.db.tables import (
    DERIVED_CANDLES,
    KEYS,
    TIME_TABLES,
    add_venue_column,
    candle_counts_nullable,
    interval_sql,
    set_primary_key,
    table_ddl,
    with_default_retention,
)
from collector.pipeline.encode import CANDLE_TABLES

log = logging.getLogger(__name__)

# Bump when the DDL changes and add a step to _MIGRATIONS; a database newer than this refuses to start.
SCHEMA_VERSION = 8

# Arbitrary constant key for pg_advisory_xact_lock: two processes running ensure_schema at once serialise.
_SCHEMA_LOCK_KEY = 0x434F4C4C  # "COLL"


class SchemaError(RuntimeError):
    """The database cannot be brought to (or is beyond) the schema this code knows."""


# --- DDL ----------------------------------------------------------------------------------------------------------

# Created (IF NOT EXISTS) on every start, before the migrations: a new database gets the current layout
# here; an existing one keeps the layout it has and the migrations bring it up to date (see _v5_tiers,
# _v6_venues, which also creates its index: an index on venue cannot be declared before the column exists).
_COMMON_DDL = [
    """CREATE TABLE IF NOT EXISTS symbol_tiers (
        computed_at TIMESTAMPTZ NOT NULL,
        venue TEXT NOT NULL,
        symbol TEXT NOT NULL,
        tier SMALLINT NOT NULL,
        threshold_usd DOUBLE PRECISION NOT NULL,
        size_quantile_usd DOUBLE PRECISION,
        score DOUBLE PRECISION,
        PRIMARY KEY (venue, computed_at, symbol))""",
]


def _plain_indexes() -> list[str]:
    # BRIN on time: "every symbol over the last hour" (check, dashboards) cannot use the (symbol, time, ...)
    # keys; a BRIN on append-ordered time costs almost nothing to maintain (a few pages per partition),
    # unlike a btree on the 50k rows/s trades stream. No index on save_reason: 5-ish values, always
    # queried together with a time range, which the BRIN narrows first.
    return [f"CREATE INDEX IF NOT EXISTS {t}_time_brin ON {t} USING brin (time)" for t in TIME_TABLES]


def _create_plain(conn: psycopg.Connection, now: datetime) -> None:
    for t in TIME_TABLES:
        conn.execute(table_ddl(t, partitioned=True))
    conn.execute(table_ddl("gaps", partitioned=False))
    for stmt in _plain_indexes():
        conn.execute(stmt)
    ensure_partitions(conn, now)


# --- versioning -------------------------------------------------------------------------------------------------


def ensure_schema(conn: psycopg.Connection, mode: Mode = "auto",
                  retention: Mapping[str, timedelta | None] | None = None,
                  now: datetime | None = None) -> Backend:
    """Create or upgrade the schema; idempotent. Returns the back-end in use.

    The version and back-end are recorded in `schema_version`; a database written by newer code raises
    SchemaError instead of being written with an outdated layout. The back-end comes from decide_mode (facts
    read first, CREATE EXTENSION only once it is known to work); a refused mode raises SchemaError whose
    message is one line naming database.mode and the fix. Once chosen, the stored mode wins.
    """
    retention = with_default_retention(retention)
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
        if decision.error is not None or decision.mode is None:  # a refusal: error says why and the fix
            raise SchemaError(decision.error or f"database.mode: no back-end decided for {mode}")
        if decision.warning is not None:  # only on the first run: later runs have a stored mode
            log.warning("%s", decision.warning)
        if decision.create_extension:  # only now: it is known to be available, preloaded and new enough
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        chosen: Backend = decision.mode
        for stmt in _COMMON_DDL:
            conn.execute(stmt)
        current = 0 if row is None else row[0]
        for v in range(current + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS[v](conn, chosen, retention, now)
            conn.execute("INSERT INTO schema_version (version, mode) VALUES (%s, %s)", (v, chosen))
        if current == SCHEMA_VERSION:
            if chosen == "timescaledb":
                timescale.apply_retention(conn, retention)
            else:
                ensure_partitions(conn, now)
    if chosen == "timescaledb" and 0 < current < 6:
        _refresh_rebuilt_aggregates(conn)
    return chosen


def _refresh_rebuilt_aggregates(conn: psycopg.Connection) -> None:
    """After version 6 rebuilt the candle aggregates on an existing TimescaleDB database: materialise them
    whole (only possible outside a transaction), or say how to when the caller's connection is not autocommit."""
    row = conn.execute("""SELECT (extract(epoch FROM min(time)) * 1000)::bigint,
                                 (extract(epoch FROM max(time)) * 1000)::bigint + 60000 FROM candles_1m""").fetchone()
    if row is None or row[0] is None:
        return
    if conn.autocommit:
        rollups.refresh_candle_views(conn, row[0], row[1], row[1])
    else:
        log.warning("schema version 6 rebuilt candles_5m..1d grouped by venue: run CALL "
                    "refresh_continuous_aggregate('candles_<tf>_agg', <oldest 1m candle>, now()) for each "
                    "timeframe (outside a transaction) to materialise the history")


def _v1(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None], now: datetime) -> None:
    if mode == "timescaledb":
        timescale.create_timescale(conn, retention)
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
            f"WHERE time <= now() - INTERVAL '{interval_sql(TIMEFRAMES[table] + grace)}'")


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


def _v5_tiers(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None],
              now: datetime) -> None:
    """symbol_tiers.p90_usd becomes size_quantile_usd: it holds filters.trades.threshold_quantile (P99 by
    default), not the P90 its old name promised. A rename: the rows, the key and the index stay as they are.

    Conditional because _COMMON_DDL runs first: a database created by this code already has the new name.
    """
    old = conn.execute("""SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                          AND table_name = 'symbol_tiers' AND column_name = 'p90_usd'""").fetchone()
    if old is not None:
        conn.execute("ALTER TABLE symbol_tiers RENAME COLUMN p90_usd TO size_quantile_usd")


# The tables every venue's instruments are recorded in (collector.db.instruments_repo): a symbol is the
# venue's own name; `normalized` (BTC-USDT-PERP, collector.feed.venues.common.normalized) joins venues.
INSTRUMENTS_DDL = """CREATE TABLE IF NOT EXISTS instruments (
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    normalized TEXT NOT NULL,
    base TEXT NOT NULL,
    contract_size NUMERIC NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (venue, symbol))"""


def _v6_venues(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None],
               now: datetime) -> None:
    """Every table gains `venue` (OKX and Bybit beside Binance), first in every key and index; the rows
    already stored were all collected from Binance and become 'binance'. Plus the instruments table, and
    candles' trade count and taker-buy volumes become nullable (OKX and Bybit publish neither).

    Idempotent like _v4_gaps: a database created by this code's _v1 already has the column and the keys
    (set_primary_key leaves a key that is already right alone), one created by version 1..5 code gets them
    here. The closed views are recreated because `SELECT *` fixed their column list when they were made.
    """
    for table in TIMEFRAMES:
        conn.execute(f"DROP VIEW IF EXISTS {closed_view(table)}")
    if mode == "timescaledb":
        archives = timescale.migrate_to_venues(conn, retention)
        for a in archives:
            log.warning("schema version 6: candles older than the oldest 1m candle were kept in %s "
                        "(the rebuilt aggregate cannot recompute them)", a)
    else:
        for t in TIME_TABLES:
            add_venue_column(conn, t)
            set_primary_key(conn, t, KEYS[t])
        for t in CANDLE_TABLES:
            candle_counts_nullable(conn, t)
    add_venue_column(conn, "gaps")
    set_primary_key(conn, "gaps", KEYS["gaps"])
    conn.execute("DROP INDEX IF EXISTS gaps_open")
    conn.execute("CREATE INDEX gaps_open ON gaps (venue, symbol) WHERE state IN ('detected', 'filling')")
    add_venue_column(conn, "symbol_tiers")
    set_primary_key(conn, "symbol_tiers", ("venue", "computed_at", "symbol"))
    # latest tiers per symbol on restart: DISTINCT ON (venue, symbol) ORDER BY venue, symbol, computed_at DESC
    conn.execute("DROP INDEX IF EXISTS symbol_tiers_symbol_latest")
    conn.execute("CREATE INDEX IF NOT EXISTS symbol_tiers_latest ON symbol_tiers (venue, symbol, computed_at DESC)")
    add_venue_column(conn, "checkpoints")
    set_primary_key(conn, "checkpoints", ("venue", "symbol"))
    conn.execute(INSTRUMENTS_DDL)
    for table in TIMEFRAMES:
        conn.execute(_closed_view_ddl(table))


def _v7_checkpoint_funding_rate(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None],
                                now: datetime) -> None:
    """checkpoints keep the last funding rate a worker was sent and the settlement it is for (venues that send
    the rate apart from the mark price, OKX: collector.pipeline.funding_rates), so a full restart's first
    funding rows carry it instead of NULL until the venue's next push. Existing rows get NULL: no rate known.

    The rate is the text the venue sent, as the shared-memory record holds it (TEXT, not NUMERIC: it goes back
    into rows exactly as it came, collector.pipeline.encode parses it there). Idempotent (IF NOT EXISTS)."""
    conn.execute("ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS funding_rate TEXT, "
                 "ADD COLUMN IF NOT EXISTS next_funding_ms BIGINT")


def _v8_checkpoint_live_ms(conn: psycopg.Connection, mode: str, retention: Mapping[str, timedelta | None],
                           now: datetime) -> None:
    """checkpoints keep the exchange time up to which a symbol's streams were received (live_ms), so that the
    first run after a full restart records the liquidations it could not receive meanwhile as a `gaps` row
    (kind liquidations, unfillable: no venue serves their history; collector.pipeline.liquidation_holes).
    Existing rows get NULL: not known, no hole recorded. Idempotent (IF NOT EXISTS)."""
    conn.execute("ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS live_ms BIGINT")


_MIGRATIONS = {1: _v1, 2: _v2, 3: _v3_checkpoints, 4: _v4_gaps, 5: _v5_tiers, 6: _v6_venues,
               7: _v7_checkpoint_funding_rate, 8: _v8_checkpoint_live_ms}
