"""The snapshot: one plain-dict picture of the supervisor and its children, read once per request.

Why a plain dict: the supervisor builds it (build_snapshot) from the shared-memory stats block and its own
bookkeeping, and everything that answers over HTTP (health rules, /stats, /metrics) only reads it, so each
is tested with hand-made snapshots and no processes.

Snapshot shape (all times in ms since the epoch, JSON-serialisable):
    {"now_ms": int,
     "supervisor": {"pid": int, "started_ms": int | None},
     "children": [{"role": "writer" | "worker", "slot": int, "pid": int | None, "alive": bool,
                   "restarts": int, "symbols": int, "started_ms": int | None, "venue": str,
                   "stats": {field: float} | None,  # the slot's values (catalogue.WRITER_FIELDS / WORKER_FIELDS)
                   "stats_pid": int | None, "stats_updated_ms": int | None, "stats_stale": bool,
                   "text": str}],  # the slot's text: the child's last error, verbatim ("" = none)
     "tiers": {"computed_ms": int | None, "counts": {"0": int, ...},
               "thresholds": {"0": {"min": float, "max": float}, ...},  # finite large-trade thresholds (USD)
               "top": [{"symbol": str, "tier": int, "threshold_usd": float, "score": float}]} | None,
     "api": {"url": str, "docs": str, "pid": int | None, "alive": bool, "restarts": int} | None}
"thresholds" and "top" were added later: readers must accept a tiers dict without them (and a child
without "venue": binance's); "api" is there
only when the supervisor runs the read API (--api).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from collector.pipeline.tiers import TierAssignment
from collector.runtime.shm import StatsBlock

# Symbols listed with their threshold in /stats (tiers.top): enough to cover tier 0 of the full Binance
# universe (2% of ~500 = 10), few enough that the document stays small when polled every 2 s.
TOP_TIER_SYMBOLS = 10

Snapshot = dict[str, Any]


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
    venue: str = "binance"  # the venue a worker serves (collection.exchanges); the writer serves them all


def build_snapshot(block: StatsBlock | None, children: Iterable[ChildInfo],
                   tiers: Mapping[str, TierAssignment] | None, now_ms: int, *,
                   tiers_computed_ms: int | None = None, started_ms: int | None = None,
                   api: dict[str, Any] | None = None) -> Snapshot:
    """Read every child's slot once (lock-free) and combine it with the supervisor's view."""
    out_children = []
    for c in children:
        reading = block.read(c.slot) if block is not None else None
        out_children.append({
            "role": c.role, "slot": c.slot, "pid": c.pid, "alive": c.alive, "restarts": c.restarts,
            "symbols": c.symbols, "started_ms": c.started_ms, "venue": c.venue,
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
            "children": out_children, "tiers": tier_info, "api": api}


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


def child_name(c: Mapping[str, Any]) -> str:
    """How reasons and /stats name a child: "writer", "worker 3"."""
    return "writer" if c["role"] == "writer" else f"{c['role']} {c['slot']}"


def own_stats(c: Mapping[str, Any]) -> Mapping[str, float] | None:
    """The child's published values, only if its current process published them: a dead child's or a
    predecessor's numbers would pass for live ones (and reset under the reader when the new process starts)."""
    if c["stats"] is None or c["pid"] is None or c["stats_pid"] != c["pid"]:
        return None
    stats: Mapping[str, float] = c["stats"]
    return stats


def group(s: Mapping[str, float] | None, prefix: str) -> dict[str, float]:
    """The fields "prefix.key" of a child's values as {key: value} ({} when it published none)."""
    if not s:
        return {}
    n = len(prefix) + 1
    return {k[n:]: v for k, v in s.items() if k.startswith(prefix + ".")}


def iso(ms: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, or None for a time that never happened (None or 0)."""
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
