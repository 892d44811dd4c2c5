"""The writer's counters (WriterStats): what /health, /stats and /metrics learn about commits and failures.

Kept apart from the code that moves the counters (collector.writer.sink, .service, .outage, .maintenance) so that the
publisher (collector.writer.main) and the tests read one plain dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.observability.catalogue import COPY_LATENCY_BUCKETS_S as LATENCY_BUCKETS_S
from collector.pipeline.batches import Batch
from collector.pipeline.encode import CANDLE_TABLES

# EWMA weight of the newest COPY latency: ~the last 10 flushes dominate.
EWMA_ALPHA = 0.1

_COUNT_FIELD = {"trades": "trades", "funding": "funding", "liquidations": "liquidations",
                "open_interest": "open_interest", **{t: "candles" for t in CANDLE_TABLES}}


@dataclass
class WriterStats:
    """Counters for health reporting. Row counts and last_*_time (event ms) move only on commit.

    One field per counter, alike by design (the duplicate finder pairs the count and time fields): the
    publisher copies them by name into the catalogue's writer fields (collector.writer.main)."""

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
        for k in ("rows_written", "batches_written", "jobs_failing"):
            out[k] = dict(out[k])
        out["copy_latency_hist"] = list(self.copy_latency_hist)
        return out

