"""`python -m collector check`: is the stored data what the collector promises?

Read-only queries against the database, each producing a Finding; the Report is ok only if every finding
is. Meant for a human after a deploy, a demo or an incident, and for CI after a simulated run.

Every check judges the span this database has actually collected, not a fixed clock window: a two-minute
demo stopped an hour ago is judged on its two minutes. The span starts at each symbol's first row (or
`since`) and ends at the newest row the collection wrote; DEFAULT_LOOKBACK bounds how far back a check
reads unless `since` says otherwise, so it stays cheap on a database holding months.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from collector.db import tables, timescale
from collector.db.mode import schema_mode
from collector.db.tables import relation_exists
from collector.symbols import valid_symbol

MINUTE = timedelta(minutes=1)
# The venue the completeness checks judge unless told otherwise: the collector's first and default venue
# (collection.exchanges: [binance]); each other venue is judged by its own run (run_check(venue=...)).
BINANCE = "binance"
# How far back the checks read when no `since` is given: a day of 1m candles is ~720k rows for 500 symbols
# (a second or two to count), and a day is what an operator looks at after an incident.
DEFAULT_LOOKBACK = timedelta(days=1)
# Funding (mark price) events arrive every second or three per symbol and one row per minute is stored:
# a symbol without a row in the collection's last hour was not being collected.
FUNDING_WINDOW = timedelta(hours=1)
# Trades summary window before the collection's end: long enough to see every save_reason.
TRADES_WINDOW = timedelta(hours=1)
# A 1m kline closes at :59.999 and is committed a second or two later (worker batch + writer flush); the
# newest closed minute is required only once it closed this long ago, so a check run while the collector
# writes does not count a minute still in flight. 30 s also covers one writer retry after a dropped
# connection.
DELIVERY_GRACE = timedelta(seconds=30)
# Duplicate scan over the lookback for tables without a unique key (a full scan of trades would be huge).
DUPLICATE_WINDOW = timedelta(days=1)
# Retention runs as a job (the writer's maintenance on plain PostgreSQL, a TimescaleDB background job):
# a run takes seconds to minutes and the scheduler may start it late under load. On top of the partition
# or chunk span and the job's interval, which are read from the backend, rows may be this much older.
RETENTION_SLACK = timedelta(hours=1)
# Symbols listed per finding before "... and N more".
MAX_LISTED = 20


class NoCollectorSchema(RuntimeError):
    """The database checked has no collector tables (schema_version is missing)."""


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


def _capped(details: list[str]) -> list[str]:
    if len(details) > MAX_LISTED:
        return details[:MAX_LISTED] + [f"... and {len(details) - MAX_LISTED} more"]
    return details


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


# --- the collected span: pure arithmetic, tested directly ------------------------------------------------------


def last_complete_minute(newest: datetime | None, now: datetime) -> datetime | None:
    """Open time of the newest 1m candle every symbol must have, given the newest one stored.

    Only closed minutes count (the still-open minute is never stored), and the newest stored minute only
    once it closed DELIVERY_GRACE ago: until then other symbols' candles for it may still be in flight.
    """
    if newest is None:
        return None
    last = min(_minute(newest), _minute(now) - MINUTE)  # a row for the open minute would be bogus anyway
    if now - (last + MINUTE) < DELIVERY_GRACE:
        last -= MINUTE
    return last


def expected_minutes(start: datetime, last: datetime) -> int:
    """Closed 1m candles from the minute of `start` (ceiled) through `last`, inclusive."""
    first = _minute(start) + (MINUTE if start != _minute(start) else timedelta(0))
    return max(0, int((last - first) / MINUTE) + 1)


def funding_cap_bucket_ms(interval_s: float) -> int:
    """The funding gate's bucket in ms (filters.limits.MinInterval: floor(event ms / interval))."""
    return max(1, int(interval_s * 1000))


# --- findings ---------------------------------------------------------------------------------------------


