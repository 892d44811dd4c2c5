"""The writer process: its entry point (run_writer), what the supervisor hands it, and its stats publishing.

Everything here runs in the child: it sets up the process (title, logging, signals, shared memory) and then
runs collector.writer.loop.serve() until the supervisor's stop event is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.observability.catalogue import JOB_PROCS, LATENCY_BUCKET_KEYS, WRITER_KINDS
from collector.runtime.heartbeat import PublishPolicy
from collector.writer.loop import serve
from collector.writer.stats import WriterStats

# Unchanged stats are copied again this often: the writer's heartbeat (collector.runtime.heartbeat), well
# inside health's stats_silent_ms (10 s) and monitoring.heartbeat_timeout_s.
HEARTBEAT_S = 5.0


def stats_signature(st: WriterStats) -> tuple[object, ...]:
    """Changes whenever a value WriterStatsPublisher copies does. Every commit (rows, last event times,
    COPY latencies, histogram) adds to batches_written; the other fields are compared as they are."""
    return (sum(st.batches_written.values()), st.copy_latency_sum_s, st.commit_lag_last_ms, st.errors,
            st.last_error, st.last_error_ms, st.failing_since_ms, st.pending_rows, st.pending_bytes,
            st.spooled_batches, st.spooled_bytes, st.replayed_flushes, st.partitions_created,
            st.partitions_dropped, st.rejected_batches, st.refused_batches, st.schema_ready, st.jobs_checked_ms,
            tuple(sorted(st.jobs_failing.items())))


class WriterStatsPublisher:
    """Copies WriterStats into the writer's shared-memory slot after a loop turn that changed them (a few µs),
    and at least every HEARTBEAT_S."""

    KINDS = WRITER_KINDS

    def __init__(self, slot: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.slot = slot
        self.bucket_keys = LATENCY_BUCKET_KEYS
        self.job_procs = JOB_PROCS
        self.policy = PublishPolicy(HEARTBEAT_S)
        self.clock = clock

    def __call__(self, st: WriterStats) -> None:
        if not self.policy.check(self.clock(), stats_signature(st)):
            return
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
    socket_path: str  # where the workers connect (collector.transport.server)
    stop: Any  # multiprocessing Event
    stats_name: str | None = None  # the supervisor's shared-memory statistics block


def run_writer(spec: WriterSpec) -> None:
    """Process entry point: configure this child (title, logging, signals), then serve() until stopped.

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
          max_age_s=cfg.writer.commit_wait_ms / 1000, spool_dir=Path(cfg.writer.spool_dir),
          spool_max_bytes=cfg.writer.spool_max_mb << 20)
