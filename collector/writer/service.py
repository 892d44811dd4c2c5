"""The writer process's core: encoded batches in, one binary COPY per table per flush out.

Workers do all the encoding (collector.pipeline.encode); the writer only groups batches per table, concatenates their
bytes between COPY_HEADER and COPY_TRAILER and streams them with `cursor.copy()` in one transaction per
table flush. It never re-encodes a row.

Failure model (a batch lands whole or is retried, never half, never twice):
- transient errors (connection lost, server restart, lock or statement timeout): the pending batches stay
  in memory, the connection is dropped, and the flush is retried with exponential backoff. While the
  backlog exceeds `max_pending_bytes` the run loop stops reading the workers' sockets (collector.transport.link), so
  back-pressure reaches the workers instead of the writer's memory growing without bound.
- a commit whose outcome is unknown (connection lost during COMMIT) may have landed: the retry then fails
  with a unique violation and the batches are loaded through a TEMP staging table with
  INSERT ... SELECT ... ON CONFLICT DO NOTHING. That slower path is taken only on recovery.
- "no partition of relation ... found for row" (plain PostgreSQL, backfill or stalled maintenance): the
  missing partitions are created from the batches' event-time range and the COPY is retried at once.
- a batch the database rejects on its own (bad data): isolated by loading batches one by one; the culprit
  goes to the dead-letter spool (or is counted and dropped when no spool is configured) so that one bad
  batch cannot block a table forever.
- a database outage (server down, or refusing writes: read-only, disk full): the writer keeps accepting
  batches. Once flushes have failed for `spool_after_s` (or the backlog passes `spool_backlog_bytes`), the
  pending batches are written to the spool directory (fsync'd, atomically renamed, bounded by
  `spool_max_bytes`) and only then acknowledged, so workers may forget them. When the database answers
  again the spool is replayed oldest file first, one file per tick between live flushes, and a file is
  deleted only after its rows are committed: a file whose load outcome is unknown (kill -9 mid-replay) is
  loaded again through the ON CONFLICT path, without duplicates. A full spool is never dropped from: the
  batches stay in memory, unacknowledged, until max_pending_bytes stops the reading (back-pressure).
  Spool files use collector.transport.link's versioned spool format (the socket's frames behind a header naming
  each table's columns), so the next release reads them; the previous release's pickle files are still
  replayed (once: deleted when committed), so an upgrade during an outage loses nothing.
After a recovery, partition upkeep and retention run at once, one table per tick under a short lock
timeout, so they never hold up flushes for long.
On shutdown everything pending is flushed; what still cannot be written by the deadline is spooled to disk
and loaded again by the next writer.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict

from collector.db import gaps_repo, partitions, rollups, timescale
from collector.db import setup as dbsetup
from collector.db.mode import Mode
from collector.db.schema import SchemaError, ensure_schema
from collector.db.tables import DERIVED_CANDLES, SPANS, TIME_TABLES
from collector.pipeline.encode import CANDLE_TABLES, COLUMNS, COPY_HEADER, COPY_TRAILER, Batch
from collector.transport.link import BatchServer, SpoolFormatError, decode_spool, encode_spool

log = logging.getLogger(__name__)

# --- tunables --------------------------------------------------------------------------------------------------

# Flush a table when its oldest pending batch has waited this long. Workers already hold rows up to a few
# hundred ms before sending; 0.25 s here plus a ~10..100 ms COPY keeps event-to-commit under 1 s.
MAX_AGE_S = 0.25
# ...or when this many rows are pending: ~2 MB of trades, a COPY of ~50..100 ms, large enough that the
# per-transaction cost (COMMIT fsync, round trips) is amortised, small enough to keep latency flat.
MAX_ROWS = 20_000
# ...or this many bytes (wide candle rows reach the byte limit before the row limit).
MAX_BYTES = 4 << 20
# Stop reading the workers' sockets above this backlog (DB down or slow): ~minutes of keep_all traffic;
# beyond it the workers hold their unacknowledged batches and, past their own limit, pause the exchange.
MAX_PENDING_BYTES = 256 << 20
# Retry backoff after a failed flush: first retry fast (a dropped connection usually reconnects at once),
# then doubling up to 10 s: a failed attempt against a down server costs one refused connect (or at most
# CONNECT_TIMEOUT_S), so every 10 s does not hammer it, and a returning database is noticed within 10 s.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
# Connecting to an unreachable host must not freeze the loop (socket reads, acks, spooling) for the OS's
# TCP timeout (minutes); a reachable server answers in milliseconds. Used unless the DSN sets its own.
CONNECT_TIMEOUT_S = 5
# Outage: flushes failing this long are not a dropped connection (that reconnects on the first or second
# retry, 0.5 + 1 s) but a database that is down: pending batches go to the spool and are acknowledged.
SPOOL_AFTER_S = 5.0
# ...or, while flushes fail, as soon as this much is pending, whatever the outage's age: a heavy stream
# must not reach MAX_PENDING_BYTES (back-pressure) before the outage is declared. A quarter of it.
SPOOL_BACKLOG_BYTES = 64 << 20
# During an outage, spool once the oldest pending batch is this old: ~1 s of traffic per file keeps the
# file count low (3,600 per hour of outage) while workers hold at most ~1 s more than they must.
SPOOL_EVERY_S = 1.0
# One spool file holds at most this much: a replay step loads one file, so this bounds how long a replay
# keeps the loop from reading the sockets (a 16 MB COPY takes a fraction of a second).
SPOOL_FILE_MAX_BYTES = 16 << 20
# Disk the spool may use (config writer.spool_max_mb overrides): ~minutes to hours of filtered traffic.
SPOOL_MAX_BYTES = 2048 << 20
# Maintenance (CREATE/DROP partition) waits at most this long for a lock held by a reader: flushes queue
# behind it in this single-threaded writer, so it gives up and retries rather than stall them.
MAINTENANCE_LOCK_TIMEOUT_MS = 1_000
# A table lock (ALTER, a manual LOCK, a long DROP) must not hang the writer: give up the attempt after 5 s
# and retry with backoff; 60 s bounds any single statement (a 4 MB COPY takes well under a second).
LOCK_TIMEOUT_MS = 5_000
STATEMENT_TIMEOUT_MS = 60_000
# Partition upkeep and retention (plain PostgreSQL): hourly is plenty with 2 days of partitions ahead.
MAINTENANCE_EVERY_S = 3600.0
# TimescaleDB job health (timescaledb_information.job_stats) is read this often: policies run every few
# minutes to daily, so a minute is prompt enough for /health, and one cheap query a minute costs nothing.
JOBS_POLL_S = 60.0
# Run-loop wake-up cap: the loop also wakes for every batch that arrives, so this only bounds timer jitter.
MAX_WAIT_S = 0.5
# Histogram bucket upper bounds for COPY latency, seconds (last bucket: above 2.5 s).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# EWMA weight of the newest COPY latency: ~the last 10 flushes dominate.
EWMA_ALPHA = 0.1
# Longest wait in select() before the loop looks at the stop event again: how late a stop is noticed.
STOP_POLL_S = 0.2

_COUNT_FIELD = {"trades": "trades", "funding": "funding", "liquidations": "liquidations",
                "open_interest": "open_interest", **{t: "candles" for t in CANDLE_TABLES}}


@dataclass
class WriterStats:
    """Counters for health reporting. Row counts and last_*_time (event ms) move only on commit."""

    trades_count: int = 0
    funding_count: int = 0
    liquidations_count: int = 0
    open_interest_count: int = 0
    candles_count: int = 0
    errors: int = 0
    last_trades_time: int | None = None
    last_funding_time: int | None = None
    last_liquidations_time: int | None = None
    last_open_interest_time: int | None = None
    last_candles_time: int | None = None
    rows_written: dict[str, int] = field(default_factory=dict)
    batches_written: dict[str, int] = field(default_factory=dict)
    replayed_flushes: int = 0
    partitions_created: int = 0
    rejected_batches: int = 0
    refused_batches: int = 0
    copy_latency_last_s: float = 0.0
    copy_latency_ewma_s: float = 0.0
    copy_latency_hist: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    commit_lag_last_ms: int = 0
    pending_rows: int = 0
    pending_bytes: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_error_ms: int = 0
    schema_ready: bool = False  # reached the database and ensured the schema at least once
    failing_since_ms: int = 0  # start of the current run of failed flushes; 0 once a flush succeeds
    copy_latency_sum_s: float = 0.0
    partitions_dropped: int = 0
    spooled_batches: int = 0  # batches in spool files waiting to be replayed (gauge)
    spooled_bytes: int = 0  # size of those files on disk (gauge)
    spool_full: int = 0  # times batches could not be spooled for lack of room (they stayed in memory)
    jobs_checked_ms: int = 0  # when TimescaleDB job failures were last read (0 = never)
    jobs_failing: dict[str, int] = field(default_factory=dict)  # proc_name -> failing collector jobs

    def record_copy(self, table: str, batches: list[Batch], seconds: float, commit_ms: int) -> None:
        rows = sum(b.rows for b in batches)
        kind = _COUNT_FIELD.get(table)
        if kind is not None:
            setattr(self, f"{kind}_count", getattr(self, f"{kind}_count") + rows)
            last = max(b.last_event_ms for b in batches)
            prev = getattr(self, f"last_{kind}_time")
            setattr(self, f"last_{kind}_time", last if prev is None else max(prev, last))
        self.rows_written[table] = self.rows_written.get(table, 0) + rows
        self.batches_written[table] = self.batches_written.get(table, 0) + len(batches)
        self.copy_latency_last_s = seconds
        self.copy_latency_sum_s += seconds
        self.copy_latency_ewma_s = seconds if self.copy_latency_ewma_s == 0.0 else (
            EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * self.copy_latency_ewma_s)
        i = 0
        while i < len(LATENCY_BUCKETS_S) and seconds > LATENCY_BUCKETS_S[i]:
            i += 1
        self.copy_latency_hist[i] += 1
        self.commit_lag_last_ms = max(0, commit_ms - min(b.created_ms for b in batches))

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy (for shared-memory stats or logging)."""
        out = dict(self.__dict__)
        for k in ("rows_written", "batches_written", "kept", "received", "jobs_failing"):
            out[k] = dict(out[k])
        out["copy_latency_hist"] = list(self.copy_latency_hist)
        return out


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping or touching [lo, hi) ranges merged into one."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class _Transient(Exception):
    """A flush failed for a reason that retrying later can fix."""


