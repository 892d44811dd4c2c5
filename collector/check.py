"""`python -m collector check`: is the stored data what the collector promises?

Read-only queries against the database, each producing a Finding; the Report is ok only if every finding
is. Meant for a human after a deploy or an incident, and for CI after a simulated run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from collector import storage
from collector.encode import valid_symbol

# Funding (mark price) events arrive every second or three per symbol: a symbol silent for an hour is
# not being collected.
FUNDING_WINDOW = timedelta(hours=1)
# Trades summary window, same reasoning: long enough to see every save_reason, short enough to be cheap.
TRADES_WINDOW = timedelta(hours=1)
# 1m candles checked over the last hour; the last 2 minutes are skipped because a kline closes at :59.999
# and reaches the database a few seconds later (worker batching + writer flush).
CANDLE_WINDOW = timedelta(hours=1)
CANDLE_GRACE = timedelta(minutes=2)
# Duplicate scan over the last day for tables without a unique key (a full scan of trades would be huge).
DUPLICATE_WINDOW = timedelta(days=1)
# Retention is enforced by dropping whole partitions/chunks on an hourly job: rows may legitimately be
# up to one partition span plus this much older than the policy.
RETENTION_SLACK = timedelta(hours=2)
# Symbols listed per finding before "... and N more".
MAX_LISTED = 20


@dataclass
class Finding:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass
class Report:
    now: datetime
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def get(self, name: str) -> Finding:
        return next(f for f in self.findings if f.name == name)

    def format(self) -> str:
        lines = [f"check at {self.now:%Y-%m-%d %H:%M:%S} UTC: {'OK' if self.ok else 'PROBLEMS FOUND'}"]
        for f in self.findings:
            lines.append(f"[{'ok' if f.ok else 'FAIL'}] {f.name}: {f.summary}")
            lines.extend(f"    {d}" for d in f.details)
        return "\n".join(lines)


def _listed(items: list[str]) -> str:
    head = ", ".join(items[:MAX_LISTED])
    return head + (f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _exists(conn: psycopg.Connection, rel: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (rel,)).fetchone()
    return bool(row and row[0])


def check_funding(conn: psycopg.Connection, universe: list[str] | None, now: datetime) -> Finding:
    seen = {r[0] for r in conn.execute(
        "SELECT DISTINCT symbol FROM funding WHERE time > %s AND time <= %s", (now - FUNDING_WINDOW, now))}
    if universe is None:
        universe = sorted({r[0] for r in conn.execute(
            "SELECT DISTINCT symbol FROM funding WHERE time > %s AND time <= %s", (now - timedelta(days=1), now))})
    missing = sorted(set(universe) - seen)
    summary = f"{len(set(universe) & seen)}/{len(universe)} symbols with funding in the last hour"
    return Finding("funding", not missing, summary, [f"missing: {_listed(missing)}"] if missing else [])


def check_trades(conn: psycopg.Connection, now: datetime) -> Finding:
    rows = conn.execute("""SELECT save_reason, count(*), avg(usd_value) FROM trades
                           WHERE time > %s AND time <= %s GROUP BY save_reason ORDER BY count(*) DESC""",
                        (now - TRADES_WINDOW, now)).fetchall()
    total = sum(r[1] for r in rows)
    details = [f"{reason:<15} {n:>10} rows  avg ${avg:,.2f}" for reason, n, avg in rows]
    return Finding("trades", True, f"{total} trades kept in the last hour", details)


def check_candles(conn: psycopg.Connection, universe: list[str] | None, now: datetime) -> Finding:
    end = now.replace(second=0, microsecond=0) - CANDLE_GRACE + timedelta(minutes=1)
    start = end - CANDLE_WINDOW
    expected = int(CANDLE_WINDOW / timedelta(minutes=1))
    counts = dict(conn.execute("""SELECT symbol, count(DISTINCT time) FROM candles_1m
                                  WHERE time >= %s AND time < %s GROUP BY symbol""", (start, end)).fetchall())
    symbols = sorted(universe if universe is not None else counts)
    missing = {s: expected - counts.get(s, 0) for s in symbols if counts.get(s, 0) < expected}
    details = [f"{s}: {n} of {expected} missing" for s, n in sorted(missing.items(), key=lambda kv: -kv[1])]
    if len(details) > MAX_LISTED:
        details = details[:MAX_LISTED] + [f"... and {len(details) - MAX_LISTED} more"]
    summary = (f"{len(symbols) - len(missing)}/{len(symbols)} symbols complete, "
               f"{start:%H:%M}..{end:%H:%M} UTC")
    return Finding("candles_1m", not missing, summary, details)


def _has_unique_key(conn: psycopg.Connection, table: str, key: tuple[str, ...]) -> bool:
    """True when a unique index on `table` covers only columns of `key` (so duplicates cannot exist)."""
    rows = conn.execute("""
        SELECT array_agg(a.attname::text) FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = to_regclass(%s) AND i.indisunique GROUP BY i.indexrelid""", (table,)).fetchall()
    return any(set(cols) <= set(key) for (cols,) in rows)


def check_duplicates(conn: psycopg.Connection, now: datetime) -> Finding:
    details = []
    checked = []
    for table, key in storage.KEYS.items():
        if not _exists(conn, table) or _has_unique_key(conn, table, key):
            continue  # guaranteed by the key (or absent)
        checked.append(table)
        cols = sql.SQL(", ").join(map(sql.Identifier, key))
        where = sql.SQL("WHERE time > {}").format(sql.Literal(now - DUPLICATE_WINDOW)) if "time" in key else sql.SQL("")
        q = sql.SQL("SELECT count(*), coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {} {} GROUP BY {} "
                    "HAVING count(*) > 1) d").format(sql.Identifier(table), where, cols)
        groups, extra = conn.execute(q).fetchone()  # type: ignore[misc]
        if groups:
            details.append(f"{table}: {groups} keys duplicated, {extra} extra rows")
    summary = ("all tables keyed" if not checked else f"checked unkeyed: {', '.join(checked)}")
    return Finding("duplicates", not details, summary, details)


def check_retention(conn: psycopg.Connection, now: datetime,
                    retention: Mapping[str, timedelta | None] | None) -> Finding:
    details = []
    for t, info in storage.table_info(retention).items():
        if info.retention is None or not _exists(conn, t):
            continue
        oldest = conn.execute(sql.SQL("SELECT min(time) FROM {}").format(sql.Identifier(t))).fetchone()[0]  # type: ignore[index]
        limit = now - info.retention - info.span - RETENTION_SLACK
        if oldest is not None and oldest < limit:
            details.append(f"{t}: oldest row {oldest:%Y-%m-%d %H:%M} is older than retention {info.retention.days} d "
                           f"allows (limit {limit:%Y-%m-%d %H:%M})")
    return Finding("retention", not details, "every table within its retention" if not details
                   else f"{len(details)} tables hold expired rows", details)


def run_check(dsn: str, universe: list[str] | None = None, now: datetime | float | None = None,
              retention: Mapping[str, timedelta | None] | None = None) -> Report:
    """Run every check against `dsn`. `universe` = the symbols that should be collected (None: infer).

    `now` is a datetime or Unix seconds (default: the current time).
    """
    if now is None:
        now = datetime.now(UTC)
    elif isinstance(now, int | float):
        now = datetime.fromtimestamp(now, UTC)
    if universe is not None:
        bad = [s for s in universe if not valid_symbol(s)]
        if bad:
            raise ValueError(f"invalid symbols: {bad}")
    report = Report(now)
    # read-only session: a check must never be able to change what it inspects
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on") as conn:
        report.findings.append(check_funding(conn, universe, now))
        report.findings.append(check_trades(conn, now))
        report.findings.append(check_candles(conn, universe, now))
        report.findings.append(check_duplicates(conn, now))
        report.findings.append(check_retention(conn, now, retention))
    return report
