"""/stats: the JSON document an operator (or the status page) reads, derived from the metric catalogue.

Why derived: each child's section places every catalogue entry at its declared JSON path
(catalogue.Entry.json) as a number, ISO time or boolean, so a counter added to the catalogue appears here
without a second list to keep in step. Pure: a snapshot (collector.observability.snapshot) in, a dict out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

from collector.observability.catalogue import WORKER, WRITER, WRITER_KINDS, Entry
from collector.observability.snapshot import Snapshot, child_name, group, iso, own_stats
from collector.observability.venues import venue_totals


def num(v: float) -> float | int | None:
    """Whole numbers as ints (counters read better), non-finite values as null (JSON has no NaN)."""
    if not math.isfinite(v):
        return None
    return int(v) if v == int(v) else v


def _as_json(e: Entry, v: float | None) -> Any:
    if e.json_as == "iso":
        return iso(v)
    if e.json_as == "bool":
        return bool(v)
    return num(v or 0)


def catalogue_json(entries: tuple[Entry, ...], s: Mapping[str, float] | None) -> dict[str, Any]:
    """Every entry with a JSON path, placed at that path; a group as {key: value} ({} before any publish)."""
    out: dict[str, Any] = {}
    for e in entries:
        if e.json is None:
            continue
        if e.label is not None:
            value: Any = {k: _as_json(e, v) for k, v in group(s, e.name).items()}
        else:
            value = _as_json(e, (s or {}).get(e.name, 0))
        *parents, leaf = e.json
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def stats_json(snapshot: Snapshot) -> dict[str, Any]:
    """The /stats document: totals, one section per worker, per-venue totals, the writer, the supervisor.

    Row counts and last_*_time in totals are the writer's (committed rows, so they survive worker
    restarts); received/kept/rejected are summed over the workers' current processes (a restarted
    worker starts again from 0).
    """
    children = snapshot["children"]
    writer = next((c for c in children if c["role"] == "writer"), None)
    ws = (own_stats(writer) if writer is not None else None) or {}
    rows = {k: num(v) or 0 for k, v in group(ws, "rows").items()}
    last = group(ws, "last_event_ms")
    totals: dict[str, Any] = {
        "trades_count": rows.get("trades", 0), "funding_count": rows.get("funding", 0),
        "liquidations_count": rows.get("liquidations", 0), "open_interest_count": rows.get("open_interest", 0),
        "candles_count": sum(v for k, v in rows.items() if k.startswith("candles_")),
        "errors": num(ws.get("errors", 0)),
        **{f"last_{k}_time": iso(last.get(k)) for k in WRITER_KINDS},
    }
    workers = []
    sums: dict[str, Counter[str]] = {"kept": Counter(), "received": Counter(), "rejected": Counter(),
                                     "backfilled": Counter()}
    for c in children:
        if c["role"] == "writer":
            continue
        s = own_stats(c)
        for g, acc in sums.items():
            acc.update({k: num(v) or 0 for k, v in group(s, g).items()})
        workers.append({"worker": c["slot"], "venue": c.get("venue") or "binance", **_child_json(c),
                        "symbols": c["symbols"], **catalogue_json(WORKER, s)})
    totals.update({g: dict(acc) for g, acc in sums.items()})
    sup = snapshot["supervisor"]
    now = snapshot["now_ms"]
    tiers = snapshot.get("tiers")
    return {
        "totals": totals,
        "workers": workers,
        # per venue: its workers' counters summed (collector.observability.venues)
        "venues": venue_totals(children, now),
        "writer": None if writer is None else {
            **_child_json(writer), **catalogue_json(WRITER, ws),
            "last_error": writer.get("text") or None,  # verbatim: the server's message and the fix when known
        },
        "supervisor": {
            "pid": sup.get("pid"),
            "started_at": iso(sup.get("started_ms")),
            "uptime_s": None if not sup.get("started_ms") else round((now - sup["started_ms"]) / 1000, 3),
            "restarts": {child_name(c): c["restarts"] for c in children},
            "tiers": None if tiers is None else _tiers_json(tiers),
        },
        # the read API when the supervisor runs it (--api): its address, docs and process
        "api": snapshot.get("api"),
        "generated_at": iso(now),
    }


def _tiers_json(tiers: Mapping[str, Any]) -> dict[str, Any]:
    return {"computed_at": iso(tiers.get("computed_ms")), "count": dict(tiers["counts"]),
            "thresholds": {t: {k: num(v) for k, v in r.items()}
                           for t, r in tiers.get("thresholds", {}).items()},
            "top": [{**t, "threshold_usd": num(t["threshold_usd"]), "score": num(t["score"])}
                    for t in tiers.get("top", [])]}


def _child_json(c: Mapping[str, Any]) -> dict[str, Any]:
    return {"pid": c["pid"], "alive": c["alive"], "restarts": c["restarts"], "started_at": iso(c["started_ms"]),
            "stats_updated_at": iso(c["stats_updated_ms"]), "stats_stale": c["stats_stale"]}
