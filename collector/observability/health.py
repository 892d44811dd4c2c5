"""/health, /stats, /metrics and a status page at /: what the supervisor and its children know, over HTTP.

Everything but HealthServer is pure: the supervisor builds a plain-dict snapshot (build_snapshot) from
the shared-memory stats block and its own bookkeeping, and health(), stats_json() and render_metrics()
only read that dict, so each is tested with hand-made snapshots and no processes. The server runs in a
daemon thread of the supervisor and calls back for a fresh snapshot per request; a failing callback
answers 500 and never takes the server (or the supervisor) down.

Snapshot shape (all times in ms since the epoch, JSON-serialisable):
    {"now_ms": int,
     "supervisor": {"pid": int, "started_ms": int | None},
     "children": [{"role": "writer" | "worker", "slot": int, "pid": int | None, "alive": bool,
                   "restarts": int, "symbols": int, "started_ms": int | None,
                   "stats": {field: float} | None,  # the slot's values (stats.WRITER_FIELDS / WORKER_FIELDS)
                   "stats_pid": int | None, "stats_updated_ms": int | None, "stats_stale": bool,
                   "text": str}],  # the slot's text: the child's last error, verbatim ("" = none)
     "tiers": {"computed_ms": int | None, "counts": {"0": int, ...},
               "thresholds": {"0": {"min": float, "max": float}, ...},  # finite large-trade thresholds (USD)
               "top": [{"symbol": str, "tier": int, "threshold_usd": float, "score": float}]} | None}
"thresholds" and "top" were added later: readers must accept a tiers dict without them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from collector.observability.status_page import STATUS_PAGE_HTML
from collector.pipeline.tiers import TierAssignment
from collector.runtime.shm import (
    LATENCY_BUCKET_KEYS,
    WRITER_KINDS,
    StatsBlock,
)

log = logging.getLogger(__name__)

# Symbols listed with their threshold in /stats (tiers.top): enough to cover tier 0 of the full Binance
# universe (2% of ~500 = 10), few enough that the document stays small when polled every 2 s.
TOP_TIER_SYMBOLS = 10

Snapshot = dict[str, Any]


# --- the snapshot ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """What the supervisor knows about one child, whatever the child published."""

    role: str  # "writer" or "worker"
    slot: int  # its process slot in the stats block: 0 for the writer, worker number (1..N) for workers
    pid: int | None  # None while it is down
    alive: bool  # False while dead or waiting for its restart
    restarts: int = 0
    symbols: int = 0  # symbols assigned (workers)
    started_ms: int | None = None  # when the current process was started


def build_snapshot(block: StatsBlock | None, children: Iterable[ChildInfo],
                   tiers: Mapping[str, TierAssignment] | None, now_ms: int, *,
                   tiers_computed_ms: int | None = None, started_ms: int | None = None) -> Snapshot:
    """Read every child's slot once (lock-free) and combine it with the supervisor's view."""
    out_children = []
    for c in children:
        reading = block.read(c.slot) if block is not None else None
        out_children.append({
            "role": c.role, "slot": c.slot, "pid": c.pid, "alive": c.alive, "restarts": c.restarts,
            "symbols": c.symbols, "started_ms": c.started_ms,
            "stats": None if reading is None or reading.stale else reading.values,
            "stats_pid": None if reading is None else reading.pid,
            "stats_updated_ms": None if reading is None else reading.updated_ms,
            "stats_stale": reading is not None and reading.stale,
            "text": "" if reading is None or reading.stale else reading.text,
        })
    tier_info = None
    if tiers is not None:
        counts = Counter(str(a.tier) for a in tiers.values())
        tier_info = {"computed_ms": tiers_computed_ms, "counts": dict(sorted(counts.items())),
                     "thresholds": _tier_thresholds(tiers), "top": _top_symbols(tiers)}
    return {"now_ms": now_ms, "supervisor": {"pid": os.getpid(), "started_ms": started_ms},
            "children": out_children, "tiers": tier_info}


def _tier_thresholds(tiers: Mapping[str, TierAssignment]) -> dict[str, dict[str, float]]:
    """Range of finite thresholds per tier: an infinite one only means "no trades seen yet"."""
    by_tier: dict[str, list[float]] = {}
    for a in tiers.values():
        if math.isfinite(a.threshold_usd):
            by_tier.setdefault(str(a.tier), []).append(a.threshold_usd)
    return {t: {"min": min(v), "max": max(v)} for t, v in sorted(by_tier.items())}


def _top_symbols(tiers: Mapping[str, TierAssignment]) -> list[dict[str, Any]]:
    """The highest-scoring symbols (ties by name, so the list is stable between polls)."""
    best = sorted(tiers.items(), key=lambda kv: (-kv[1].score, kv[0]))[:TOP_TIER_SYMBOLS]
    return [{"symbol": s, "tier": a.tier, "threshold_usd": a.threshold_usd, "score": a.score}
            for s, a in best]


def _name(c: Mapping[str, Any]) -> str:
    return "writer" if c["role"] == "writer" else f"{c['role']} {c['slot']}"


def _own_stats(c: Mapping[str, Any]) -> Mapping[str, float] | None:
    """The child's published values, only if its current process published them: a dead child's or a
    predecessor's numbers would pass for live ones (and reset under the reader when the new process starts)."""
    if c["stats"] is None or c["pid"] is None or c["stats_pid"] != c["pid"]:
        return None
    return c["stats"]


