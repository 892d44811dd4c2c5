"""Health rules: is every child up, publishing, receiving and writing? Pure: a snapshot in, reasons out.

Why apart from the HTTP server: /health, the status page's alerts and the supervisor's own log line all
ask the same question, and the answer is tested on hand-made snapshots (collector.observability.snapshot)
without processes. Every threshold is a parameter (HealthThresholds) with the reason for its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from collector.observability.snapshot import Snapshot, child_name, group, own_stats


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    # A child younger than this has not had time to connect, subscribe and publish: judged on liveness only.
    startup_grace_ms: int = 30_000
    # Children publish every 0.2..1 s while their counters change and at least every 5 s (the heartbeat); 10 s
    # of silence is a hung loop, not a blip.
    stats_silent_ms: int = 10_000
    # Every symbol sends a mark price every 1-3 s, so a minute without any event on a worker that has
    # symbols means its connections are dead even if they look open.
    no_event_ms: int = 60_000
    # A silent-stream restart (watchdog trip) this recent is reported: data was lost or delayed.
    watchdog_window_ms: int = 300_000
    # Flushes retry with backoff capped at 10 s (writer BACKOFF_MAX_S): failing for 30 s spans several capped
    # retries, an outage rather than a dropped connection.
    writer_failing_ms: int = 30_000
    # Half the writer's MAX_PENDING_BYTES (256 MB): warn before back-pressure reaches the workers.
    max_pending_bytes: float = 128 * 1024 * 1024
    # Any batch sitting in the spool means rows are not in the database yet.
    max_spooled_batches: float = 0
    # Event-to-commit normally stays under 1 s; 10 s means the database cannot keep up.
    max_commit_lag_ms: float = 10_000


DEFAULT_THRESHOLDS = HealthThresholds()


def health(snapshot: Snapshot, now_ms: int, thresholds: HealthThresholds = DEFAULT_THRESHOLDS
           ) -> tuple[bool, list[str]]:
    """(ok, reasons): ok only if every child is up, publishing, receiving and writing."""
    th = thresholds
    reasons: list[str] = []
    for c in snapshot["children"]:
        name = child_name(c)
        if not c["alive"]:
            reasons.append(f"{name} is down (restarting; {c['restarts']} restarts so far)")
            continue
        if c["stats_stale"]:
            reasons.append(f"{name}: stats slot stale (a process died while publishing)")
            continue
        started = c["started_ms"]
        settled = started is None or now_ms - started >= th.startup_grace_ms
        s = own_stats(c)
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
    jobs = {k: v for k, v in group(s, "jobs_failing").items() if v}
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
    rest_paused = s.get("rest_paused_until_ms", 0)
    if rest_paused > now_ms:  # its venue refused REST (429/418, Bybit 10006 or 403): repairs and loads wait
        out.append(f"{name}: REST paused by the exchange's rate limit for {(rest_paused - now_ms) / 1000:.0f} s more "
                   "(the worker's log has the exchange's answer)")
    if s.get("paused"):
        out.append(f"{name}: reading paused, the writer is behind ({s.get('outbox_pending_bytes', 0) / 2**20:.0f} MB"
                   " held)")
    return out
