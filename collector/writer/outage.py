"""The writer through a database outage: when to retry and when to spool (policy), spooling and replaying.

OutagePolicy is pure decisions over the clock the caller passes in: the writer (collector.writer.service)
reports each failed and each successful flush and asks whether to retry now and whether to move its backlog
to the spool. Spooler acts on them: the backlog into spool files (collector.writer.spool), acknowledged only
once durable, and the files replayed oldest first when the database is writable again.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable

from collector.pipeline.batches import Batch
from collector.writer.pending import Pending
from collector.writer.spool import Spool
from collector.writer.stats import WriterStats

log = logging.getLogger(__name__)

# Retry backoff after a failed flush: first retry fast (a dropped connection usually reconnects at once),
# then doubling up to 10 s: a failed attempt against a down server costs one refused connect (or at most
# sink.CONNECT_TIMEOUT_S), so every 10 s does not hammer it, and a returning database is noticed within 10 s.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
# Outage: flushes failing this long are not a dropped connection (that reconnects on the first or second
# retry, 0.5 + 1 s) but a database that is down: pending batches go to the spool and are acknowledged.
SPOOL_AFTER_S = 5.0
# ...or, while flushes fail, as soon as this much is pending, whatever the outage's age: a heavy stream
# must not reach service.MAX_PENDING_BYTES (back-pressure) before the outage is declared. A quarter of it.
SPOOL_BACKLOG_BYTES = 64 << 20
# During an outage, spool once the oldest pending batch is this old: ~1 s of traffic per file keeps the
# file count low (3,600 per hour of outage) while workers hold at most ~1 s more than they must.
SPOOL_EVERY_S = 1.0


class OutagePolicy:
    """Backoff between failed flushes, and the spool decision while they keep failing.

    `spool_file_max_bytes`: a backlog that fills a whole spool file is spooled without waiting SPOOL_EVERY_S.
    """

    def __init__(self, *, spool_after_s: float = SPOOL_AFTER_S, spool_backlog_bytes: int = SPOOL_BACKLOG_BYTES,
                 spool_file_max_bytes: int) -> None:
        self.spool_after_s = spool_after_s
        self.spool_backlog_bytes = spool_backlog_bytes
        self.spool_file_max_bytes = spool_file_max_bytes
        self.backoff = BACKOFF_INITIAL_S  # the wait after the next failure
        self.retry_at = 0.0  # clock() before which no flush is tried
        self.failing_since: float | None = None  # clock() of the first failure of the current run

    def failed(self, now: float) -> float:
        """A flush failed at `now`: returns the wait before the next try (the backoff, then doubled)."""
        if self.failing_since is None:
            self.failing_since = now
        delay = self.backoff
        self.retry_at = now + delay
        self.backoff = min(delay * 2, BACKOFF_MAX_S)
        return delay

    def recovered(self, now: float) -> float | None:
        """A flush succeeded: reset the backoff. Returns how long flushes had failed, None if they had not."""
        failed_for = None if self.failing_since is None else now - self.failing_since
        self.failing_since = None
        self.backoff = BACKOFF_INITIAL_S
        self.retry_at = 0.0
        return failed_for

    def should_spool(self, now: float, pending_bytes: int, oldest: float) -> bool:
        """While flushes fail: True once the backlog is heavy, or the outage old enough and the backlog
        (whose oldest batch arrived at `oldest`) old enough or a file's worth."""
        if self.failing_since is None or not pending_bytes:
            return False
        heavy = pending_bytes >= self.spool_backlog_bytes
        outage = now - self.failing_since >= self.spool_after_s
        return heavy or (outage and (now - oldest >= SPOOL_EVERY_S or pending_bytes >= self.spool_file_max_bytes))