# --- /health ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    # A child younger than this has not had time to connect, subscribe and publish: judged on liveness only.
    startup_grace_ms: int = 30_000
    # Children publish every 0.2..0.5 s; 10 s of silence is 20+ missed publishes: a hung loop, not a blip.
    stats_silent_ms: int = 10_000
    # Every symbol sends a mark price every 1-3 s, so a minute without any event on a worker that has
    # symbols means its connections are dead even if they look open.
    no_event_ms: int = 60_000
    # A silent-stream restart (watchdog trip) this recent is reported: data was lost or delayed.
    watchdog_window_ms: int = 300_000
    # Flushes retry with backoff capped at 30 s: failing for longer is an outage, not a dropped connection.
    writer_failing_ms: int = 30_000
    # Half the writer's MAX_PENDING_BYTES (256 MB): warn before back-pressure reaches the workers.
    max_pending_bytes: float = 128 * 1024 * 1024
    # Any batch sitting in the spool means rows are not in the database yet.
    max_spooled_batches: float = 0
    # Event-to-commit normally stays under 1 s; 10 s means the database cannot keep up.
    max_commit_lag_ms: float = 10_000


def health(snapshot: Snapshot, now_ms: int, thresholds: HealthThresholds = HealthThresholds()
           ) -> tuple[bool, list[str]]:
    """(ok, reasons): ok only if every child is up, publishing, receiving and writing."""
    th = thresholds
    reasons: list[str] = []
    for c in snapshot["children"]:
        name = _name(c)
        if not c["alive"]:
            reasons.append(f"{name} is down (restarting; {c['restarts']} restarts so far)")
            continue
        if c["stats_stale"]:
            reasons.append(f"{name}: stats slot stale (a process died while publishing)")
            continue
        started = c["started_ms"]
        settled = started is None or now_ms - started >= th.startup_grace_ms
        s = _own_stats(c)
        if s is None:
            reasons.append(f"{name} has published no statistics since it started" if settled
                           else f"{name} is starting")
            continue
        if settled and now_ms - c["stats_updated_ms"] > th.stats_silent_ms:
            reasons.append(f"{name} has not published statistics for {(now_ms - c['stats_updated_ms']) / 1000:.0f} s"
                           " (hung?)")
        if c["role"] == "writer":
            reasons.extend(_writer_reasons(s, now_ms, th, c.get("text", "")))
        else:
            reasons.extend(_worker_reasons(name, c, s, now_ms, settled, th))
    return not reasons, reasons


