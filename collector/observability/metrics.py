"""/metrics: the Prometheus text exposition of a snapshot, rendered by prometheus_client.

Why a custom collector over the snapshot rather than prometheus_client's Counter/Gauge objects: the
numbers live in shared memory (collector.runtime.shm) and in the supervisor's bookkeeping, and are read
once per scrape into a snapshot; mirroring them into global mutable metrics would be a second copy that
can drift. SnapshotCollector turns one snapshot into metric families, following the metric catalogue
(collector.observability.catalogue) for every published field, and render_metrics exposes it through a
registry of its own (never the process-global one).

Family and label names are what the Grafana dashboards in deploy/ query: tests/test_deploy.py checks
every expression there against this output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from collector.observability.catalogue import CATALOGUE, COPY_HISTOGRAM, COPY_HISTOGRAM_SUM, Entry
from collector.observability.snapshot import Snapshot, own_stats

# What generate_latest produces: the text format 0.0.4.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Families:
    """Families in first-seen order; a family's samples may carry different label sets (the writer's
    collector_child_up has no worker label), which prometheus_client's typed families do not allow."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(self, name: str, kind: str, help_: str, labels: Mapping[str, str], value: float,
            suffix: str = "") -> None:
        family = self.families.get(name)
        if family is None:
            # prometheus_client names a counter family without "_total" and adds it back on exposition
            base = name.removesuffix("_total") if kind == "counter" else name
            family = self.families[name] = Metric(base, help_, kind)
        family.add_sample(name + suffix, dict(labels), float(value))


class SnapshotCollector(Collector):
    """The metric families of one snapshot (collect() is called once per exposition)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        fam = _Families()
        snap = self.snapshot
        now, sup = snap["now_ms"], snap["supervisor"]
        if sup.get("started_ms"):
            fam.add("collector_uptime_seconds", "gauge", "Seconds since the supervisor started", {},
                    (now - sup["started_ms"]) / 1000)
        for c in snap["children"]:
            _child(fam, c)
        tiers = snap.get("tiers")
        if tiers is not None:
            for tier, n in tiers["counts"].items():
                fam.add("collector_tier_symbols", "gauge", "Symbols per tier", {"tier": str(tier)}, n)
            if tiers.get("computed_ms"):
                fam.add("collector_tiers_computed_timestamp_seconds", "gauge", "When tiers were last computed", {},
                        tiers["computed_ms"] / 1000)
        return iter(fam.families.values())


def _child(fam: _Families, c: Mapping[str, Any]) -> None:
    worker = c["role"] != "writer"
    venue = c.get("venue") or "binance"
    ident = {"role": c["role"], "worker": str(c["slot"]), "venue": venue} if worker else {"role": c["role"]}
    fam.add("collector_child_up", "gauge", "1 while the child process is running", ident, 1 if c["alive"] else 0)
    fam.add("collector_child_restarts_total", "counter", "Times the supervisor restarted the child", ident,
            c["restarts"])
    fam.add("collector_child_stats_stale", "gauge", "1 when the child's stats slot was left mid-write", ident,
            1 if c["stats_stale"] else 0)
    s = own_stats(c)
    if s is None:
        return
    fam.add("collector_child_stats_updated_timestamp_seconds", "gauge", "When the child last published",
            ident, c["stats_updated_ms"] / 1000)
    # every worker sample carries its venue, so `sum by (venue)` gives per-venue totals
    base = {"worker": str(c["slot"]), "venue": venue} if worker else {}
    for e in CATALOGUE["worker" if worker else "writer"]:
        if e.metric is None:
            continue
        if e.kind == "histogram":
            _histogram(fam, e, s, base)
        elif e.label is None:
            fam.add(e.metric, e.kind, e.help, base, s.get(e.name, 0.0) * e.scale)
        else:
            for key in e.keys:
                fam.add(e.metric, e.kind, e.help, {**base, e.label: key}, s.get(f"{e.name}.{key}", 0.0) * e.scale)


def _histogram(fam: _Families, e: Entry, s: Mapping[str, float], labels: Mapping[str, str]) -> None:
    """Per-bucket counts (as published) made cumulative, plus _sum and _count."""
    assert e.metric == COPY_HISTOGRAM and e.label == "le"
    total = 0.0
    for key in e.keys:
        total += s.get(f"{e.name}.{key}", 0.0)
        fam.add(e.metric, "histogram", e.help, {**labels, "le": key}, total, "_bucket")
    fam.add(e.metric, "histogram", e.help, labels, s.get(COPY_HISTOGRAM_SUM, 0.0), "_sum")
    fam.add(e.metric, "histogram", e.help, labels, total, "_count")


def render_metrics(snapshot: Snapshot) -> str:
    """The Prometheus text exposition format 0.0.4 of a snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry).decode()