class Spooler:
    """Acts on the policy: moves the writer's backlog into the spool, and replays the spool once writable.

    Single-threaded like the writer that owns it; `stats` gets the spool gauges and the spool's errors.
    """

    def __init__(self, spool: Spool, stats: WriterStats, *, file_max_bytes: int) -> None:
        self.spool = spool
        self.stats = stats
        self.file_max_bytes = file_max_bytes
        self._full_logged = False
        self.sync()

    def waiting(self) -> bool:
        """True while spool files wait to be replayed."""
        return bool(self.spool.files)

    def sync(self) -> None:
        """Publish the spool's size into stats."""
        self.stats.spooled_batches = self.spool.nbatches
        self.stats.spooled_bytes = self.spool.nbytes

    def spool_pending(self, pending: Pending, ack: Callable[[list[Batch]], None]) -> None:
        """Spool every pending batch, file by file; each file's batches leave `pending` and are acknowledged
        (`ack`) once the file is durable.

        Stops at the first file that does not fit (or a disk error): those batches stay pending and
        unacknowledged, so nothing is dropped; the writer stops accepting once the backlog reaches
        max_pending_bytes and back-pressure takes over.
        """
        for chunk in split_files(pending.all(), self.file_max_bytes):
            estimate = sum(len(b.data) for b in chunk)
            try:
                written = self.spool.write(chunk) if self.spool.fits(estimate) else None
            except OSError as exc:
                self.stats.errors += 1
                self.stats.last_error = f"spool: {exc}"
                log.error("could not spool %d batches (kept in memory): %s", len(chunk), exc)
                break
            if written is None:
                self._refused(len(chunk), estimate)
                break
            self._full_logged = False
            pending.forget(chunk)
            self.sync()
            log.warning("database unavailable: spooled %d batches (%d bytes) to %s", len(chunk), written.nbytes,
                        written.path.name)
            ack(chunk)  # durable now: the workers may forget them

    def _refused(self, nbatches: int, nbytes: int) -> None:
        """The spool is full: count it, log once per episode; the batches stay in memory, unacknowledged."""
        self.stats.spool_full += 1
        self.stats.last_error = "spool full"
        if not self._full_logged:
            log.error("spool full (%d of %d bytes used): %d batches (%d bytes) stay in memory, unacknowledged; "
                      "workers will be held back", self.spool.nbytes, self.spool.max_bytes, nbatches, nbytes)
            self._full_logged = True

    def replay_oldest(self, write: Callable[[str, list[Batch]], object], takes: Callable[[str], bool]) -> None:
        """Commit the oldest spool file's batches (`write`, per table), then delete it. Raises sink.Transient
        (the file stays); batches of tables the back-end does not take (`takes`) are counted as refused.

        Each table's batches go in one transaction; a kill between them and the unlink means the next
        writer loads the file again, and the sink's unique-violation path then adds only what is missing.
        """
        if not self.spool.files:
            return
        f = self.spool.files[0]
        try:
            batches = self.spool.read(f)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as exc:
            dest = self.spool.set_aside(f)
            self.stats.errors += 1
            self.stats.last_error = f"spool: unreadable {f.path.name}: {exc}"
            log.error("spool file %s is unreadable (%s): moved to %s", f.path.name, exc, dest.name)
            self.sync()
            return
        by_table: dict[str, list[Batch]] = {}
        for b in batches:
            if takes(b.table):
                by_table.setdefault(b.table, []).append(b)
            else:
                self.stats.refused_batches += 1
        for table, bs in by_table.items():
            write(table, bs)
        self.spool.remove(f)
        self.sync()
        log.info("replayed spool file %s (%d batches); %d files left", f.path.name, len(batches),
                 len(self.spool.files))


def split_files(batches: list[Batch], max_bytes: int) -> list[list[Batch]]:
    """`batches` cut into files of at most max_bytes (a batch is never split; one larger batch fills a file)."""
    chunks: list[list[Batch]] = [[]]
    size = 0
    for b in batches:
        if chunks[-1] and size + len(b.data) > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(b)
        size += len(b.data)
    return [c for c in chunks if c]
