"""Plain PostgreSQL: the native range partitions by time, created ahead of the clock and dropped when expired.

Why partitions and not DELETE: retention drops a whole partition (a catalog change, no row-by-row work and
no bloat), and COPY only ever writes the few newest partitions. The writer's maintenance calls
ensure_partitions and drop_expired one table per transaction, and ensure_partitions_for on demand when
COPY reports a row with no partition. On TimescaleDB the database does the same with chunks and a
retention job (collector.db.timescale).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from collector.db.tables import DAY, SPANS, TIME_TABLES, Span, with_default_retention


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
    """Start of the partition after the one starting at `start` (its exclusive upper bound)."""
    if span == "day":
        return start + DAY
    if span == "week":
        return start + 7 * DAY
    if span == "month":
        return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return datetime(start.year + 1, 1, 1, tzinfo=UTC)


def partition_name(table: str, start: datetime) -> str:
    """trades_p20260101: the parent's name and the start date, which drop_expired parses back."""
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
    retention = with_default_retention(retention)
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

