"""The metric catalogue: every counter a worker or the writer publishes, declared once.

Why one catalogue: the shared-memory value lists (collector.runtime.shm), the /stats document
(observability.stats), the Prometheus families (observability.metrics) and the status page all describe
the same counters. Declared here once, a new counter is a single entry that reaches every one of them,
and a name the catalogue does not know fails loudly where it is published (ProcessSlot.set/update raise).

An entry is a scalar field ("errors") or a labelled group ("received" with keys "trades", "funding", ...,
published as the fields "received.trades", ...; exported as one family with one label). Each entry says
how it is exported (family, type, scale: 0.001 turns milliseconds into the seconds Prometheus expects)
and where /stats shows it in its child's section (a JSON path, None = not shown there) and as what
(a number, an ISO time, a boolean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from collector.db.timescale import POLICY_PROCS
from collector.pipeline.encode import COLUMNS
from collector.pipeline.trade_filter import REASONS

Kind = Literal["counter", "gauge", "histogram"]
JsonAs = Literal["num", "iso", "bool"]

# What a worker receives, by type (the keys of Pipeline.received and Pipeline.last_event_ms).
DATA_TYPES = ("trades", "funding", "liquidations", "klines", "open_interest")
# Tables a worker encodes rows for (the keys of Pipeline.rows).
WORKER_TABLES = ("trades", "funding", "liquidations", "open_interest", "candles_1m", "gaps")
# Bad input a worker skips, by kind: the pipeline's checks (pipeline.router) and the frames the feed
# cannot decode (feed.source, Pipeline.on_bad_frame), the OKX and Bybit decoders' among them
# (feed.venues: a venue's error or notice answer, a channel or topic it does not serve, an unknown side).
REJECT_KINDS = ("unknown_symbol", "bad_number", "non_positive_or_infinite", "absurd_timestamp",
                "duplicate_or_old_id", "gap", "malformed_json", "invalid_frame", "unknown_event",
                "handler_error", "unexpected_interval", "invalid_open_interest", "venue_error", "venue_notice",
                "unknown_channel", "unknown_side")
BACKFILL_KINDS = ("trades", "candles", "gaps_filled", "gaps_unfilled")
# Tables the writer copies into: every COPY target.
WRITER_TABLES = tuple(COLUMNS)
# Kinds whose newest committed event time the writer reports (WriterStats.last_<kind>_time).
WRITER_KINDS = ("trades", "funding", "liquidations", "open_interest", "candles")
# Upper bounds (s) of the COPY latency histogram (the writer counts into these); the bucket after the last
# one counts everything slower.
COPY_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKET_KEYS = tuple(repr(b) for b in COPY_LATENCY_BUCKETS_S) + ("+Inf",)
# TimescaleDB policy procedures the writer reports failures of.
JOB_PROCS = POLICY_PROCS

_MS = 0.001


@dataclass(frozen=True, slots=True)
class Entry:
    """One scalar field, or one group of fields "name.key" exported as one family labelled `label`."""

    name: str
    metric: str | None  # the Prometheus family; None: exported as part of another entry (the histogram's sum)
    kind: Kind
    help: str
    label: str | None = None  # the group's label name; None for a scalar
    keys: tuple[str, ...] = ()  # the group's label values
    scale: float = 1.0
    json: tuple[str, ...] | None = None  # where /stats shows it in its child's section; None = not shown
    json_as: JsonAs = "num"

    @property
    def fields(self) -> tuple[str, ...]:
        """The shared-memory field names of this entry, in order."""
        return tuple(f"{self.name}.{k}" for k in self.keys) if self.label is not None else (self.name,)


def _group(name: str, label: str, keys: tuple[str, ...], metric: str, kind: Kind, help_: str, *,
           scale: float = 1.0, json: tuple[str, ...] | None = None, json_as: JsonAs = "num") -> Entry:
    return Entry(name, metric, kind, help_, label, keys, scale, json, json_as)


# The catalogue's rows are alike by design (the duplicate finder pairs runs of them): one row per metric.
WORKER: tuple[Entry, ...] = (
    _group("received", "type", DATA_TYPES, "collector_worker_received_total", "counter",
           "Events received from the exchange", json=("received",)),
    _group("kept", "reason", REASONS, "collector_worker_kept_total", "counter",
           "Trades kept by the filter, by save_reason", json=("kept",)),
    _group("rows", "table", WORKER_TABLES, "collector_worker_rows_total", "counter", "Rows encoded for the writer",
           json=("rows",)),
    _group("rejected", "reason", REJECT_KINDS, "collector_worker_rejected_total", "counter",
           "Bad input skipped, by kind", json=("rejected",)),
    Entry("reconnects", "collector_worker_reconnects_total", "counter", "WebSocket reconnections",
          json=("reconnects",)),
    Entry("watchdog_trips", "collector_worker_watchdog_trips_total", "counter", "Silent streams restarted",
          json=("watchdog_trips",)),
    Entry("last_reconnect_ms", "collector_worker_last_reconnect_timestamp_seconds", "gauge",
          "Time of the last reconnection", scale=_MS),
    Entry("last_watchdog_ms", "collector_worker_last_watchdog_timestamp_seconds", "gauge",
          "Time of the last silent-stream restart", scale=_MS, json=("last_watchdog_time",), json_as="iso"),
    _group("last_event_ms", "type", DATA_TYPES, "collector_worker_last_event_timestamp_seconds", "gauge",
           "Newest event time received", scale=_MS, json=("last_event_time",), json_as="iso"),
    Entry("outbox_batches", "collector_worker_outbox_batches_total", "counter", "Batches handed to the writer",
          json=("outbox", "batches")),
    Entry("outbox_pending_batches", "collector_worker_outbox_pending_batches", "gauge",
          "Batches held while the writer's queue is full", json=("outbox", "pending_batches")),
    Entry("outbox_pending_bytes", "collector_worker_outbox_pending_bytes", "gauge",
          "Bytes held while the writer's queue is full", json=("outbox", "pending_bytes")),
    Entry("paused", "collector_worker_paused", "gauge", "1 while reading is paused by back-pressure",
          json=("paused",), json_as="bool"),
    Entry("symbols", "collector_worker_symbols", "gauge", "Symbols owned by the worker"),
    Entry("late_dropped", "collector_worker_activity_late_dropped_total", "counter",
          "Trades too old for the activity window"),
    Entry("rest_paused_until_ms", "collector_worker_rest_paused_until_seconds", "gauge",
          "REST requests paused by a 429/418 until this Unix time (0: not paused)", scale=_MS,
          json=("rest_paused_until",), json_as="iso"),
    _group("backfilled", "kind", BACKFILL_KINDS, "collector_worker_backfilled_total", "counter",
           "Repaired over REST: trades, candles, gaps filled or given up", json=("backfilled",)),
    Entry("activity_published_ms", "collector_worker_activity_published_seconds", "gauge",
          "When the per-symbol statistics and resume points were last published", scale=_MS,
          json=("activity_published_at",), json_as="iso"),
)

# The COPY latency histogram: per-bucket counts (not cumulative) plus the sum, rendered as one family.
COPY_HISTOGRAM = "collector_writer_copy_latency_seconds"
COPY_HISTOGRAM_SUM = "copy_latency_sum_s"

WRITER: tuple[Entry, ...] = (
    _group("rows", "table", WRITER_TABLES, "collector_writer_rows_total", "counter", "Rows committed",
           json=("rows",)),
    _group("batches", "table", WRITER_TABLES, "collector_writer_batches_total", "counter", "Batches committed",
           json=("batches",)),
    Entry("errors", "collector_writer_errors_total", "counter", "Failed flushes, maintenance or rollups",
          json=("errors",)),
    Entry("last_error_ms", "collector_writer_last_error_timestamp_seconds", "gauge", "Time of the last error",
          scale=_MS, json=("last_error_time",), json_as="iso"),
    Entry("failing_since_ms", "collector_writer_failing_since_timestamp_seconds", "gauge",
          "Start of the current run of failed flushes, 0 when healthy", scale=_MS, json=("failing_since",),
          json_as="iso"),
    _group("last_event_ms", "type", WRITER_KINDS, "collector_writer_last_event_timestamp_seconds", "gauge",
           "Newest committed event time", scale=_MS, json=("last_event_time",), json_as="iso"),
    Entry("copy_latency_last_s", "collector_writer_copy_latency_last_seconds", "gauge", "Duration of the last COPY",
          json=("copy_latency", "last_s")),
    Entry("copy_latency_ewma_s", "collector_writer_copy_latency_ewma_seconds", "gauge",
          "Moving average of COPY duration", json=("copy_latency", "ewma_s")),
    Entry(COPY_HISTOGRAM_SUM, None, "histogram", "Sum of COPY durations (the histogram's _sum)"),
    _group("copy_latency_bucket", "le", LATENCY_BUCKET_KEYS, COPY_HISTOGRAM, "histogram", "Duration of COPY flushes",
           json=("copy_latency", "buckets")),
    Entry("commit_lag_ms", "collector_writer_commit_lag_seconds", "gauge",
          "Commit time minus creation of the oldest batch in the last COPY", scale=_MS, json=("commit_lag_ms",)),
    Entry("pending_rows", "collector_writer_pending_rows", "gauge", "Rows waiting to be written",
          json=("pending", "rows")),
    Entry("pending_bytes", "collector_writer_pending_bytes", "gauge", "Bytes waiting to be written",
          json=("pending", "bytes")),
    Entry("spooled_batches", "collector_writer_spooled_batches", "gauge", "Batches in the disk spool",
          json=("spooled", "batches")),
    Entry("spooled_bytes", "collector_writer_spooled_bytes", "gauge", "Bytes in the disk spool",
          json=("spooled", "bytes")),
    Entry("replayed_flushes", "collector_writer_replayed_flushes_total", "counter",
          "Flushes recovered through ON CONFLICT after an unknown commit outcome", json=("replayed_flushes",)),
    Entry("partitions_created", "collector_writer_partitions_created_total", "counter", "Partitions created",
          json=("partitions", "created")),
    Entry("partitions_dropped", "collector_writer_partitions_dropped_total", "counter",
          "Partitions dropped by retention", json=("partitions", "dropped")),
    Entry("rejected_batches", "collector_writer_rejected_batches_total", "counter",
          "Batches refused by the database, sent to the dead-letter spool", json=("rejected_batches",)),
    Entry("refused_batches", "collector_writer_refused_batches_total", "counter",
          "Batches for unknown or derived tables", json=("refused_batches",)),
    Entry("schema_ready", "collector_writer_schema_ready", "gauge",
          "1 once the database was reached and the schema ensured", json=("schema_ready",), json_as="bool"),
    Entry("jobs_checked_ms", "collector_timescaledb_jobs_checked_timestamp_seconds", "gauge",
          "When the writer last read TimescaleDB job_stats (on plain PostgreSQL: found none)", scale=_MS,
          json=("timescaledb_jobs", "checked_at"), json_as="iso"),
    _group("jobs_failing", "proc", JOB_PROCS, "collector_timescaledb_jobs_failing", "gauge",
           "The collector's TimescaleDB policy jobs whose last run failed, by procedure",
           json=("timescaledb_jobs", "failing")),
)

CATALOGUE: dict[str, tuple[Entry, ...]] = {"worker": WORKER, "writer": WRITER}


def fields_of(entries: tuple[Entry, ...]) -> tuple[str, ...]:
    """The shared-memory value list of a role: every entry's fields, in catalogue order."""
    return tuple(f for e in entries for f in e.fields)


WORKER_FIELDS = fields_of(WORKER)
WRITER_FIELDS = fields_of(WRITER)


def _check(entries: tuple[Entry, ...]) -> None:
    """Catalogue mistakes fail at import, not as a silently wrong /metrics."""
    fields = fields_of(entries)
    if len(fields) != len(set(fields)):
        raise ValueError("the metric catalogue names a field twice")
    for e in entries:
        # prometheus_client exposes a counter family under its name with "_total": only such names survive.
        if e.kind == "counter" and not (e.metric or "").endswith("_total"):
            raise ValueError(f"counter {e.name}: its metric {e.metric!r} must end in _total")
        if (e.label is None) != (not e.keys):
            raise ValueError(f"{e.name}: a group has a label and keys, a scalar neither")


_check(WORKER)
_check(WRITER)
