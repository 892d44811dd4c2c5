"""Database upkeep the writer schedules between its flushes: roll-ups, partitions and retention, job health.

Each step is small (one table, one range) and runs on the writer's own connection between flushes, so upkeep
never holds up fresh rows for long; the SQL itself is collector.db's (partitions, rollups, timescale). After a recovery from an
outage the writer calls run_now(), since retention and partitions ahead may have been skipped meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import errors

from collector.db import partitions, rollups, tables, timescale
from collector.pipeline.batches import Batch
from collector.writer.sink import Sink, Transient, ms_to_dt
from collector.writer.stats import WriterStats

log = logging.getLogger(__name__)

# Maintenance (CREATE/DROP partition) waits at most this long for a lock held by a reader: flushes queue
# behind it in this single-threaded writer, so it gives up and retries rather than stall them.
MAINTENANCE_LOCK_TIMEOUT_MS = 1_000
# Partition upkeep and retention (plain PostgreSQL): hourly is plenty with 2 days of partitions ahead.
MAINTENANCE_EVERY_S = 3600.0
# TimescaleDB job health (timescaledb_information.job_stats) is read this often: policies run every few
# minutes to daily, so a minute is prompt enough for /health, and one cheap query a minute costs nothing.
JOBS_POLL_S = 60.0


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping or touching [lo, hi) ranges merged into one."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class Maintenance:
    """The writer's upkeep state: roll-up ranges still to compute, tables left in this round, job polling."""

    def __init__(self, sink: Sink, stats: WriterStats, *, retention: Mapping[str, timedelta | None] | None = None,
                 every_s: float = MAINTENANCE_EVERY_S, wall: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.stats = stats
        self.retention = retention
        self.every_s = every_s
        self.wall = wall
        self.next_run = 0.0  # clock() of the next partition/retention round
        self.todo: list[str] = []  # tables left in the current round
        # candles_1m event-ms ranges committed but not yet rolled up (plain) or refreshed (TimescaleDB)
        self.rollup_ranges: list[tuple[int, int]] = []
        self.newest_candle_ms = 0  # end of the newest 1m candle committed: buckets before it are complete
        self.next_jobs_poll = 0.0
        self._failing_jobs: set[int] = set()  # job ids already logged as failing

    def run_now(self) -> None:
        """Start a new partition/retention round at the next tick (after an outage) rather than in an hour."""
        self.next_run = 0.0
        self.todo = []

    def landed(self, table: str, batches: list[Batch]) -> None:
        """Remember committed candles_1m time ranges for the roll-up that follows the flush.

        One range per batch, merged only where they overlap: a late candle (REST repair, spool replay)
        arrives in its own batch, so only its periods are recomputed, not everything since then.
        """
        if table == "candles_1m" and batches:
            for b in batches:
                self.rollup_ranges.append((b.first_event_ms, b.last_event_ms + 60_000))
                self.newest_candle_ms = max(self.newest_candle_ms, b.last_event_ms + 60_000)
            self.rollup_ranges = merge_ranges(self.rollup_ranges)

    def roll_up(self) -> None:
        """Recompute the 5m..1d candles of every period whose 1m candles just landed.

        Plain PostgreSQL: rollup_candles over each range. TimescaleDB: refresh_continuous_aggregate over
        each range's complete buckets (the writer's connection is autocommit, as that CALL requires).
        """
        try:
            while self.rollup_ranges:
                lo, hi = self.rollup_ranges[0]
                if self.sink.backend == "timescaledb":
                    rollups.refresh_candle_views(self.sink.connection(), lo, hi, self.newest_candle_ms)
                else:
                    rollups.rollup_candles(self.sink.connection(), ms_to_dt(lo), ms_to_dt(hi))
                self.rollup_ranges.pop(0)
        except (psycopg.Error, Transient) as exc:  # keep the ranges; retried after the next flush
            self.stats.errors += 1
            self.stats.last_error = f"rollup: {exc}"
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                self.sink.drop_connection()

    def maintain(self, now: float, retry_in: float) -> None:
        """Partition upkeep and retention, one table per call (each tick): flushes run in between.

        A failed table is retried in `retry_in` seconds (the flush backoff) rather than in an hour.
        """
        if now < self.next_run:
            return
        if not self.todo:
            self.todo = list(tables.TIME_TABLES)
        table = self.todo[0]
        try:
            conn = self.sink.connection()
            if self.sink.backend == "postgres":
                self._maintain_table(conn, table)
            self.todo.pop(0)
            if not self.todo:
                self.next_run = now + self.every_s
        except (psycopg.Error, Transient) as exc:
            self.stats.errors += 1
            self.stats.last_error = f"maintenance of {table}: {exc}"
            log.warning("maintenance of %s failed, retrying in %.1fs: %s", table, retry_in, exc)
            if not isinstance(exc, errors.LockNotAvailable):  # a lock timeout leaves the connection usable
                self.sink.drop_connection()
            self.next_run = now + retry_in

    def _maintain_table(self, conn: psycopg.Connection, table: str) -> None:
        wall = datetime.fromtimestamp(self.wall(), UTC)
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = {int(MAINTENANCE_LOCK_TIMEOUT_MS)}")
            created = partitions.ensure_partitions(conn, wall, tables=(table,))
            dropped = partitions.drop_expired(conn, wall, self.retention, tables=(table,))
        self.stats.partitions_created += len(created)
        if dropped:
            self.stats.partitions_dropped += len(dropped)
            log.info("retention dropped partitions: %s", dropped)

    def poll_jobs(self, now: float) -> None:
        """Read TimescaleDB's verdict on the collector's policy jobs (timescale.timescale_job_failures) into
        stats, so /health and /metrics see a failing job; each newly failing job is logged with its error."""
        self.next_jobs_poll = now + JOBS_POLL_S
        try:  # on plain PostgreSQL this finds no timescaledb_information schema and reports none failing
            conn = self.sink.connection()
            with conn.transaction():
                failures = timescale.timescale_job_failures(conn)
        except (psycopg.Error, Transient) as exc:  # the next flush reports a lost connection; retry next poll
            log.warning("reading TimescaleDB job_stats failed: %s", exc)
            return
        counts: dict[str, int] = {}
        for f in failures:
            counts[f.proc_name] = counts.get(f.proc_name, 0) + 1
            if f.job_id not in self._failing_jobs:
                log.error("TimescaleDB %s", f.describe())
        self._failing_jobs = {f.job_id for f in failures}
        self.stats.jobs_failing = counts
        self.stats.jobs_checked_ms = int(self.wall() * 1000)
