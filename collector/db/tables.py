"""What each stored table is: its columns' SQL types, key, partition span and default retention.

The facts every other db module builds on (DDL, partitions, retention, roll-ups, the integrity check),
kept in one place so the back-ends cannot disagree about a table. Column order is the COPY order,
collector.pipeline.encode.COLUMNS; this module adds what only the database needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import psycopg
from psycopg import sql

from collector.config import RetentionConfig
from collector.pipeline.encode import CANDLE_TABLES, COLUMNS

DAY = timedelta(days=1)

# Default retention per table (None = forever): the configuration's defaults (collector.config.RetentionConfig,
# the one place they are written), as durations. Trades are the bulk (hundreds of millions of rows a week in
# keep_all), so they go first; derived candles are tiny and worth keeping longer the coarser they are.
DEFAULT_RETENTION: dict[str, timedelta | None] = RetentionConfig().periods()

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

# Primary keys: (venue, symbol, time, ...) serves "one symbol of one venue over a time range" and "latest row
# of a symbol" (backward index scan) directly; the venue leads because a symbol name means nothing without
# it (Binance's and Bybit's BTCUSDT are two contracts); the trailing columns make each event unique so a
# replay is a no-op.
KEYS: dict[str, tuple[str, ...]] = {
    "trades": ("venue", "symbol", "time", "trade_id"),
    "funding": ("venue", "symbol", "time"),
    "liquidations": ("venue", "symbol", "time", "side", "price", "quantity"),
    "open_interest": ("venue", "symbol", "time"),
    **{t: ("venue", "symbol", "time") for t in CANDLE_TABLES},
    "gaps": ("venue", "symbol", "kind", "from_id", "to_id"),
}


COLUMN_TYPES: dict[str, str] = {
    "time": "TIMESTAMPTZ NOT NULL",
    "venue": "TEXT NOT NULL",
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
    # a candle's trade count and taker-buy volumes: NULL where the venue publishes none (OKX, Bybit klines)
    "trades": "BIGINT",
    "taker_buy_volume": "NUMERIC",
    "taker_buy_quote_volume": "NUMERIC",
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


def table_ddl(table: str, partitioned: bool) -> sql.Composed:
    """CREATE TABLE IF NOT EXISTS for `table`: COLUMNS in COPY order, COLUMN_TYPES, KEYS as primary key.

    `partitioned` makes it a range-partitioned parent by time (plain PostgreSQL); TimescaleDB turns the
    unpartitioned table into a hypertable instead.
    """
    cols = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(COLUMN_TYPES[c])) for c in COLUMNS[table]]
    cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, KEYS[table]))))
    tail = sql.SQL(" PARTITION BY RANGE (time)") if partitioned else sql.SQL("")
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}){}").format(
        sql.Identifier(table), sql.SQL(", ").join(cols), tail)


def with_default_retention(retention: Mapping[str, timedelta | None] | None) -> dict[str, timedelta | None]:
    """`retention` over DEFAULT_RETENTION: a table the caller does not name keeps its default."""
    return dict(DEFAULT_RETENTION) if retention is None else {**DEFAULT_RETENTION, **retention}


def relation_exists(conn: psycopg.Connection, name: str) -> bool:
    """True when `name` (a table, view or schema-qualified relation) exists; a plain query, so asking about
    one that does not (no schema yet, no TimescaleDB) never aborts the caller's transaction."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def interval_sql(d: timedelta) -> str:
    """A duration as the text of a PostgreSQL interval literal, in whole seconds."""
    return f"{int(d.total_seconds())} seconds"


@dataclass(frozen=True)
class TableInfo:
    """What the integrity check (collector.db.check) needs to know about a table, whichever the back-end."""

    name: str
    key: tuple[str, ...]
    retention: timedelta | None
    span: timedelta


def table_info(retention: Mapping[str, timedelta | None] | None = None) -> dict[str, TableInfo]:
    """Key, effective retention and partition span of every time-partitioned table."""
    retention = with_default_retention(retention)
    return {t: TableInfo(t, KEYS[t], retention.get(t), SPAN_LENGTH[SPANS[t]]) for t in TIME_TABLES}


def add_venue_column(conn: psycopg.Connection, table: str, venue: str = "binance") -> None:
    """Schema version 6: `table` gains `venue TEXT NOT NULL`, its existing rows holding `venue`.

    The DEFAULT only fills the rows already there (since PostgreSQL 11 a constant default is recorded in
    the catalog, not written into every row, so this is quick on a large table; on a partitioned parent it
    propagates to every partition); it is dropped at once so that a row arriving without a venue is refused
    instead of being filed under Binance.
    """
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS venue TEXT NOT NULL DEFAULT {}").format(
        sql.Identifier(table), sql.Literal(venue)))
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN venue DROP DEFAULT").format(sql.Identifier(table)))


def primary_key(conn: psycopg.Connection, table: str) -> tuple[str, tuple[str, ...]] | None:
    """(constraint name, columns in key order) of `table`'s primary key, from pg_constraint; None if none."""
    row = conn.execute("""SELECT c.conname, array_agg(a.attname::text ORDER BY k.i)
                          FROM pg_constraint c
                          CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(attnum, i)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                          WHERE c.conrelid = to_regclass(%s) AND c.contype = 'p'
                          GROUP BY c.conname""", (table,)).fetchone()
    return None if row is None else (row[0], tuple(row[1]))


def set_primary_key(conn: psycopg.Connection, table: str, key: tuple[str, ...]) -> bool:
    """Make `key` the primary key of `table` (drop the old one, add the new); False when it already is.

    On a partitioned parent both statements recurse: PostgreSQL drops the partitions' inherited key indexes
    and builds one per partition for the new key (which must contain the partition column, time).
    """
    current = primary_key(conn, table)
    if current is not None and current[1] == key:
        return False
    if current is not None:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(table), sql.Identifier(current[0])))
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, key))))
    return True


# Candle columns only Binance publishes (nullable from schema version 6; collector.db.schema._v6_venues).
VENUE_OPTIONAL_CANDLE_COLUMNS = ("trades", "taker_buy_volume", "taker_buy_quote_volume")


def candle_counts_nullable(conn: psycopg.Connection, table: str) -> None:
    """Let a candle table hold OKX's and Bybit's klines, which carry no trade count or taker-buy volumes.
    Idempotent (DROP NOT NULL on a nullable column does nothing); on a partitioned table it reaches every
    partition."""
    conn.execute(sql.SQL("ALTER TABLE {} {}").format(sql.Identifier(table), sql.SQL(", ").join(
        sql.SQL("ALTER COLUMN {} DROP NOT NULL").format(sql.Identifier(c)) for c in VENUE_OPTIONAL_CANDLE_COLUMNS)))