def _writer_reasons(s: Mapping[str, float], now_ms: int, th: HealthThresholds, error: str = "") -> list[str]:
    """Writer problems; a failing writer's reason carries its last error verbatim (the server's message and
    the fix, see dbsetup.describe), so /health says why, not only that."""
    out = []
    failing = s.get("failing_since_ms", 0)
    never_wrote = not any(v for k, v in s.items() if k.startswith("batches."))
    why = f": {error}" if error else ""
    if not s.get("schema_ready", 1):  # (1 for a slot written before the field existed)
        out.append("writer is connecting to the database" if not failing else
                   f"writer: no database for {(now_ms - failing) / 1000:.0f} s{why}")
    elif failing and never_wrote:  # no grace: it has not reached the database once since it started
        out.append(f"writer: cannot write to the database yet ({(now_ms - failing) / 1000:.0f} s){why}")
    elif failing and now_ms - failing > th.writer_failing_ms:
        out.append(f"writer: flushes failing for {(now_ms - failing) / 1000:.0f} s ({s.get('errors', 0):.0f} errors)"
                   f"{why}")
    if s.get("pending_bytes", 0) > th.max_pending_bytes:
        out.append(f"writer: {s['pending_bytes'] / 2**20:.0f} MB waiting to be written")
    if s.get("spooled_batches", 0) > th.max_spooled_batches:
        out.append(f"writer: {s['spooled_batches']:.0f} batches spooled to disk, not in the database")
    if s.get("commit_lag_ms", 0) > th.max_commit_lag_ms:
        out.append(f"writer: commit lag {s['commit_lag_ms'] / 1000:.1f} s")
    jobs = {k: v for k, v in _group(s, "jobs_failing").items() if v}
    if jobs:  # retention, compression or roll-ups silently stopped inside the database
        out.append(f"TimescaleDB: {sum(jobs.values()):.0f} collector policy jobs failed their last run ("
                   + ", ".join(f"{p} {n:.0f}" for p, n in sorted(jobs.items()))
                   + "); `python -m collector check` prints each job's error")
    return out


def _worker_reasons(name: str, c: Mapping[str, Any], s: Mapping[str, float], now_ms: int, settled: bool,
                    th: HealthThresholds) -> list[str]:
    out = []
    symbols = max(c["symbols"], s.get("symbols", 0))
    last = max((v for k, v in s.items() if k.startswith("last_event_ms.")), default=0)
    if symbols and not last and not settled:
        out.append(f"{name} is starting: no data received yet")
    since = last or c["started_ms"]
    if symbols and settled and since is not None and now_ms - since > th.no_event_ms:
        out.append(f"{name}: no event received for {(now_ms - since) / 1000:.0f} s ({symbols:.0f} symbols)")
    trip = s.get("last_watchdog_ms", 0)
    if trip and now_ms - trip <= th.watchdog_window_ms:
        out.append(f"{name}: a silent stream was restarted {(now_ms - trip) / 1000:.0f} s ago "
                   f"({s.get('watchdog_trips', 0):.0f} so far)")
    if s.get("paused"):
        out.append(f"{name}: reading paused, the writer is behind ({s.get('outbox_pending_bytes', 0) / 2**20:.0f} MB"
                   " held)")
    return out


# --- /stats ----------------------------------------------------------------------------------------------------