def _newest(conn: psycopg.Connection, table: str, lo: datetime, now: datetime, venue: str) -> datetime | None:
    row = conn.execute(sql.SQL("SELECT max(time) FROM {} WHERE time >= %s AND time <= %s AND venue = %s").format(
        sql.Identifier(table)), (lo, now, venue)).fetchone()
    return row[0] if row else None


def check_funding(conn: psycopg.Connection, universe: list[str] | None, now: datetime,
                  lo: datetime, venue: str = BINANCE) -> Finding:
    end = _newest(conn, "funding", lo, now, venue)
    if end is None:
        return Finding("funding", not universe, f"no funding rows collected since {lo:%Y-%m-%d %H:%M} UTC",
                       [f"missing: {_listed(sorted(universe))}"] if universe else [])
    start = max(lo, end - FUNDING_WINDOW)
    seen = {r[0] for r in conn.execute(
        "SELECT DISTINCT symbol FROM funding WHERE time > %s AND time <= %s AND venue = %s", (start, end, venue))}
    if universe is None:  # every symbol collected in the lookback should still be in its last hour
        universe = sorted({r[0] for r in conn.execute(
            "SELECT DISTINCT symbol FROM funding WHERE time >= %s AND time <= %s AND venue = %s", (lo, end, venue))})
    missing = sorted(set(universe) - seen)
    summary = (f"{len(set(universe) & seen)}/{len(universe)} symbols with funding in "
               f"{start:%H:%M}..{end:%H:%M} UTC (the collection's last hour)")
    return Finding("funding", not missing, summary, [f"missing: {_listed(missing)}"] if missing else [])


def check_funding_cap(conn: psycopg.Connection, now: datetime, lo: datetime, interval_s: float,
                      venue: str = BINANCE) -> Finding:
    """At most one funding row per symbol per bucket of filters.funding.min_interval_s (the stored cap)."""
    bucket = funding_cap_bucket_ms(interval_s)
    rows = conn.execute("""
        SELECT symbol, to_timestamp(b * %(bucket)s / 1000.0) AS bucket_start, n FROM (
            SELECT symbol, floor(extract(epoch FROM time) * 1000 / %(bucket)s)::bigint AS b, count(*) AS n
            FROM funding WHERE time >= %(lo)s AND time <= %(now)s AND venue = %(venue)s
            GROUP BY 1, 2 HAVING count(*) > 1) d
        ORDER BY bucket_start, symbol""", {"bucket": bucket, "lo": lo, "now": now, "venue": venue}).fetchall()
    what = "minute" if bucket == 60_000 else f"{bucket / 1000:g} s"
    details = _capped([f"{s} {t.astimezone(UTC):%Y-%m-%d %H:%M:%S}: {n} rows" for s, t, n in rows])
    summary = (f"at most one row per symbol per {what}" if not rows
               else f"{len(rows)} symbol-{what} buckets hold more than one row")
    return Finding("funding_cap", not rows, summary, details)


def check_trades(conn: psycopg.Connection, now: datetime, lo: datetime, venue: str = BINANCE) -> Finding:
    # the collection's end from funding (a row per symbol-minute), not max(time) over a day of trades,
    # which in keep_all mode is hundreds of millions of rows
    end = _newest(conn, "funding", lo, now, venue) or now
    start = max(lo, end - TRADES_WINDOW)
    rows = conn.execute("""SELECT save_reason, count(*), avg(usd_value) FROM trades
                           WHERE time >= %s AND time <= %s AND venue = %s
                           GROUP BY save_reason ORDER BY count(*) DESC""",
                        (start, end, venue)).fetchall()
    total = sum(r[1] for r in rows)
    details = [f"{reason:<15} {n:>10} rows  avg ${avg:,.2f}" for reason, n, avg in rows]
    return Finding("trades", True, f"{total} trades kept in {start:%H:%M}..{end:%H:%M} UTC", details)