def _is_no_partition(exc: BaseException) -> bool:
    return isinstance(exc, errors.CheckViolation) and "no partition of relation" in str(exc)


def _ms_to_dt(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


# pending-<seq>-<batches>.spool (collector.transport.link's spool format); .pkl: the previous release's pickles,
# still read (once: replayed, then deleted) so that an upgrade during an outage loses nothing.
_SPOOL_RE = re.compile(r"^pending-(?P<seq>\d+)-(?P<batches>\d+)\.(?:spool|pkl)$")


class _LegacyUnpickler(pickle.Unpickler):
    """Reads the previous release's pickled spool files: a list of collector.pipeline.encode.Batch, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collector.pipeline.encode", "Batch"):
            return Batch
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a spool file")


@dataclass(frozen=True)
class SpoolFile:
    """One spool file; the name carries its order and batch count so a restart needs to read no file."""

    path: Path
    seq: int
    batches: int
    nbytes: int


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable: without it a crash can forget a file whose contents were fsync'd."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Batches on disk, oldest first: durable before they are acknowledged, deleted once committed.

    Files are written whole to a .tmp, fsync'd, renamed (atomic) and the directory fsync'd, so a reader never
    sees half a file and an acknowledged batch survives kill -9 or a power cut. Bounded by `max_bytes`.
    """

    def __init__(self, directory: Path, max_bytes: int = SPOOL_MAX_BYTES) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.files: list[SpoolFile] = []  # pending files, oldest first
        self._last_seq = 0
        self._check_writable()
        self.scan()

    def _check_writable(self) -> None:
        """Create the directory and write a file into it now, at boot: a spool that cannot be written must
        stop the start (OSError, a boot error), not be discovered in the middle of a database outage."""
        self.dir.mkdir(parents=True, exist_ok=True)
        probe = self.dir / f".probe-{os.getpid()}.tmp"
        try:
            with open(probe, "wb") as f:
                f.write(b"probe")
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.files)

    @property
    def nbatches(self) -> int:
        return sum(f.batches for f in self.files)

    def scan(self) -> None:
        """Index what a previous writer left; remove its half-written .tmp files (never acknowledged)."""
        self.files = []
        if not self.dir.exists():
            return
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        for path in self.dir.glob("pending-*"):
            m = _SPOOL_RE.match(path.name)
            if m is None:
                log.error("spool: ignoring unexpected file %s", path)
                continue
            self.files.append(SpoolFile(path, int(m["seq"]), int(m["batches"]), path.stat().st_size))
        self.files.sort(key=lambda f: f.seq)
        self._last_seq = max((f.seq for f in self.files), default=0)

    def fits(self, nbytes: int) -> bool:
        return self.nbytes + nbytes <= self.max_bytes

    def write(self, batches: list[Batch]) -> SpoolFile | None:
        """Persist `batches` as the newest file; None when it would exceed max_bytes. Raises OSError."""
        payload = encode_spool(batches)
        if not self.fits(len(payload)):
            return None
        seq = max(time.time_ns(), self._last_seq + 1)  # strictly increasing even if the clock steps back
        path = self._write_file(f"pending-{seq:020d}-{len(batches)}.spool", payload)
        self._last_seq = seq
        f = SpoolFile(path, seq, len(batches), len(payload))
        self.files.append(f)
        return f

    def write_aside(self, batches: list[Batch], prefix: str) -> Path:
        """A file for a human (e.g. batches the database rejected): not replayed, not counted."""
        return self._write_file(f"{prefix}-{time.time_ns():020d}-{os.getpid()}.spool", encode_spool(batches))

    def _write_file(self, name: str, payload: bytes) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / name
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
            _fsync_dir(self.dir)
        except OSError:
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)  # not durable, so not acknowledged: the batches stay in memory
            raise
        return path

    @staticmethod
    def read(f: SpoolFile) -> list[Batch]:
        """The file's batches. Raises OSError, SpoolFormatError (a ValueError), or for a legacy pickle file
        pickle.UnpicklingError / EOFError; a file whose tuples carry other columns than this release's
        tables is refused (SpoolFormatError) rather than loaded into the wrong columns."""
        data = f.path.read_bytes()
        if f.path.suffix == ".pkl":
            batches = _LegacyUnpickler(io.BytesIO(data)).load()
            if not isinstance(batches, list) or not all(isinstance(b, Batch) for b in batches):
                raise pickle.UnpicklingError("a legacy spool file holds a list of batches")
            return batches
        batches, columns = decode_spool(data)
        for table, cols in columns.items():
            if COLUMNS.get(table) != cols:
                raise SpoolFormatError(f"{table}: the file's columns {cols} are not this release's "
                                       f"{COLUMNS.get(table)}")
        return batches

    def remove(self, f: SpoolFile) -> None:
        """Forget a file whose batches are committed (the only way a pending file leaves the spool)."""
        f.path.unlink(missing_ok=True)
        self.files.remove(f)

    def set_aside(self, f: SpoolFile) -> Path:
        """Rename an unreadable file to corrupt-*, out of the replay order, for a human to inspect."""
        dest = f.path.with_name("corrupt-" + f.path.name)
        os.rename(f.path, dest)
        self.files.remove(f)
        return dest