def iso(ms: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, or None for a time that never happened (None or 0)."""
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _group(s: Mapping[str, float] | None, prefix: str) -> dict[str, float]:
    if not s:
        return {}
    n = len(prefix) + 1
    return {k[n:]: _num(v) for k, v in s.items() if k.startswith(prefix + ".")}


def _num(v: float) -> float | int | None:
    """Whole numbers as ints (counters read better), non-finite values as null (JSON has no NaN)."""
    if not math.isfinite(v):
        return None
    return int(v) if v == int(v) else v


def stats_json(snapshot: Snapshot) -> dict[str, Any]:
    """The /stats document: totals, one section per worker, the writer, the supervisor.

    Row counts and last_*_time in totals are the writer's (committed rows, so they survive worker
    restarts); received/kept/rejected are summed over the workers' current processes (a restarted
    worker starts again from 0).
    """
    children = snapshot["children"]
    writer = next((c for c in children if c["role"] == "writer"), None)
    ws = _own_stats(writer) if writer is not None else None
    ws = ws or {}
    rows = _group(ws, "rows")
    last = _group(ws, "last_event_ms")
    totals: dict[str, Any] = {
        "trades_count": rows.get("trades", 0), "funding_count": rows.get("funding", 0),
        "liquidations_count": rows.get("liquidations", 0), "open_interest_count": rows.get("open_interest", 0),
        "candles_count": sum(v for k, v in rows.items() if k.startswith("candles_")),
        "errors": _num(ws.get("errors", 0)),
        **{f"last_{k}_time": iso(last.get(k)) for k in WRITER_KINDS},
    }
    workers = []
    sums: dict[str, Counter[str]] = {"kept": Counter(), "received": Counter(), "rejected": Counter(),
                                     "backfilled": Counter()}
    for c in children:
        if c["role"] == "writer":
            continue
        s = _own_stats(c)
        for g, acc in sums.items():
            acc.update(_group(s, g))
        workers.append(_worker_json(c, s))
    totals.update({g: dict(acc) for g, acc in sums.items()})
    sup = snapshot["supervisor"]
    now = snapshot["now_ms"]
    tiers = snapshot.get("tiers")
    return {
        "totals": totals,
        "workers": workers,
        "writer": _writer_json(writer, ws),
        "supervisor": {
            "pid": sup.get("pid"),
            "started_at": iso(sup.get("started_ms")),
            "uptime_s": None if not sup.get("started_ms") else round((now - sup["started_ms"]) / 1000, 3),
            "restarts": {_name(c): c["restarts"] for c in children},
            "tiers": None if tiers is None else _tiers_json(tiers),
        },
        "generated_at": iso(now),
    }


def _tiers_json(tiers: Mapping[str, Any]) -> dict[str, Any]:
    return {"computed_at": iso(tiers.get("computed_ms")), "count": dict(tiers["counts"]),
            "thresholds": {t: {k: _num(v) for k, v in r.items()}
                           for t, r in tiers.get("thresholds", {}).items()},
            "top": [{**t, "threshold_usd": _num(t["threshold_usd"]), "score": _num(t["score"])}
                    for t in tiers.get("top", [])]}


def _child_json(c: Mapping[str, Any]) -> dict[str, Any]:
    return {"pid": c["pid"], "alive": c["alive"], "restarts": c["restarts"], "started_at": iso(c["started_ms"]),
            "stats_updated_at": iso(c["stats_updated_ms"]), "stats_stale": c["stats_stale"]}


def _worker_json(c: Mapping[str, Any], s: Mapping[str, float] | None) -> dict[str, Any]:
    g = s or {}
    return {
        "worker": c["slot"], **_child_json(c), "symbols": c["symbols"],
        "received": _group(s, "received"), "kept": _group(s, "kept"), "rows": _group(s, "rows"),
        "rejected": _group(s, "rejected"), "backfilled": _group(s, "backfilled"),
        "rest_paused_until": iso(g.get("rest_paused_until_ms") or None),
        "activity_published_at": iso(g.get("activity_published_ms") or None),
        "last_event_time": {k: iso(v) for k, v in _group(s, "last_event_ms").items()},
        "reconnects": _num(g.get("reconnects", 0)), "watchdog_trips": _num(g.get("watchdog_trips", 0)),
        "last_watchdog_time": iso(g.get("last_watchdog_ms")),
        "outbox": {"batches": _num(g.get("outbox_batches", 0)), "bytes": _num(g.get("outbox_bytes", 0)),
                   "pending_batches": _num(g.get("outbox_pending_batches", 0)),
                   "pending_bytes": _num(g.get("outbox_pending_bytes", 0))},
        "queue_full": _num(g.get("queue_full", 0)), "paused": bool(g.get("paused", 0)),
    }


def _writer_json(c: Mapping[str, Any] | None, s: Mapping[str, float]) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        **_child_json(c),
        "rows": _group(s, "rows"), "batches": _group(s, "batches"), "errors": _num(s.get("errors", 0)),
        "last_error": c.get("text") or None,  # verbatim: the server's message and the fix when known
        "last_error_time": iso(s.get("last_error_ms")), "failing_since": iso(s.get("failing_since_ms")),
        "last_event_time": {k: iso(v) for k, v in _group(s, "last_event_ms").items()},
        "copy_latency": {"last_s": _num(s.get("copy_latency_last_s", 0.0)),
                         "ewma_s": _num(s.get("copy_latency_ewma_s", 0.0)),
                         "buckets": _group(s, "copy_latency_bucket")},
        "commit_lag_ms": _num(s.get("commit_lag_ms", 0)),
        "pending": {"rows": _num(s.get("pending_rows", 0)), "bytes": _num(s.get("pending_bytes", 0))},
        "spooled": {"batches": _num(s.get("spooled_batches", 0)), "bytes": _num(s.get("spooled_bytes", 0))},
        "replayed_flushes": _num(s.get("replayed_flushes", 0)),
        "partitions": {"created": _num(s.get("partitions_created", 0)),
                       "dropped": _num(s.get("partitions_dropped", 0))},
        "rejected_batches": _num(s.get("rejected_batches", 0)), "refused_batches": _num(s.get("refused_batches", 0)),
        "queue_depth": _num(s.get("queue_depth", 0)), "schema_ready": bool(s.get("schema_ready", 0)),
        "timescaledb_jobs": {"checked_at": iso(s.get("jobs_checked_ms")), "failing": _group(s, "jobs_failing")},
    }


# --- /metrics --------------------------------------------------------------------------------------------------

# field (or "group." prefix) -> (metric family, type, label for the group key, scale, help).
# Scale 0.001 turns ms into the seconds Prometheus expects. Every field of stats.WORKER_FIELDS and
# WRITER_FIELDS must be covered here (a test checks), so a new counter cannot silently go unexported.
_MS = 0.001
WORKER_METRICS: dict[str, tuple[str, str, str | None, float, str]] = {
    "received.": ("collector_worker_received_total", "counter", "type", 1, "Events received from the exchange"),
    "kept.": ("collector_worker_kept_total", "counter", "reason", 1, "Trades kept by the filter, by save_reason"),
    "rows.": ("collector_worker_rows_total", "counter", "table", 1, "Rows encoded for the writer"),
    "rejected.": ("collector_worker_rejected_total", "counter", "reason", 1, "Bad input skipped, by kind"),
    "last_event_ms.": ("collector_worker_last_event_timestamp_seconds", "gauge", "type", _MS,
                       "Newest event time received"),
    "reconnects": ("collector_worker_reconnects_total", "counter", None, 1, "WebSocket reconnections"),
    "watchdog_trips": ("collector_worker_watchdog_trips_total", "counter", None, 1, "Silent streams restarted"),
    "last_reconnect_ms": ("collector_worker_last_reconnect_timestamp_seconds", "gauge", None, _MS,
                          "Time of the last reconnection"),
    "last_watchdog_ms": ("collector_worker_last_watchdog_timestamp_seconds", "gauge", None, _MS,
                         "Time of the last silent-stream restart"),
    "outbox_batches": ("collector_worker_outbox_batches_total", "counter", None, 1, "Batches handed to the writer"),
    "outbox_bytes": ("collector_worker_outbox_bytes_total", "counter", None, 1, "Bytes handed to the writer"),
    "outbox_pending_batches": ("collector_worker_outbox_pending_batches", "gauge", None, 1,
                               "Batches held while the writer's queue is full"),
    "outbox_pending_bytes": ("collector_worker_outbox_pending_bytes", "gauge", None, 1,
                             "Bytes held while the writer's queue is full"),
    "queue_full": ("collector_worker_queue_full_total", "counter", None, 1, "Times the writer's queue was full"),
    "paused": ("collector_worker_paused", "gauge", None, 1, "1 while reading is paused by back-pressure"),
    "symbols": ("collector_worker_symbols", "gauge", None, 1, "Symbols owned by the worker"),
    "late_dropped": ("collector_worker_activity_late_dropped_total", "counter", None, 1,
                     "Trades too old for the activity window"),
    "rest_paused_until_ms": ("collector_worker_rest_paused_until_seconds", "gauge", None, 0.001,
                             "REST requests paused by a 429/418 until this Unix time (0: not paused)"),
    "backfilled.": ("collector_worker_backfilled_total", "counter", "kind", 1,
                    "Repaired over REST: trades, candles, gaps filled or given up"),
    "activity_published_ms": ("collector_worker_activity_published_seconds", "gauge", None, 0.001,
                              "When the per-symbol statistics and resume points were last published"),
}
WRITER_METRICS: dict[str, tuple[str, str, str | None, float, str]] = {
    "rows.": ("collector_writer_rows_total", "counter", "table", 1, "Rows committed"),
    "batches.": ("collector_writer_batches_total", "counter", "table", 1, "Batches committed"),
    "last_event_ms.": ("collector_writer_last_event_timestamp_seconds", "gauge", "type", _MS,
                       "Newest committed event time"),
    "errors": ("collector_writer_errors_total", "counter", None, 1, "Failed flushes, maintenance or rollups"),
    "last_error_ms": ("collector_writer_last_error_timestamp_seconds", "gauge", None, _MS, "Time of the last error"),
    "failing_since_ms": ("collector_writer_failing_since_timestamp_seconds", "gauge", None, _MS,
                         "Start of the current run of failed flushes, 0 when healthy"),
    "copy_latency_last_s": ("collector_writer_copy_latency_last_seconds", "gauge", None, 1,
                            "Duration of the last COPY"),
    "copy_latency_ewma_s": ("collector_writer_copy_latency_ewma_seconds", "gauge", None, 1,
                            "Moving average of COPY duration"),
    "commit_lag_ms": ("collector_writer_commit_lag_seconds", "gauge", None, _MS,
                      "Commit time minus creation of the oldest batch in the last COPY"),
    "pending_rows": ("collector_writer_pending_rows", "gauge", None, 1, "Rows waiting to be written"),
    "pending_bytes": ("collector_writer_pending_bytes", "gauge", None, 1, "Bytes waiting to be written"),
    "spooled_batches": ("collector_writer_spooled_batches", "gauge", None, 1, "Batches in the disk spool"),
    "spooled_bytes": ("collector_writer_spooled_bytes", "gauge", None, 1, "Bytes in the disk spool"),
    "replayed_flushes": ("collector_writer_replayed_flushes_total", "counter", None, 1,
                         "Flushes recovered through ON CONFLICT after an unknown commit outcome"),
    "partitions_created": ("collector_writer_partitions_created_total", "counter", None, 1, "Partitions created"),
    "partitions_dropped": ("collector_writer_partitions_dropped_total", "counter", None, 1,
                           "Partitions dropped by retention"),
    "rejected_batches": ("collector_writer_rejected_batches_total", "counter", None, 1,
                         "Batches refused by the database, sent to the dead-letter spool"),
    "refused_batches": ("collector_writer_refused_batches_total", "counter", None, 1,
                        "Batches for unknown or derived tables"),
    "queue_depth": ("collector_writer_queue_depth", "gauge", None, 1, "Batches waiting in the queue"),
    "schema_ready": ("collector_writer_schema_ready", "gauge", None, 1,
                     "1 once the database was reached and the schema ensured"),
    "jobs_checked_ms": ("collector_timescaledb_jobs_checked_timestamp_seconds", "gauge", None, _MS,
                        "When the writer last read TimescaleDB job_stats (on plain PostgreSQL: found none)"),
    "jobs_failing.": ("collector_timescaledb_jobs_failing", "gauge", "proc", 1,
                      "The collector's TimescaleDB policy jobs whose last run failed, by procedure"),
}
# Rendered together as one histogram, not field by field.
_HISTOGRAM_FIELDS = ("copy_latency_bucket.", "copy_latency_sum_s")
_COPY_HISTOGRAM = "collector_writer_copy_latency_seconds"


def metric_spec(role: str, field: str) -> tuple[str, str, str | None, float, str] | None:
    """The metric a field is exported as; None for the COPY latency histogram's parts (rendered whole)."""
    table = WORKER_METRICS if role == "worker" else WRITER_METRICS
    if field in table:
        return table[field]
    prefix = field.split(".", 1)[0] + "."
    if prefix in table:
        return table[prefix]
    if field in _HISTOGRAM_FIELDS or prefix in _HISTOGRAM_FIELDS:
        return None
    raise KeyError(f"{role} field {field!r} has no metric")