def check_candles(conn: psycopg.Connection, universe: list[str] | None, now: datetime, lo: datetime,
                  also: Iterable[str] = (), judge_from_lo: bool = False, venue: str = BINANCE) -> Finding:
    """Every symbol has every closed 1m candle from its first row to the collection's newest minute.

    `also`: symbols known to be collected (e.g. from funding) that must have candles even if they have none.
    `judge_from_lo` (an explicit --since): every symbol's span starts at `lo`, or at the collection's first
    row if that is later, instead of at the symbol's own first row.
    """
    last = last_complete_minute(_newest(conn, "candles_1m", lo, now, venue), now)
    if last is None:
        return Finding("candles_1m", True, "no closed 1m candle collected yet")
    rows = conn.execute("""SELECT symbol, min(time), count(DISTINCT time) FROM candles_1m
                           WHERE time >= %s AND time <= %s AND venue = %s GROUP BY symbol""",
                        (lo, last, venue)).fetchall()
    if not rows:  # the newest minute is still within its delivery grace
        return Finding("candles_1m", True, "no closed 1m candle collected yet")
    first = {s: t for s, t, _ in rows}
    counts = {s: n for s, _, n in rows}
    symbols = sorted(universe if universe is not None else set(counts) | set(also))
    collection_start = min(first.values())
    # A symbol whose first row in the window is after `lo` was either collected before it too (then its
    # span starts at `lo` and the late start is missing data) or is new (its span starts at its first row;
    # a symbol with no row at all at the collection's first row). The EXISTS probes the (venue, symbol, time) key.
    late = [s for s in symbols if first.get(s, last + MINUTE) > lo]
    before = {r[0] for r in conn.execute(
        """SELECT s FROM unnest(%s::text[]) s WHERE EXISTS (
               SELECT 1 FROM candles_1m c WHERE c.venue = %s AND c.symbol = s AND c.time < %s)""",
        (late, venue, lo))} if late else set()
    missing: dict[str, tuple[int, int]] = {}
    for s in symbols:
        if s in before:
            start = lo
        elif judge_from_lo:  # an explicit `since`: every symbol owes candles from it (or the collection's start)
            start = collection_start
        else:
            start = first.get(s, collection_start)
        expected = expected_minutes(max(start, lo), last)
        got = counts.get(s, 0)
        if got < expected:
            missing[s] = (expected - got, expected)
    details = _capped([f"{s}: {n} of {e} missing" for s, (n, e) in
                       sorted(missing.items(), key=lambda kv: (-kv[1][0], kv[0]))])
    summary = (f"{len(symbols) - len(missing)}/{len(symbols)} symbols complete, "
               f"{collection_start:%Y-%m-%d %H:%M}..{last + MINUTE:%H:%M} UTC")
    return Finding("candles_1m", not missing, summary, details)


def _has_unique_key(conn: psycopg.Connection, table: str, key: tuple[str, ...]) -> bool:
    """True when a unique index on `table` covers only columns of `key` (so duplicates cannot exist)."""
    rows = conn.execute("""
        SELECT array_agg(a.attname::text) FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = to_regclass(%s) AND i.indisunique GROUP BY i.indexrelid""", (table,)).fetchall()
    return any(set(cols) <= set(key) for (cols,) in rows)


def check_liquidation_holes(conn: psycopg.Connection, now: datetime, lo: datetime,
                            venue: str = BINANCE) -> Finding:
    """The recorded times liquidations were not received (`gaps` rows of kind liquidations, from_id..to_id the
    exchange's ms; collector.pipeline.liquidation_holes), so a reader tells a quiet market from a hole.

    Reported, not failed: no venue serves liquidation history, so such a hole is known and final (state
    unfillable, the reason says why); a missing row would be the failure, and that is what it prevents.
    """
    rows = conn.execute("""SELECT symbol, count(*), sum(to_id - from_id), min(from_id), max(to_id), min(reason)
                           FROM gaps WHERE venue = %s AND kind = 'liquidations'
                               AND to_id >= %s AND from_id <= %s
                           GROUP BY symbol ORDER BY sum(to_id - from_id) DESC""",
                        (venue, int(lo.timestamp() * 1000), int(now.timestamp() * 1000))).fetchall()
    if not rows:
        return Finding("liquidation_holes", True, "no liquidation hole recorded")
    details = [f"{sym:<20} {n:>4} holes, {total / 1000:,.0f} s in all, "
               f"{datetime.fromtimestamp(first / 1000, UTC):%Y-%m-%d %H:%M:%S}.."
               f"{datetime.fromtimestamp(last / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC ({reason})"
               for sym, n, total, first, last, reason in rows[:MAX_LISTED]]
    if len(rows) > MAX_LISTED:
        details.append(f"... and {len(rows) - MAX_LISTED} more")
    holes = sum(r[1] for r in rows)
    return Finding("liquidation_holes", True,
                   f"{holes} recorded times of {len(rows)} symbols without their liquidations "
                   f"(not received, cannot be repaired: gaps kind liquidations)", details)


