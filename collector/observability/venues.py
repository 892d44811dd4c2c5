"""Per-venue totals of /stats and the status page: one section per venue the workers serve.

Why: each worker serves one venue (collector.runtime.venue_shards), so /stats' per-worker sections already
hold every number, but with three venues an operator asks "is Bybit all right?", and the per-symbol keys
(`bybit:BTCUSDT`) answer per symbol only. This sums the workers' catalogue counters by venue. The writer's
committed rows are per table, not per venue (one COPY carries every venue's rows), so the per-venue row
counts here are what the venue's workers handed to the writer (catalogue `rows`): rows kept, not yet
necessarily committed. Pure: a snapshot's children in, a dict out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from collector.observability.snapshot import group, iso, own_stats

# Rejections that mean a frame the feed could not use at all, as opposed to a well-formed event with a bad
# value: what "frame errors" counts. The kinds only a feed counts, for a whole frame it skipped
# (collector.feed.source, and the venue decoders' SkipCounter: an error or notice answer, a channel not
# subscribed, a liquidation side not known), and handler_error.
FRAME_ERROR_KINDS = ("malformed_json", "invalid_frame", "unknown_event", "handler_error", "venue_error",
                     "venue_notice", "unknown_channel", "unknown_side")
# A venue whose newest event is older than this has no data flowing: the health rules' no_event_ms
# (every symbol sends a mark price or ticker every 1-3 s).
RECEIVING_MS = 60_000


def venue_totals(children: Iterable[Mapping[str, Any]], now_ms: int) -> dict[str, dict[str, Any]]:
    """{venue: totals} over the workers of each venue, venues in the order their first worker appears.

    messages_per_s is each live worker's received count over the time from its process start to its last
    publication, summed: a mean since start (the status page shows the current rate from two polls).
    connection is "receiving" when every worker of the venue is up and had an event within RECEIVING_MS,
    "down" when none did, "partial" otherwise."""
    out: dict[str, dict[str, Any]] = {}
    for c in children:
        if c["role"] != "worker":
            continue
        v = out.setdefault(c.get("venue") or "binance", _empty())
        s = own_stats(c) or {}
        v["workers"] += 1
        v["symbols"] += c["symbols"]
        received = group(s, "received")
        v["received"].update(received)
        v["rows"].update(group(s, "rows"))
        rejected = group(s, "rejected")
        v["frame_errors"] += sum(rejected.get(k, 0) for k in FRAME_ERROR_KINDS)
        v["gaps"] += group(s, "rows").get("gaps", 0)
        v["reconnects"] += s.get("reconnects", 0)
        v["watchdog_trips"] += s.get("watchdog_trips", 0)
        v["paused_workers"] += 1 if s.get("paused") else 0
        last = max(group(s, "last_event_ms").values(), default=0.0)
        v["_last"] = max(v["_last"], last)
        up = c["alive"] and bool(s)
        v["workers_up"] += 1 if up else 0
        v["_receiving"] += 1 if up and last and now_ms - last <= RECEIVING_MS else 0
        started, updated = c.get("started_ms"), c.get("stats_updated_ms")
        if up and started and updated and updated > started:
            v["messages_per_s"] += sum(received.values()) * 1000 / (updated - started)
    return {name: _finish(v) for name, v in out.items()}


def _empty() -> dict[str, Any]:
    return {"workers": 0, "workers_up": 0, "symbols": 0, "received": Counter(), "messages_per_s": 0.0,
            "rows": Counter(), "gaps": 0.0, "frame_errors": 0.0, "reconnects": 0.0, "watchdog_trips": 0.0,
            "paused_workers": 0, "_last": 0.0, "_receiving": 0}


def _finish(v: dict[str, Any]) -> dict[str, Any]:
    receiving, last = v.pop("_receiving"), v.pop("_last")
    state = "receiving" if receiving == v["workers"] else "down" if receiving == 0 else "partial"
    return {
        "workers": v["workers"], "workers_up": v["workers_up"], "symbols": v["symbols"],
        "messages": int(sum(v["received"].values())), "messages_per_s": round(v["messages_per_s"], 1),
        "received": {k: int(n) for k, n in v["received"].items()},
        "rows": {k: int(n) for k, n in v["rows"].items()},
        "gaps": int(v["gaps"]), "frame_errors": int(v["frame_errors"]),
        "connection": {"state": state, "reconnects": int(v["reconnects"]),
                       "watchdog_trips": int(v["watchdog_trips"]), "paused_workers": v["paused_workers"],
                       "last_event_time": iso(last)},
    }