def escape_label_value(v: str) -> str:
    """Escape a label value per the text format 0.0.4: backslash, double quote and line feed."""
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v == int(v) and abs(v) < 2**53 else repr(v)


class _Families:
    def __init__(self) -> None:
        self.meta: dict[str, tuple[str, str]] = {}
        self.samples: dict[str, list[tuple[str, dict[str, str], float]]] = {}

    def add(self, family: str, kind: str, help_: str, labels: dict[str, str], value: float,
            suffix: str = "") -> None:
        self.meta.setdefault(family, (kind, help_))
        self.samples.setdefault(family, []).append((family + suffix, labels, value))

    def render(self) -> str:
        out = []
        for family, (kind, help_) in self.meta.items():
            out.append(f"# HELP {family} {_escape_help(help_)}")
            out.append(f"# TYPE {family} {kind}")
            for name, labels, value in self.samples[family]:
                lab = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels.items())
                out.append(f"{name}{{{lab}}} {_fmt(value)}" if lab else f"{name} {_fmt(value)}")
        return "\n".join(out) + "\n"


def render_metrics(snapshot: Snapshot) -> str:
    """The Prometheus text exposition format 0.0.4 of a snapshot."""
    fam = _Families()
    now = snapshot["now_ms"]
    sup = snapshot["supervisor"]
    if sup.get("started_ms"):
        fam.add("collector_uptime_seconds", "gauge", "Seconds since the supervisor started", {},
                (now - sup["started_ms"]) / 1000)
    for c in snapshot["children"]:
        ident = {"role": c["role"]} if c["role"] == "writer" else {"role": c["role"], "worker": str(c["slot"])}
        fam.add("collector_child_up", "gauge", "1 while the child process is running", ident, 1 if c["alive"] else 0)
        fam.add("collector_child_restarts_total", "counter", "Times the supervisor restarted the child", ident,
                c["restarts"])
        fam.add("collector_child_stats_stale", "gauge", "1 when the child's stats slot was left mid-write", ident,
                1 if c["stats_stale"] else 0)
        s = _own_stats(c)
        if s is None:
            continue
        fam.add("collector_child_stats_updated_timestamp_seconds", "gauge", "When the child last published",
                ident, c["stats_updated_ms"] / 1000)
        role = "worker" if c["role"] != "writer" else "writer"
        base = {"worker": str(c["slot"])} if role == "worker" else {}
        for field, value in s.items():
            spec = metric_spec(role, field)
            if spec is None:
                continue
            family, kind, label, scale, help_ = spec
            labels = dict(base)
            if label is not None:
                labels[label] = field.split(".", 1)[1]
            fam.add(family, kind, help_, labels, value * scale)
        if role == "writer":
            _copy_histogram(fam, s)
    tiers = snapshot.get("tiers")
    if tiers is not None:
        for tier, n in tiers["counts"].items():
            fam.add("collector_tier_symbols", "gauge", "Symbols per tier", {"tier": str(tier)}, n)
        if tiers.get("computed_ms"):
            fam.add("collector_tiers_computed_timestamp_seconds", "gauge", "When tiers were last computed", {},
                    tiers["computed_ms"] / 1000)
    return fam.render()