def check_duplicates(conn: psycopg.Connection, now: datetime) -> Finding:
    details = []
    checked = []
    for table, key in tables.KEYS.items():
        if not relation_exists(conn, table) or _has_unique_key(conn, table, key):
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


@dataclass(frozen=True)
class RetentionRule:
    """How old a table's oldest row may be: retention plus what the backend's dropping adds to it."""

    retention: timedelta
    tolerance: timedelta
    why: str  # e.g. "weekly partitions dropped hourly", for the report


_ADVERB = {"day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}


def plain_retention_rules(retention: Mapping[str, timedelta | None],
                          maintenance_every: timedelta) -> dict[str, RetentionRule]:
    """Plain PostgreSQL: the writer drops a partition once all of it is past retention, every
    `maintenance_every`; so a row may outlive retention by its partition's span plus one interval."""
    out = {}
    for t, info in tables.table_info(retention).items():
        if info.retention is not None:
            out[t] = RetentionRule(info.retention, info.span + maintenance_every + RETENTION_SLACK,
                                   f"{_ADVERB[tables.SPANS[t]]} partitions dropped every {_human(maintenance_every)}")
    return out


def timescale_retention_rules(retention: Mapping[str, timedelta | None],
                              layout: Mapping[str, timescale.TimescaleLayout]) -> tuple[dict[str, RetentionRule],
                                                                                      list[str]]:
    """TimescaleDB: a retention job drops whole chunks past drop_after, every schedule_interval; both are
    what the database reports (timescale_layout). Tables that should have a policy but lack one are
    returned as problems."""
    out, problems = {}, []
    for t, info in tables.table_info(retention).items():
        if info.retention is None:
            continue
        lay = layout.get(t)
        if lay is None or lay.retention_every is None:
            problems.append(f"{t}: no policy_retention job in timescaledb_information.jobs "
                            f"(configured retention {_human(info.retention)})")
            continue
        chunk = lay.chunk_interval or timedelta(0)
        out[t] = RetentionRule(info.retention, chunk + lay.retention_every + RETENTION_SLACK,
                               f"{_human(chunk)} chunks of {lay.hypertable} dropped every "
                               f"{_human(lay.retention_every)}")
    return out, problems


def _human(d: timedelta) -> str:
    s = int(d.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s and s % n == 0:
            return f"{s // n} {unit}"
    return f"{s} s"


def check_retention(conn: psycopg.Connection, now: datetime,
                    retention: Mapping[str, timedelta | None] | None, mode: str | None) -> Finding:
    retention = retention or {}
    if mode == "timescaledb":
        rules, details = timescale_retention_rules(retention, timescale.timescale_layout(conn))
    else:
        from collector.writer.maintenance import MAINTENANCE_EVERY_S

        rules, details = plain_retention_rules(retention, timedelta(seconds=MAINTENANCE_EVERY_S)), []
    for t, rule in rules.items():
        if not relation_exists(conn, t):
            continue
        limit = now - rule.retention - rule.tolerance
        # only rows past the limit are read: partitions/chunks newer than it are pruned, so this is cheap
        row = conn.execute(sql.SQL("SELECT min(time) FROM {} WHERE time < %s").format(sql.Identifier(t)),
                           (limit,)).fetchone()
        oldest = row[0] if row else None
        if oldest is not None:
            details.append(f"{t}: oldest row {oldest:%Y-%m-%d %H:%M} is older than retention "
                           f"{_human(rule.retention)} allows ({rule.why}: limit {limit:%Y-%m-%d %H:%M})")
    return Finding("retention", not details, "every table within its retention" if not details
                   else f"{len(details)} tables outside their retention", details)


def check_jobs(conn: psycopg.Connection, mode: str | None) -> Finding:
    if mode != "timescaledb":
        return Finding("timescaledb_jobs", True, "plain PostgreSQL: retention and roll-ups run in the writer")
    failures = timescale.timescale_job_failures(conn)
    return Finding("timescaledb_jobs", not failures,
                   "every policy job's last run succeeded" if not failures
                   else f"{len(failures)} policy jobs failed their last run", [f.describe() for f in failures])


def run_check(dsn: str, universe: list[str] | None = None, now: datetime | float | None = None,
              retention: Mapping[str, timedelta | None] | None = None, *, since: datetime | None = None,
              funding_interval_s: float = 60.0, data_types: Iterable[str] | None = None,
              venue: str = BINANCE) -> Report:
    """Run every check against `dsn`. `universe` = the symbols that should be collected (None: infer).

    `now` is a datetime or Unix seconds (default: the current time). `since` starts the judged span
    (default: DEFAULT_LOOKBACK before now, or each symbol's first row if later). `funding_interval_s` is
    filters.funding.min_interval_s; `data_types` (collection.data_types) skips checks of what is not
    collected. `venue`: the exchange whose rows are judged (the completeness checks are per venue; the
    duplicate, retention and job checks cover every venue). Raises NoCollectorSchema when the database has
    no collector tables.
    """
    if now is None:
        now = datetime.now(UTC)
    elif isinstance(now, int | float):
        now = datetime.fromtimestamp(now, UTC)
    if universe is not None:
        bad = [s for s in universe if not valid_symbol(s)]
        if bad:
            raise ValueError(f"invalid symbols: {bad}")
    lo = since if since is not None else now - DEFAULT_LOOKBACK
    kinds = set(data_types) if data_types is not None else None
    report = Report(now)
    # read-only session: a check must never be able to change what it inspects
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on") as conn:
        mode = schema_mode(conn)
        if mode is None:
            info = conn.info
            raise NoCollectorSchema(f'no collector tables in database "{info.dbname}" at {info.host}:{info.port}')
        if kinds is None or "funding" in kinds:
            report.findings.append(check_funding(conn, universe, now, lo, venue))
            report.findings.append(check_funding_cap(conn, now, lo, funding_interval_s, venue))
        if kinds is None or "trades" in kinds:
            report.findings.append(check_trades(conn, now, lo, venue))
        if kinds is None or "candles_1m" in kinds:
            also = _recent_funding_symbols(conn, now, lo, venue) if kinds is None or "funding" in kinds else set()
            report.findings.append(check_candles(conn, universe, now, lo, also, judge_from_lo=since is not None,
                                                 venue=venue))
        if kinds is None or "liquidations" in kinds:
            report.findings.append(check_liquidation_holes(conn, now, lo, venue))
        report.findings.append(check_duplicates(conn, now))
        report.findings.append(check_retention(conn, now, retention, mode))
        report.findings.append(check_jobs(conn, mode))
    return report


def _recent_funding_symbols(conn: psycopg.Connection, now: datetime, lo: datetime, venue: str) -> set[str]:
    """Symbols with funding in the collection's last FUNDING_WINDOW: being collected, so owed candles."""
    end = _newest(conn, "funding", lo, now, venue)
    if end is None:
        return set()
    return {r[0] for r in conn.execute(
        "SELECT DISTINCT symbol FROM funding WHERE time > %s AND time <= %s AND venue = %s",
        (max(lo, end - FUNDING_WINDOW), end, venue))}
