"""The snapshot and the health rules: pure functions over snapshots built from a real stats block.

The helpers here (a healthy block, children, snapshots) are shared by the /stats, /metrics and server tests."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.observability import health as h
from collector.observability.health import HealthThresholds
from collector.observability.metrics import render_metrics
from collector.observability.snapshot import ChildInfo, build_snapshot
from collector.observability.stats import stats_json
from collector.pipeline.tiers import TierAssignment
from collector.runtime.shm import StatsBlock

NOW = 1_750_000_000_000
MIN = 60_000


def _publish_healthy(block: StatsBlock, now: int = NOW) -> None:
    w = block.process_slot(0, pid=100)
    w.update({"schema_ready": 1, "rows.trades": 1_000, "rows.funding": 50, "rows.candles_1m": 7, "rows.candles_5m": 2,
              "batches.trades": 4, "errors": 2, "last_event_ms.trades": now - 500,
              "last_event_ms.funding": now - 900, "copy_latency_bucket.0.005": 3, "copy_latency_bucket.0.05": 1,
              "copy_latency_bucket.+Inf": 1, "copy_latency_sum_s": 3.1, "copy_latency_last_s": 0.004})
    w.publish(now_ms=now - 100)
    for slot, pid in ((1, 101), (2, 102)):
        p = block.process_slot(slot, pid=pid)
        p.update({"trades": 500 * slot, "funding": 20, "klines": 3}, prefix="received.")
        p.update({"large_trade": 5, "time_interval": 10 * slot}, prefix="kept.")
        p.update({"bad_number": 1, "gap": slot}, prefix="rejected.")
        p.update({"last_event_ms.trades": now - 1_000, "symbols": 10, "reconnects": 1})
        p.publish(now_ms=now - 200)


def _children(**overrides: dict) -> list[ChildInfo]:
    base = {0: dict(role="writer", slot=0, pid=100, alive=True, started_ms=NOW - 10 * MIN),
            1: dict(role="worker", slot=1, pid=101, alive=True, symbols=10, started_ms=NOW - 10 * MIN),
            2: dict(role="worker", slot=2, pid=102, alive=True, symbols=10, started_ms=NOW - 10 * MIN)}
    for key, change in overrides.items():
        base[int(key[1:])].update(change)
    return [ChildInfo(**kw) for kw in base.values()]


TIERS = {"BTCUSDT": TierAssignment(0, 1e6, 5e5, 1.0), "ETHUSDT": TierAssignment(1, 1e5, 5e4, 0.8),
         "XUSDT": TierAssignment(3, math.inf, 0.0, 0.0), "YUSDT": TierAssignment(3, 10.0, 5.0, 0.1)}


def _snap(block: StatsBlock, now: int = NOW, **overrides: dict) -> dict:
    return build_snapshot(block, _children(**overrides), TIERS, now, tiers_computed_ms=now - MIN,
                          started_ms=now - 20 * MIN)


def _edit(snap: dict, slot: int, **values: float) -> dict:
    c = next(c for c in snap["children"] if c["slot"] == slot)
    c["stats"] = {**c["stats"], **values}
    return snap


# --- snapshot and /health --------------------------------------------------------------------------------------


def test_build_snapshot_reads_the_block(block: StatsBlock) -> None:
    _publish_healthy(block)
    snap = _snap(block)
    json.dumps(snap)  # plain data only
    assert [c["slot"] for c in snap["children"]] == [0, 1, 2]
    w1 = snap["children"][1]
    assert w1["stats"]["received.trades"] == 500 and w1["stats_pid"] == 101 and not w1["stats_stale"]
    assert snap["tiers"]["computed_ms"] == NOW - MIN and snap["tiers"]["counts"] == {"0": 1, "1": 1, "3": 2}
    # XUSDT's infinite threshold (no trades seen) is left out of tier 3's range, not reported as its maximum
    assert snap["tiers"]["thresholds"] == {"0": {"min": 1e6, "max": 1e6}, "1": {"min": 1e5, "max": 1e5},
                                           "3": {"min": 10.0, "max": 10.0}}
    assert [t["symbol"] for t in snap["tiers"]["top"]] == ["BTCUSDT", "ETHUSDT", "YUSDT", "XUSDT"]


def test_healthy_snapshot_is_ok(block: StatsBlock) -> None:
    _publish_healthy(block)
    assert h.health(_snap(block), NOW) == (True, [])


@pytest.mark.parametrize(("snap_change", "expected"), [
    (lambda s: s["children"][2].update(alive=False, pid=None, restarts=3), "worker 2 is down"),
    (lambda s: s["children"][0].update(alive=False, pid=None), "writer is down"),
    (lambda s: _edit(s, 1, **{"last_event_ms.trades": NOW - 5 * MIN}), "worker 1: no event received for 300 s"),
    (lambda s: _edit(s, 2, last_watchdog_ms=NOW - MIN, watchdog_trips=1), "worker 2: a silent stream was restarted"),
    (lambda s: _edit(s, 1, paused=1), "worker 1: reading paused"),
    (lambda s: _edit(s, 2, rest_paused_until_ms=NOW + 30_000),
     "worker 2: REST paused by the exchange's rate limit for 30 s more"),
    (lambda s: _edit(s, 0, failing_since_ms=NOW - 2 * MIN), "writer: flushes failing for 120 s"),
    (lambda s: _edit(s, 0, spooled_batches=4), "writer: 4 batches spooled"),
    (lambda s: _edit(s, 0, pending_bytes=300 * 2**20), "writer: 300 MB waiting"),
    (lambda s: _edit(s, 0, commit_lag_ms=45_000), "writer: commit lag 45.0 s"),
    (lambda s: _edit(s, 0, **{"jobs_failing.policy_retention": 2, "jobs_failing.policy_compression": 0}),
     "TimescaleDB: 2 collector policy jobs failed their last run (policy_retention 2)"),
    (lambda s: s["children"][1].update(stats_updated_ms=NOW - MIN), "worker 1 has not published statistics for 60 s"),
    (lambda s: s["children"][1].update(stats_stale=True, stats=None), "worker 1: stats slot stale"),
    (lambda s: s["children"][1].update(pid=999), "worker 1 has published no statistics"),  # only a predecessor's
])
def test_unhealthy_snapshots_say_why(block: StatsBlock, snap_change, expected: str) -> None:
    _publish_healthy(block)
    snap = _snap(block)
    snap_change(snap)
    ok, reasons = h.health(snap, NOW)
    assert not ok
    assert any(expected in r for r in reasons), reasons
    assert len(reasons) == 1, reasons  # one problem, one reason


def test_thresholds_are_parameters(block: StatsBlock) -> None:
    _publish_healthy(block)
    snap = _edit(_snap(block), 1, **{"last_event_ms.trades": NOW - 5 * MIN})
    assert h.health(snap, NOW, HealthThresholds(no_event_ms=10 * MIN)) == (True, [])


def test_young_children_get_a_grace_period(block: StatsBlock) -> None:
    # just (re)started: nothing published by this pid yet, no events yet: "starting" (503 until data
    # flows, so a load balancer or a deploy script waits), not yet the failure "published nothing"
    young = {"role": "worker", "slot": 1, "pid": 555, "alive": True, "symbols": 10, "started_ms": NOW - 5_000}
    snap = _snap(block, c1=young)
    ok, reasons = h.health(snap, NOW)
    assert not ok and [r for r in reasons if "worker 1" in r] == ["worker 1 is starting"], reasons
    # an old worker whose symbols never sent anything is reported
    _publish_healthy(block)
    snap = _edit(_snap(block), 2, **{"last_event_ms.trades": 0})
    ok, reasons = h.health(snap, NOW)
    assert not ok and any("worker 2: no event received for 600 s" in r for r in reasons), reasons


def test_a_worker_without_symbols_may_be_quiet(block: StatsBlock) -> None:
    _publish_healthy(block)
    snap = _snap(block, c2={"symbols": 0})
    _edit(snap, 2, symbols=0, **{"last_event_ms.trades": 0})
    assert h.health(snap, NOW) == (True, [])


def test_failing_timescaledb_jobs_travel_from_writer_stats_to_every_endpoint(block: StatsBlock) -> None:
    """WriterStats -> the writer's publisher -> shared memory -> snapshot -> /health, /metrics, /stats."""
    from collector.writer.main import WriterStatsPublisher
    from collector.writer.stats import WriterStats

    _publish_healthy(block)
    st = WriterStats(schema_ready=True, jobs_checked_ms=NOW - 5_000,
                     jobs_failing={"policy_refresh_continuous_aggregate": 1})
    publish = WriterStatsPublisher(block.process_slot(0, pid=100))
    publish(st)
    snap = _snap(block, now=NOW)
    ok, reasons = h.health(snap, NOW)
    assert not ok and reasons == ["TimescaleDB: 1 collector policy jobs failed their last run "
                                  "(policy_refresh_continuous_aggregate 1); `python -m collector check` prints "
                                  "each job's error"]
    fams = {f.name: f.samples for f in text_string_to_metric_families(render_metrics(snap))}
    failing = {s.labels["proc"]: s.value for s in fams["collector_timescaledb_jobs_failing"]}
    assert failing == {"policy_retention": 0, "policy_compression": 0, "policy_refresh_continuous_aggregate": 1}
    checked = fams["collector_timescaledb_jobs_checked_timestamp_seconds"]
    assert [s.value for s in checked] == [(NOW - 5_000) / 1000]
    jobs = stats_json(snap)["writer"]["timescaledb_jobs"]
    assert jobs["failing"]["policy_refresh_continuous_aggregate"] == 1 and jobs["checked_at"] is not None
    # the job recovers: the next publish carries 0 for it and /health is ok again
    st.jobs_failing = {}
    publish(st)
    assert h.health(_snap(block, now=NOW), NOW) == (True, [])