def _copy_histogram(fam: _Families, s: Mapping[str, float]) -> None:
    help_ = "Duration of COPY flushes"
    total = 0.0
    for key in LATENCY_BUCKET_KEYS:
        total += s.get(f"copy_latency_bucket.{key}", 0.0)
        fam.add(_COPY_HISTOGRAM, "histogram", help_, {"le": key}, total, "_bucket")
    fam.add(_COPY_HISTOGRAM, "histogram", help_, {}, s.get("copy_latency_sum_s", 0.0), "_sum")
    fam.add(_COPY_HISTOGRAM, "histogram", help_, {}, total, "_count")


# --- the server ------------------------------------------------------------------------------------------------

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HTML_CONTENT_TYPE = "text/html; charset=utf-8"


class HealthServer:
    """GET /health, /stats, /metrics and / (the status page) from a daemon thread; snapshot_fn() is called
    once per data request (the page itself is static and polls /stats and /health from the browser).

    Binds 127.0.0.1 by default: the endpoints reveal internals and have no authentication, so exposing
    them further is a deliberate configuration choice (or a reverse proxy's job).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, snapshot_fn: Callable[[], Snapshot] | None = None,
                 thresholds: HealthThresholds = HealthThresholds(), metrics_enabled: bool = True) -> None:
        if snapshot_fn is None:
            raise ValueError("snapshot_fn is required")
        self.metrics_enabled = metrics_enabled
        self.host = host
        self.port = port
        self.snapshot_fn = snapshot_fn
        self.thresholds = thresholds
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True  # a stuck client must not hold the supervisor's exit
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()
        log.info("status page and health endpoints on http://%s:%d/{,health,stats,metrics}",
                 self.host, self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of path; pure apart from calling snapshot_fn."""
        path = path.split("?", 1)[0]
        if path == "/":
            return 200, HTML_CONTENT_TYPE, STATUS_PAGE_HTML.encode()
        if path not in ("/health", "/stats", "/metrics") or (path == "/metrics" and not self.metrics_enabled):
            return 404, "application/json", _json({"error": "not found",
                                                    "endpoints": ["/", "/health", "/stats", "/metrics"]})
        try:
            snap = self.snapshot_fn()
            if path == "/health":
                ok, reasons = health(snap, snap["now_ms"], self.thresholds)
                return (200 if ok else 503), "application/json", _json(
                    {"ok": ok, "reasons": reasons, "checked_at": iso(snap["now_ms"])})
            if path == "/stats":
                return 200, "application/json", _json(stats_json(snap))
            return 200, METRICS_CONTENT_TYPE, render_metrics(snap).encode()
        except Exception as e:  # never let a bad snapshot take the endpoint down: report it and keep serving
            log.error("%s failed: %s: %s", path, type(e).__name__, e, exc_info=True)
            return 500, "application/json", _json({"error": type(e).__name__})


def _json(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=False, default=str).encode()


def _make_handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server naming convention
            status, ctype, body = server.respond(self.path)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
            log.debug("%s - " + format, self.address_string(), *args)

    return Handler
