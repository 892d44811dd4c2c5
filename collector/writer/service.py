"""The writer's core: encoded batches in, one binary COPY per table per flush out, each batch reported
safe (committed or spooled) so that it can be acknowledged to its worker (collector.writer.loop).

Workers do all the encoding (collector.pipeline.encode); the Writer only groups batches per table
(collector.writer.pending) and hands each due table to the sink (collector.writer.sink), which streams their
bytes with `cursor.copy()` in one transaction per table flush and never re-encodes a row.

Failure model (a batch lands whole or is retried, never half, never twice):
- transient errors (connection lost, server restart, lock or statement timeout): the pending batches stay
  in memory, the connection is dropped, and the flush is retried with exponential backoff
  (collector.writer.outage). While the backlog exceeds `max_pending_bytes` the run loop
  (collector.writer.loop) stops reading the workers' sockets, so back-pressure reaches the workers instead
  of the writer's memory growing without bound.
- a commit whose outcome is unknown, partitions missing, a batch the database rejects on its own: the sink's
  recovery paths (ON CONFLICT staging, partitions on demand, isolation); a rejected batch goes to the
  dead-letter spool (or is counted and dropped when no spool is configured).
- a database outage (server down, or refusing writes: read-only, disk full): the writer keeps accepting
  batches. Once flushes have failed for `spool_after_s` (or the backlog passes `spool_backlog_bytes`), the
  pending batches are written to the spool (collector.writer.spool: fsync'd, atomically renamed, bounded by
  `spool_max_bytes`) and only then acknowledged, so workers may forget them. When the database answers
  again the spool is replayed oldest file first, one file per tick between live flushes, and a file is
  deleted only after its rows are committed: a file whose load outcome is unknown (kill -9 mid-replay) is
  loaded again through the ON CONFLICT path, without duplicates. A full spool is never dropped from: the
  batches stay in memory, unacknowledged, until max_pending_bytes stops the reading (back-pressure).
After a recovery, partition upkeep and retention (collector.writer.maintenance) run at once, one table per
tick under a short lock timeout, so they never hold up flushes for long.
On shutdown everything pending is flushed; what still cannot be written by the deadline is spooled to disk
and loaded again by the next writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

import psycopg

from collector.db import setup as dbsetup
from collector.db import tables
from collector.db.mode import Mode
from collector.pipeline.batches import Batch
from collector.pipeline.encode import COLUMNS
from collector.writer.maintenance import MAINTENANCE_EVERY_S, Maintenance
from collector.writer.outage import SPOOL_AFTER_S, SPOOL_BACKLOG_BYTES, OutagePolicy, Spooler
from collector.writer.pending import Pending
from collector.writer.sink import LOCK_TIMEOUT_MS, STATEMENT_TIMEOUT_MS, Backend, Sink, Transient
from collector.writer.spool import SPOOL_FILE_MAX_BYTES, SPOOL_MAX_BYTES, Spool
from collector.writer.stats import WriterStats

log = logging.getLogger(__name__)

# Flush a table when its oldest pending batch is this old, counted from its creation by the worker (which
# already held its rows up to writer.flush_interval_ms, 50 ms by default): batches arriving within this
# budget share one COPY, and a row waits at most the two holds plus the COPY (writer.commit_wait_ms).
MAX_AGE_S = 0.05
# ...or when this many rows are pending: ~2 MB of trades, a COPY of ~50..100 ms, large enough that the
# per-transaction cost (COMMIT fsync, round trips) is amortised, small enough to keep latency flat.
MAX_ROWS = 20_000
# ...or this many bytes (wide candle rows reach the byte limit before the row limit).
MAX_BYTES = 4 << 20
# Stop reading the workers' sockets above this backlog (DB down or slow): ~minutes of keep_all traffic;
# beyond it the workers hold their unacknowledged batches and, past their own limit, pause the exchange.
MAX_PENDING_BYTES = 256 << 20
# Run-loop wake-up cap: the loop also wakes for every batch that arrives and at every flush deadline, so
# this only bounds how late maintenance and the job poll start. Each wake-up of an idle writer costs CPU
# (issue 12: idle <= 0.01 cores for the whole collector), hence a second, not less.
MAX_WAIT_S = 1.0



class Writer:
    """Groups batches per table and COPYs them; see the module docstring for the failure model.

    Single-threaded on purpose: the caller (collector.writer.loop.serve() or a test) drives it with add() /
    tick() / close(), so there is no background thread whose failure could go unnoticed. `clock` (monotonic
    seconds) and `wall` (Unix seconds) are injectable so tests move time instead of sleeping.
    """

    def __init__(self, dsn: str, *, mode: Mode = "auto",
                 retention: Mapping[str, timedelta | None] | None = None,
                 max_age_s: float = MAX_AGE_S, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES,
                 max_pending_bytes: int = MAX_PENDING_BYTES, lock_timeout_ms: int = LOCK_TIMEOUT_MS,
                 statement_timeout_ms: int = STATEMENT_TIMEOUT_MS, spool_dir: Path | None = None,
                 spool_max_bytes: int = SPOOL_MAX_BYTES, spool_after_s: float = SPOOL_AFTER_S,
                 spool_backlog_bytes: int = SPOOL_BACKLOG_BYTES, spool_file_max_bytes: int = SPOOL_FILE_MAX_BYTES,
                 maintenance_every_s: float = MAINTENANCE_EVERY_S,
                 on_committed: Callable[[list[Batch]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.max_age_s = max_age_s
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_pending_bytes = max_pending_bytes
        self.spool_dir = spool_dir
        # Told about every batch that is now safe (committed, or spooled to disk): the transport
        # acknowledges them to their workers, which may then forget them.
        self.on_committed = on_committed
        self.clock = clock
        self.wall = wall
        self.stats = WriterStats()
        self.sink = Sink(dsn, self.stats, mode=mode, retention=retention, lock_timeout_ms=lock_timeout_ms,
                         statement_timeout_ms=statement_timeout_ms, wall=wall, on_schema=self._schema_ready)
        self.maintenance = Maintenance(self.sink, self.stats, retention=retention, every_s=maintenance_every_s,
                                       wall=wall)
        self.outage = OutagePolicy(spool_after_s=spool_after_s, spool_backlog_bytes=spool_backlog_bytes,
                                   spool_file_max_bytes=spool_file_max_bytes)
        self.pending = Pending()
        self.spooler = None if spool_dir is None else Spooler(Spool(Path(spool_dir), spool_max_bytes), self.stats,
                                                              file_max_bytes=spool_file_max_bytes)

    @property
    def dsn(self) -> str:
        return self.sink.dsn

    @dsn.setter
    def dsn(self, dsn: str) -> None:  # takes effect at the next connection
        self.sink.dsn = dsn

    @property
    def backend(self) -> Backend | None:
        """The back-end the schema was ensured on; None before the database was first reached."""
        return self.sink.backend

    @property
    def backend_pid(self) -> int | None:
        return self.sink.backend_pid

    def connection(self) -> psycopg.Connection:
        """The sink's connection, (re)opened and the schema ensured on first use. Raises sink.Transient."""
        return self.sink.connection()

    def try_connect(self) -> None:
        """Reach the database now; a failure counts as a failed flush (backoff), never as an error to raise."""
        try:
            self.sink.connection()
        except Transient as exc:
            self._failed(exc)

    # --- input ------------------------------------------------------------------------------------------------

    def add(self, batch: Batch) -> bool:
        """Queue a batch for its table (never blocks, never touches the database).

        False when there is nothing to write (no rows, or a table this back-end does not take): the caller
        acknowledges such a batch at once, or its worker would hold it forever.
        """
        if batch.rows == 0:
            return False
        if not self._takes(batch.table):
            self.stats.refused_batches += 1
            return False
        self.pending.add(batch, self.born(batch))
        self._sync_pending()
        return True

    def born(self, batch: Batch) -> float:
        """When `batch` was created by its worker, on self.clock: its age starts there, not at its arrival.

        A batch that waited in a socket or in a worker (writer busy, or restarted) has used up part of its
        budget already. Wall clocks of one machine agree; the age is clamped to [0, max_age_s + 1 ms] (the
        millisecond so that float rounding cannot leave an overdue batch a hair short of due): a batch that
        old is due at once anyway, and the clamp keeps the outage policy's "oldest pending" (when to spool)
        within that of arrival times, as it was designed for, and a clock step harmless.
        """
        now = self.clock()
        age = self.wall() - batch.created_ms / 1000
        return now - min(max(age, 0.0), self.max_age_s + 0.001)

    def _takes(self, table: str) -> bool:
        # derived candles are continuous aggregates under TimescaleDB: computed, never written
        return table in COLUMNS and not (self.backend == "timescaledb" and table in tables.DERIVED_CANDLES)

    def _schema_ready(self, backend: Backend) -> None:
        if backend == "timescaledb":  # batches queued before we knew: derived candles are views
            for t in tables.DERIVED_CANDLES:
                self.stats.refused_batches += len(self.pending.drop(t))
            self._sync_pending()

    def accepting(self) -> bool:
        """False while the backlog is over max_pending_bytes: stop reading the sockets (back-pressure)."""
        return self.pending.nbytes < self.max_pending_bytes

    def pending_rows(self) -> int:
        return self.pending.rows

    def _sync_pending(self) -> None:
        self.stats.pending_bytes = self.pending.nbytes
        self.stats.pending_rows = self.pending.rows

    # --- timing -----------------------------------------------------------------------------------------------

    def due_tables(self, now: float | None = None) -> list[str]:
        now = self.clock() if now is None else now
        return self.pending.due(now, self.max_rows, self.max_bytes, self.max_age_s)

    def next_wakeup(self) -> float:
        """Seconds until a flush timer or a retry is due, capped at MAX_WAIT_S (which also bounds how late
        maintenance and the job poll, both checked on every tick, can start)."""
        now = self.clock()
        t = now + MAX_WAIT_S
        tables = self.pending.tables()
        for table in tables:
            t = min(t, self.pending.since(table) + self.max_age_s)
        if tables:
            t = max(t, self.outage.retry_at)
        return max(0.0, min(t - now, MAX_WAIT_S))

    # --- driving ----------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Flush what is due and replay the spool (unless backing off), maintain; spool during an outage."""
        now = self.clock()
        if now >= self.outage.retry_at:
            due = self.due_tables(now)
            if due or self.spool_waiting():
                self.flush(due)
            if now >= self.outage.retry_at:
                self.maintenance.maintain(now, self.outage.backoff)
            if now >= self.outage.retry_at and now >= self.maintenance.next_jobs_poll:
                self.maintenance.poll_jobs(now)
        self._spool_if_outage(self.clock())  # after the attempt: a flush that just failed counts at once

    @property
    def spool(self) -> Spool | None:
        return None if self.spooler is None else self.spooler.spool

    def spool_waiting(self) -> bool:
        """True while spool files wait to be replayed."""
        return self.spooler is not None and self.spooler.waiting()

    def flush(self, tables: list[str] | None = None) -> bool:
        """Try to write the pending batches of `tables` (all by default), then replay one spool file. True if
        all of that landed.

        Live batches go first so a long replay never delays fresh rows. Ignores the backoff timer (tick()
        honours it); a failure is counted, remembered in stats.last_error, and schedules the next retry.
        """
        waiting = self.pending.tables()
        tables = waiting if tables is None else [t for t in tables if t in waiting]
        try:
            for table in tables:
                self._flush_table(table)
            if self.spooler is not None:
                self.spooler.replay_oldest(self._write, self._takes)
        except Transient as exc:
            self._failed(exc)
            return False
        self._recovered()
        self.maintenance.roll_up()
        return True

    def close(self, deadline_s: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> list[Batch]:
        """Flush everything (and replay the spool), retrying until `deadline_s` has passed; spool the rest.

        Returns the batches that were neither written nor spooled (no spool_dir, or the spool is full):
        lost unless their workers still hold them.
        """
        end = self.clock() + deadline_s
        while self.pending or self.spool_waiting():  # at least one attempt, even at deadline 0
            ok = self.flush()
            remaining = end - self.clock()
            if remaining <= 0:
                break
            if not ok:
                sleep(min(self.outage.backoff, remaining))
        if self.pending and self.spooler is not None:
            self._spool_pending()
        left = self.pending.all()
        self.sink.close()
        return left

    def _flush_table(self, table: str) -> None:
        good = self._write(table, self.pending.batches(table))
        if self.on_committed is not None and good:
            self.on_committed(good)
        self.pending.take(table)
        self._sync_pending()

    def _write(self, table: str, batches: list[Batch]) -> list[Batch]:
        """The sink's write, then the roll-up bookkeeping for what landed. Raises Transient."""
        good = self.sink.write(table, batches, self._reject)
        self.maintenance.landed(table, good)
        return good

    # --- failure handling -------------------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = dbsetup.describe(exc)  # the server's words, one line, with the fix if known
        self.stats.last_error_ms = int(self.wall() * 1000)
        if not self.stats.failing_since_ms:
            self.stats.failing_since_ms = self.stats.last_error_ms
        delay = self.outage.failed(self.clock())
        log.warning("flush failed, retrying in %.1fs: %s", delay, self.stats.last_error)

    def _recovered(self) -> None:
        """A flush succeeded: reset the backoff; after an outage, run maintenance now rather than in an hour.

        Retention and partitions ahead may have been skipped during the outage, and the replay may need
        partitions: the next ticks do them, one table each (see Maintenance.maintain).
        """
        failed_for = self.outage.recovered(self.clock())
        if failed_for is not None:
            log.info("database writable again after %.1f s of failures; %d spool files to replay",
                     failed_for, len(self.spool.files) if self.spool else 0)
            self.maintenance.run_now()
        self.stats.failing_since_ms = 0

    def _reject(self, batch: Batch, exc: BaseException) -> None:
        self.stats.rejected_batches += 1
        log.error("batch of %d %s rows rejected by the database: %s", batch.rows, batch.table, exc)
        if self.spool is not None:
            self.spool.write_aside([batch], "rejected")
        if self.on_committed is not None:  # dealt with (set aside for a human): the worker must not resend it
            self.on_committed([batch])

    # --- outage: the spool ------------------------------------------------------------------------------------

    def _spool_if_outage(self, now: float) -> None:
        """While flushes fail: move pending batches to disk once the outage is old enough or heavy."""
        if self.spooler is not None and self.outage.should_spool(now, self.pending.nbytes, self.pending.oldest(now)):
            self._spool_pending()

    def _spool_pending(self) -> None:
        assert self.spooler is not None
        self.spooler.spool_pending(self.pending, self._spooled)

    def _spooled(self, batches: list[Batch]) -> None:
        self._sync_pending()
        if self.on_committed is not None:
            self.on_committed(batches)