class Writer:
    """Groups batches per table and COPYs them; see the module docstring for the failure model.

    Single-threaded on purpose: the caller (run() or a test) drives it with add() / tick() / close(), so
    there is no background thread whose failure could go unnoticed. `clock` (monotonic seconds) and `wall`
    (Unix seconds) are injectable so tests move time instead of sleeping.
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
        self.dsn = dsn
        self.mode = mode
        self.retention = retention
        self.max_age_s = max_age_s
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_pending_bytes = max_pending_bytes
        self.lock_timeout_ms = lock_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.spool_dir = spool_dir
        self.spool = None if spool_dir is None else Spool(Path(spool_dir), spool_max_bytes)
        self.spool_after_s = spool_after_s
        self.spool_backlog_bytes = spool_backlog_bytes
        self.spool_file_max_bytes = spool_file_max_bytes
        self.maintenance_every_s = maintenance_every_s
        # Told about every batch that is now safe (committed, or spooled to disk): the transport
        # acknowledges them to their workers, which may then forget them.
        self.on_committed = on_committed
        self.clock = clock
        self.wall = wall
        self.stats = WriterStats()
        self.backend: Literal["timescaledb", "postgres"] | None = None
        self._conn: psycopg.Connection | None = None
        self._pending: dict[str, list[Batch]] = {}
        self._since: dict[str, float] = {}  # table -> clock() when its oldest pending batch arrived
        self._pending_bytes = 0
        self._retry_at = 0.0
        self._backoff = BACKOFF_INITIAL_S
        self._next_maintenance = 0.0
        self._maintenance_todo: list[str] = []  # tables left in the current maintenance round
        # candles_1m event-ms ranges committed but not yet rolled up (plain) or refreshed (TimescaleDB)
        self._rollup_ranges: list[tuple[int, int]] = []
        self._newest_candle_ms = 0  # end of the newest 1m candle committed: buckets before it are complete
        self._next_jobs_poll = 0.0
        self._failing_jobs: set[int] = set()  # job ids already logged as failing
        self._failing_since: float | None = None  # clock() of the first failure of the current outage
        self._spool_full_logged = False
        self._sync_spool()

    # --- input ------------------------------------------------------------------------------------------------

    def add(self, batch: Batch) -> bool:
        """Queue a batch for its table (never blocks, never touches the database).

        False when there is nothing to write (no rows, or a table this back-end does not take): the caller
        acknowledges such a batch at once, or its worker would hold it forever.
        """
        if batch.kept:
            for k, v in batch.kept.items():
                self.stats.kept[k] = self.stats.kept.get(k, 0) + v
        if batch.received:
            for k, v in batch.received.items():
                self.stats.received[k] = self.stats.received.get(k, 0) + v
        if batch.rows == 0:
            return False
        if batch.table not in COLUMNS or (self.backend == "timescaledb" and batch.table in DERIVED_CANDLES):
            # derived candles are continuous aggregates under TimescaleDB: computed, never written
            self.stats.refused_batches += 1
            return False
        pend = self._pending.setdefault(batch.table, [])
        if not pend:
            self._since[batch.table] = self.clock()
        pend.append(batch)
        self._pending_bytes += len(batch.data)
        self._sync_pending()
        return True

    def accepting(self) -> bool:
        """False while the backlog is over max_pending_bytes: stop reading the sockets (back-pressure)."""
        return self._pending_bytes < self.max_pending_bytes

    def pending_rows(self) -> int:
        return sum(b.rows for bs in self._pending.values() for b in bs)

    def _sync_pending(self) -> None:
        self.stats.pending_bytes = self._pending_bytes
        self.stats.pending_rows = self.pending_rows()

    # --- timing -----------------------------------------------------------------------------------------------

    def due_tables(self, now: float | None = None) -> list[str]:
        now = self.clock() if now is None else now
        due = []
        for table, batches in self._pending.items():
            if not batches:
                continue
            rows = sum(b.rows for b in batches)
            nbytes = sum(len(b.data) for b in batches)
            if rows >= self.max_rows or nbytes >= self.max_bytes or now - self._since[table] >= self.max_age_s:
                due.append(table)
        return due

    def next_wakeup(self) -> float:
        """Seconds until something is due (a flush timer, a retry or maintenance), capped at MAX_WAIT_S."""
        now = self.clock()
        t = now + MAX_WAIT_S
        for table, batches in self._pending.items():
            if batches:
                t = min(t, self._since[table] + self.max_age_s)
        if self._pending and any(self._pending.values()):
            t = max(t, self._retry_at)
        return max(0.0, min(t - now, MAX_WAIT_S))

    # --- driving ----------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Flush what is due and replay the spool (unless backing off), maintain; spool during an outage."""
        now = self.clock()
        if now >= self._retry_at:
            due = self.due_tables(now)
            if due or self.spool_waiting():
                self.flush(due)
            if now >= self._retry_at:
                self._maintain(now)
            if now >= self._retry_at and now >= self._next_jobs_poll:
                self._poll_jobs(now)
        self._spool_if_outage(self.clock())  # after the attempt: a flush that just failed counts at once

    def spool_waiting(self) -> bool:
        """True while spool files wait to be replayed."""
        return self.spool is not None and bool(self.spool.files)

    def flush(self, tables: list[str] | None = None) -> bool:
        """Try to write the pending batches of `tables` (all by default), then replay one spool file. True if
        all of that landed.

        Live batches go first so a long replay never delays fresh rows. Ignores the backoff timer (tick()
        honours it); a failure is counted, remembered in stats.last_error, and schedules the next retry.
        """
        tables = [t for t in (tables if tables is not None else list(self._pending)) if self._pending.get(t)]
        try:
            for table in tables:
                self._flush_table(table)
            self._replay_oldest()
        except _Transient as exc:
            self._failed(exc)
            return False
        self._recovered()
        self._after_flush()
        return True

    def close(self, deadline_s: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> list[Batch]:
        """Flush everything (and replay the spool), retrying until `deadline_s` has passed; spool the rest.

        Returns the batches that were neither written nor spooled (no spool_dir, or the spool is full):
        lost unless their workers still hold them.
        """
        end = self.clock() + deadline_s
        while any(self._pending.values()) or self.spool_waiting():  # at least one attempt, even at deadline 0
            ok = self.flush()
            remaining = end - self.clock()
            if remaining <= 0:
                break
            if not ok:
                sleep(min(self._backoff, remaining))
        if any(self._pending.values()) and self.spool is not None:
            self._spool_pending()
        left = [b for bs in self._pending.values() for b in bs]
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        return left

    # --- connection -------------------------------------------------------------------------------------------

    @property
    def backend_pid(self) -> int | None:
        return None if self._conn is None or self._conn.closed else self._conn.info.backend_pid

    def connection(self) -> psycopg.Connection:
        """The writer's connection, (re)opened and the schema ensured on first use."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        conn = None
        try:
            # creates the database when it is missing and the role may (dbsetup.connect)
            conn = dbsetup.connect(self.dsn, autocommit=True, application_name="collector-writer",
                                   **_connect_timeout(self.dsn))
            conn.execute(f"SET lock_timeout = {int(self.lock_timeout_ms)}")
            conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")
            if self.backend is None:
                self.backend = ensure_schema(conn, self.mode, self.retention,
                                                     now=datetime.fromtimestamp(self.wall(), UTC))
                self.stats.schema_ready = True
                if self.backend == "timescaledb":  # batches queued before we knew: derived candles are views
                    for t in DERIVED_CANDLES:
                        self.stats.refused_batches += len(self._pending.pop(t, []))
                        self._since.pop(t, None)
                    self._pending_bytes = sum(len(b.data) for bs in self._pending.values() for b in bs)
        except (psycopg.Error, SchemaError) as exc:  # down, refusing, or a refused mode: retried later
            if conn is not None:
                conn.close()
            raise _Transient(f"connect: {exc}") from exc
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    # --- the COPY -----------------------------------------------------------------------------------------------

    def _flush_table(self, table: str) -> None:
        good = self._write(table, self._pending[table])
        if self.on_committed is not None and good:
            self.on_committed(good)
        self._pending[table] = []
        self._since.pop(table, None)
        self._pending_bytes = sum(len(b.data) for bs in self._pending.values() for b in bs)
        self._sync_pending()

    def _write(self, table: str, batches: list[Batch]) -> list[Batch]:
        """Commit `batches` of one table; returns those that landed (the rest were rejected and set aside).

        Raises _Transient when nothing can be said about the data itself (connection, server, permissions).
        """
        try:
            self._load(table, batches)
        except _Transient:
            raise
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # the data itself is refused: find the culprit(s) so the rest can land
            log.warning("flush of %s refused (%s); isolating %d batches", table, exc, len(batches))
            self.stats.errors += 1
            self.stats.last_error = f"{table}: {exc}"
            good: list[Batch] = []
            for b in batches:
                try:
                    self._load(table, [b])
                    good.append(b)
                except (psycopg.DataError, psycopg.IntegrityError) as one:
                    self._reject(b, one)
                except psycopg.Error as other:
                    self._drop_connection()
                    raise _Transient(f"{table}: {other}") from other
            self._landed(table, good)
            return good
        except psycopg.Error as exc:  # read-only, schema missing, permissions...: keep the data, retry later
            self._drop_connection()
            raise _Transient(f"{table}: {exc}") from exc
        self._landed(table, batches)
        return batches

    def _landed(self, table: str, batches: list[Batch]) -> None:
        """Remember committed candles_1m time ranges for the roll-up that follows the flush.

        One range per batch, merged only where they overlap: a late candle (REST repair, spool replay)
        arrives in its own batch, so only its periods are recomputed, not everything since then.
        """
        if table == "candles_1m" and batches:
            for b in batches:
                self._rollup_ranges.append((b.first_event_ms, b.last_event_ms + 60_000))
                self._newest_candle_ms = max(self._newest_candle_ms, b.last_event_ms + 60_000)
            self._rollup_ranges = merge_ranges(self._rollup_ranges)

    def _load(self, table: str, batches: list[Batch]) -> None:
        """One transaction: fast COPY, or the staging path after a unique violation. Raises _Transient."""
        staged = table == "gaps"  # a gap's versions share its key: always merged (gaps_repo.upsert_gaps_sql)
        for _ in range(4):  # at most: COPY -> create partitions -> COPY -> unique violation -> staged
            conn = self.connection()
            t0 = time.perf_counter()
            try:
                with conn.transaction():
                    if staged:
                        self._copy_staged(conn, table, batches)
                    else:
                        self._copy(conn, table, table, batches)
            except errors.UniqueViolation:
                if staged:
                    raise
                staged = True  # an earlier attempt may have committed: load what is missing only
                self.stats.replayed_flushes += 1
                continue
            except errors.CheckViolation as exc:
                if not _is_no_partition(exc):
                    raise
                self._create_partitions(conn, table, batches)
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop_connection()
                raise _Transient(f"{table}: {exc}") from exc
            self.stats.record_copy(table, batches, time.perf_counter() - t0, int(self.wall() * 1000))
            return
        raise _Transient(f"{table}: could not load after retries")

    @staticmethod
    def _copy(conn: psycopg.Connection, target: str, table: str, batches: list[Batch]) -> None:
        stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(target), sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table])))
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            copy.write(COPY_HEADER)
            for b in batches:
                copy.write(b.data)
            copy.write(COPY_TRAILER)

    def _copy_staged(self, conn: psycopg.Connection, table: str, batches: list[Batch]) -> None:
        stage = f"_stage_{table}"
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table]))
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
            sql.Identifier(stage), sql.Identifier(table)))
        self._copy(conn, stage, table, batches)
        if table == "gaps":
            conn.execute(gaps_repo.upsert_gaps_sql(stage))
            return
        conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(table), cols, cols, sql.Identifier(stage)))

    def _create_partitions(self, conn: psycopg.Connection, table: str, batches: list[Batch]) -> None:
        if table not in SPANS:
            raise _Transient(f"{table}: no partition and not a partitioned table")
        lo = _ms_to_dt(min(b.first_event_ms for b in batches))
        hi = _ms_to_dt(max(b.last_event_ms for b in batches))
        try:
            with conn.transaction():
                created = partitions.ensure_partitions_for(conn, table, lo, hi)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop_connection()
            raise _Transient(f"{table}: creating partitions: {exc}") from exc
        self.stats.partitions_created += len(created)
        log.info("created partitions on demand: %s", created)

    # --- failure handling -------------------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = dbsetup.describe(exc)  # the server's words, one line, with the fix if known
        self.stats.last_error_ms = int(self.wall() * 1000)
        if not self.stats.failing_since_ms:
            self.stats.failing_since_ms = self.stats.last_error_ms
        if self._failing_since is None:
            self._failing_since = self.clock()
        self._retry_at = self.clock() + self._backoff
        log.warning("flush failed, retrying in %.1fs: %s", self._backoff, self.stats.last_error)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def _recovered(self) -> None:
        """A flush succeeded: reset the backoff; after an outage, run maintenance now rather than in an hour.

        Retention and partitions ahead may have been skipped during the outage, and the replay may need
        partitions: the next ticks do them, one table each (see _maintain).
        """
        if self._failing_since is not None:
            log.info("database writable again after %.1f s of failures; %d spool files to replay",
                     self.clock() - self._failing_since, len(self.spool.files) if self.spool else 0)
            self._next_maintenance = 0.0
            self._maintenance_todo = []
        self._failing_since = None
        self._backoff = BACKOFF_INITIAL_S
        self._retry_at = 0.0
        self.stats.failing_since_ms = 0

    def _reject(self, batch: Batch, exc: BaseException) -> None:
        self.stats.rejected_batches += 1
        log.error("batch of %d %s rows rejected by the database: %s", batch.rows, batch.table, exc)
        if self.spool is not None:
            self.spool.write_aside([batch], "rejected")
        if self.on_committed is not None:  # dealt with (set aside for a human): the worker must not resend it
            self.on_committed([batch])

    # --- maintenance ------------------------------------------------------------------------------------------

    def _after_flush(self) -> None:
        """Recompute the 5m..1d candles of every period whose 1m candles just landed.

        Plain PostgreSQL: rollup_candles over each range. TimescaleDB: refresh_continuous_aggregate over
        each range's complete buckets (the writer's connection is autocommit, as that CALL requires).
        """
        try:
            while self._rollup_ranges:
                lo, hi = self._rollup_ranges[0]
                if self.backend == "timescaledb":
                    rollups.refresh_candle_views(self.connection(), lo, hi, self._newest_candle_ms)
                else:
                    rollups.rollup_candles(self.connection(), _ms_to_dt(lo), _ms_to_dt(hi))
                self._rollup_ranges.pop(0)
        except (psycopg.Error, _Transient) as exc:  # keep the ranges; retried after the next flush
            self.stats.errors += 1
            self.stats.last_error = f"rollup: {exc}"
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                self._drop_connection()

    def _maintain(self, now: float) -> None:
        """Partition upkeep and retention, one table per call (each tick): flushes run in between."""
        if now < self._next_maintenance:
            return
        if not self._maintenance_todo:
            self._maintenance_todo = list(TIME_TABLES)
        table = self._maintenance_todo[0]
        try:
            conn = self.connection()
            if self.backend == "postgres":
                self._maintain_table(conn, table)
            self._maintenance_todo.pop(0)
            if not self._maintenance_todo:
                self._next_maintenance = now + self.maintenance_every_s
        except (psycopg.Error, _Transient) as exc:
            self.stats.errors += 1
            self.stats.last_error = f"maintenance of {table}: {exc}"
            log.warning("maintenance of %s failed, retrying in %.1fs: %s", table, self._backoff, exc)
            if not isinstance(exc, errors.LockNotAvailable):  # a lock timeout leaves the connection usable
                self._drop_connection()
            # retry maintenance with the flush backoff rather than hourly
            self._next_maintenance = now + self._backoff

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

    def _poll_jobs(self, now: float) -> None:
        """Read TimescaleDB's verdict on the collector's policy jobs (timescale.timescale_job_failures) into
        stats, so /health and /metrics see a failing job; each newly failing job is logged with its error."""
        self._next_jobs_poll = now + JOBS_POLL_S
        try:  # on plain PostgreSQL this finds no timescaledb_information schema and reports none failing
            conn = self.connection()
            with conn.transaction():
                failures = timescale.timescale_job_failures(conn)
        except (psycopg.Error, _Transient) as exc:  # the next flush reports a lost connection; retry next poll
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

    # --- spool ------------------------------------------------------------------------------------------------

    def _spool_if_outage(self, now: float) -> None:
        """While flushes fail: move pending batches to disk once the outage is old enough or heavy."""
        if self.spool is None or self._failing_since is None or not self._pending_bytes:
            return
        heavy = self._pending_bytes >= self.spool_backlog_bytes
        outage = now - self._failing_since >= self.spool_after_s
        oldest = min(self._since.values(), default=now)
        if heavy or (outage and (now - oldest >= SPOOL_EVERY_S or self._pending_bytes >= self.spool_file_max_bytes)):
            self._spool_pending()

    def _spool_pending(self) -> None:
        """Spool every pending batch, file by file; each file's batches are acknowledged once it is durable.

        Stops at the first file that does not fit (or a disk error): those batches stay pending and
        unacknowledged, so nothing is dropped; accepting() turns False once the backlog reaches
        max_pending_bytes and back-pressure takes over.
        """
        assert self.spool is not None
        for chunk in self._spool_chunks():
            estimate = sum(len(b.data) for b in chunk)
            try:
                written = self.spool.write(chunk) if self.spool.fits(estimate) else None
            except OSError as exc:
                self.stats.errors += 1
                self.stats.last_error = f"spool: {exc}"
                log.error("could not spool %d batches (kept in memory): %s", len(chunk), exc)
                break
            if written is None:
                self._spool_refused(len(chunk), estimate)
                break
            self._spool_full_logged = False
            self._forget_pending(chunk)
            self._sync_spool()
            log.warning("database unavailable: spooled %d batches (%d bytes) to %s", len(chunk), written.nbytes,
                        written.path.name)
            if self.on_committed is not None:
                self.on_committed(chunk)  # durable now: the workers may forget them

    def _spool_chunks(self) -> list[list[Batch]]:
        """Pending batches cut into files of at most spool_file_max_bytes (a batch is never split)."""
        chunks: list[list[Batch]] = [[]]
        size = 0
        for b in (b for bs in self._pending.values() for b in bs):
            if chunks[-1] and size + len(b.data) > self.spool_file_max_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(b)
            size += len(b.data)
        return [c for c in chunks if c]

    def _spool_refused(self, nbatches: int, nbytes: int) -> None:
        """The spool is full: count it, log once per episode; the batches stay in memory, unacknowledged."""
        self.stats.spool_full += 1
        self.stats.last_error = "spool full"
        if not self._spool_full_logged:
            assert self.spool is not None
            log.error("spool full (%d of %d bytes used): %d batches (%d bytes) stay in memory, unacknowledged; "
                      "workers will be held back", self.spool.nbytes, self.spool.max_bytes, nbatches, nbytes)
            self._spool_full_logged = True

    def _forget_pending(self, batches: list[Batch]) -> None:
        gone = {id(b) for b in batches}
        for table in list(self._pending):
            kept = [b for b in self._pending[table] if id(b) not in gone]
            self._pending[table] = kept
            if not kept:
                self._since.pop(table, None)
        self._pending_bytes = sum(len(b.data) for bs in self._pending.values() for b in bs)
        self._sync_pending()

    def _replay_oldest(self) -> None:
        """Commit the oldest spool file's batches, then delete it. Raises _Transient (the file stays).

        Each table's batches go in one transaction; a kill between them and the unlink means the next
        writer loads the file again, and _load's unique-violation path then adds only what is missing.
        """
        if self.spool is None or not self.spool.files:
            return
        f = self.spool.files[0]
        try:
            batches = self.spool.read(f)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as exc:
            dest = self.spool.set_aside(f)
            self.stats.errors += 1
            self.stats.last_error = f"spool: unreadable {f.path.name}: {exc}"
            log.error("spool file %s is unreadable (%s): moved to %s", f.path.name, exc, dest.name)
            self._sync_spool()
            return
        by_table: dict[str, list[Batch]] = {}
        for b in batches:
            if b.table in COLUMNS and not (self.backend == "timescaledb" and b.table in DERIVED_CANDLES):
                by_table.setdefault(b.table, []).append(b)
            else:
                self.stats.refused_batches += 1
        for table, bs in by_table.items():
            self._write(table, bs)
        self.spool.remove(f)
        self._sync_spool()
        log.info("replayed spool file %s (%d batches); %d files left", f.path.name, len(batches),
                 len(self.spool.files))

    def _sync_spool(self) -> None:
        self.stats.spooled_batches = self.spool.nbatches if self.spool else 0
        self.stats.spooled_bytes = self.spool.nbytes if self.spool else 0


def _connect_timeout(dsn: str) -> dict[str, int]:
    """connect_timeout for psycopg.connect unless the DSN sets its own."""
    try:
        if "connect_timeout" in conninfo_to_dict(dsn):
            return {}
    except psycopg.ProgrammingError:
        pass  # a malformed DSN fails in connect() with its own message
    return {"connect_timeout": CONNECT_TIMEOUT_S}


class _Event(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def serve(socket_path: str | Path, stop_event: _Event, dsn: str, *, shutdown_deadline_s: float = 10.0,
          on_tick: Callable[[WriterStats], None] | None = None, on_booted: Callable[[], None] | None = None,
          **writer_kw: Any) -> WriterStats:
    """The writer process's loop: batches from the workers' sockets -> Writer, until stop_event is set.

    `on_booted` is called once the socket listens and the spool is ready, before the database is tried:
    what fails before that is a boot error (collector.runtime.exitcodes), an unreachable database never is.

    Each batch is acknowledged to its worker once committed (or spooled); until then the worker keeps
    it and sends it again to a restarted writer. Waits in select() between deadlines (no busy wait);
    while backlogged it stops reading the sockets, so back-pressure reaches the workers.
    """
    server = BatchServer(socket_path)
    origin: dict[int, tuple[int, int]] = {}  # id(batch) -> (connection, seq) until acknowledged

    def acknowledge(batches: list[Batch]) -> None:
        acks: dict[int, list[int]] = {}
        for b in batches:
            o = origin.pop(id(b), None)
            if o is not None:
                acks.setdefault(o[0], []).append(o[1])
        for cid, seqs in acks.items():
            server.ack(cid, seqs)

    writer = Writer(dsn, on_committed=acknowledge, **writer_kw)
    if on_booted is not None:
        on_booted()

    def take(items: list[tuple[int, int, Batch]]) -> None:
        for cid, seq, batch in items:
            origin[id(batch)] = (cid, seq)
            if not writer.add(batch):
                acknowledge([batch])  # nothing to write: the worker may forget it

    try:
        try:
            writer.connection()
        except _Transient as exc:  # database down at start: keep accepting, flush() retries with backoff
            writer._failed(exc)
        while not stop_event.is_set():
            timeout = min(writer.next_wakeup(), STOP_POLL_S)
            if writer.accepting():
                take(server.poll(timeout))
            else:
                stop_event.wait(timeout)
            writer.tick()
            if on_tick is not None:
                on_tick(writer.stats)
        # shutdown: the workers have stopped and handed everything over; take what is still in flight
        while True:
            items = server.poll(0.0)
            if not items:
                break
            take(items)
        left = writer.close(shutdown_deadline_s)
        if on_tick is not None:
            on_tick(writer.stats)
        if left:  # not acknowledged: a worker still running would resend them to the next writer
            log.error("writer stopped with %d batches neither written nor spooled (%s)", len(left),
                      "spool full" if writer.spool_dir else "no spool_dir")
    finally:
        server.close()
    return writer.stats


class WriterStatsPublisher:
    """Copies WriterStats into the writer's shared-memory slot after every loop turn (a few µs)."""

    KINDS = ("trades", "funding", "liquidations", "open_interest", "candles")

    def __init__(self, slot: Any) -> None:
        from collector.runtime.shm import JOB_PROCS, LATENCY_BUCKET_KEYS

        self.slot = slot
        self.bucket_keys = LATENCY_BUCKET_KEYS
        self.job_procs = JOB_PROCS

    def __call__(self, st: WriterStats) -> None:
        slot = self.slot
        slot.update(st.rows_written, "rows.")
        slot.update(st.batches_written, "batches.")
        for k in self.KINDS:
            slot.set(f"last_event_ms.{k}", getattr(st, f"last_{k}_time") or 0)
        for key, n in zip(self.bucket_keys, st.copy_latency_hist, strict=False):
            slot.set(f"copy_latency_bucket.{key}", n)
        slot.update({
            "errors": st.errors, "last_error_ms": st.last_error_ms, "failing_since_ms": st.failing_since_ms,
            "copy_latency_last_s": st.copy_latency_last_s, "copy_latency_ewma_s": st.copy_latency_ewma_s,
            "copy_latency_sum_s": st.copy_latency_sum_s, "commit_lag_ms": st.commit_lag_last_ms,
            "pending_rows": st.pending_rows, "pending_bytes": st.pending_bytes,
            "spooled_batches": st.spooled_batches, "spooled_bytes": st.spooled_bytes,
            "replayed_flushes": st.replayed_flushes,
            "partitions_created": st.partitions_created, "partitions_dropped": st.partitions_dropped,
            "rejected_batches": st.rejected_batches, "refused_batches": st.refused_batches,
            "schema_ready": float(st.schema_ready), "jobs_checked_ms": st.jobs_checked_ms,
        })
        for proc in self.job_procs:  # every proc, so a job that recovered is published as 0 again
            slot.set(f"jobs_failing.{proc}", st.jobs_failing.get(proc, 0))
        slot.set_text(st.last_error or "")  # verbatim for /health, /stats and the status page
        slot.publish()


@dataclass
class WriterSpec:
    """What the supervisor hands the writer process (picklable: built in the parent, used in the child)."""

    config: Any  # collector.config.Config
    dsn: str
    socket_path: str  # where the workers connect (collector.transport.link)
    stop: Any  # multiprocessing Event
    stats_name: str | None = None  # the supervisor's shared-memory statistics block


def run_writer(spec: WriterSpec) -> None:
    """Process entry point: configure this child (title, logging, signals), then run() until stopped.

    A failure before the writer has booted (socket listening, spool ready) exits with BOOT_ERROR.
    """
    import faulthandler
    import signal

    import setproctitle

    from collector.runtime.exitcodes import exit_boot_error
    from collector.runtime.logs import exit_with_parent, log_dir, setup_logging

    exit_with_parent()
    faulthandler.enable()  # the supervisor's SIGABRT for a hung writer dumps every thread's stack to stderr
    setproctitle.setproctitle("collector: writer")
    cfg = spec.config
    booted = False

    def mark_booted() -> None:
        nonlocal booted
        booted = True

    publish = block = None
    try:
        setup_logging(cfg.logging, log_dir(cfg.logging) / "writer.log")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
        # SIGTERM (the supervisor died: see exit_with_parent) drains like a stop request
        signal.signal(signal.SIGTERM, lambda *_: spec.stop.set())
        if spec.stats_name:
            from collector.runtime.shm import WRITER_SLOT, StatsBlock

            block = StatsBlock.attach(spec.stats_name)
            publish = WriterStatsPublisher(block.process_slot(WRITER_SLOT))
        _serve_from_config(spec, publish, mark_booted)
    except Exception as e:
        if booted:
            raise
        exit_boot_error(Path(spec.socket_path).parent, "writer", e)
    finally:
        if block is not None:
            block.close()


def _serve_from_config(spec: WriterSpec, publish: Callable[[WriterStats], None] | None,
                       on_booted: Callable[[], None] | None = None) -> None:
    cfg = spec.config
    serve(spec.socket_path, spec.stop, spec.dsn, on_tick=publish, on_booted=on_booted, mode=cfg.database.mode,
          retention=cfg.retention.periods(), max_rows=cfg.writer.batch_rows,
          max_age_s=cfg.writer.flush_interval_ms / 1000, spool_dir=Path(cfg.writer.spool_dir),
          spool_max_bytes=cfg.writer.spool_max_mb << 20)
