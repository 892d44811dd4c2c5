"""/stats: the JSON document derived from the metric catalogue, over snapshots of a real stats block."""

from __future__ import annotations

import json

from test_health import NOW, _children, _publish_healthy, _snap

from collector.observability.catalogue import WORKER, WRITER
from collector.observability.snapshot import TOP_TIER_SYMBOLS, build_snapshot
from collector.observability.stats import stats_json
from collector.pipeline.tiers import TierAssignment
from collector.runtime.shm import StatsBlock


def test_stats_json_shape_and_totals(block: StatsBlock) -> None:
    _publish_healthy(block)
    doc = stats_json(_snap(block))
    json.dumps(doc, allow_nan=False)
    assert set(doc) >= {"totals", "workers", "writer", "supervisor"}
    t = doc["totals"]
    assert set(t) >= {"trades_count", "funding_count", "liquidations_count", "open_interest_count", "candles_count",
                      "errors", "last_trades_time", "last_funding_time", "last_liquidations_time",
                      "last_open_interest_time", "last_candles_time", "kept", "received", "rejected"}
    assert (t["trades_count"], t["funding_count"], t["candles_count"], t["errors"]) == (1_000, 50, 9, 2)
    assert t["last_trades_time"] == "2025-06-15T15:06:39.500Z"  # NOW - 500 ms
    assert t["last_liquidations_time"] is None
    assert t["received"]["trades"] == 1_500 and t["received"]["funding"] == 40
    assert t["kept"] == {"large_trade": 10, "price_change": 0, "time_interval": 30, "keep_all": 0}
    assert t["rejected"]["gap"] == 3 and t["rejected"]["bad_number"] == 2
    w = doc["workers"][1]
    assert w["worker"] == 2 and w["pid"] == 102 and w["received"]["trades"] == 1_000 and w["paused"] is False
    assert set(w) >= {"kept", "rows", "rejected", "reconnects", "watchdog_trips", "last_event_time", "outbox",
                      "symbols", "alive", "restarts"}
    assert w["outbox"] == {"batches": 0, "pending_batches": 0, "pending_bytes": 0}  # no outbox_bytes: never set
    wr = doc["writer"]
    assert wr["rows"]["trades"] == 1_000 and wr["copy_latency"]["buckets"]["0.005"] == 3
    assert set(wr) >= {"batches", "errors", "commit_lag_ms", "pending", "spooled", "replayed_flushes", "partitions",
                       "last_event_time"}
    assert "queue_depth" not in wr and "queue_full" not in w  # never set: removed
    s = doc["supervisor"]
    assert s["uptime_s"] == 1200 and s["restarts"] == {"writer": 0, "worker 1": 0, "worker 2": 0}
    assert s["tiers"]["computed_at"] == "2025-06-15T15:05:40.000Z"
    assert s["tiers"]["count"] == {"0": 1, "1": 1, "3": 2}
    assert s["tiers"]["thresholds"]["3"] == {"min": 10, "max": 10}
    top = {t["symbol"]: t for t in s["tiers"]["top"]}
    assert top["BTCUSDT"] == {"symbol": "BTCUSDT", "tier": 0, "threshold_usd": 1_000_000, "score": 1}
    assert top["XUSDT"]["threshold_usd"] is None  # infinite: JSON has no Infinity


def test_top_symbols_are_bounded_and_old_snapshots_still_render(block: StatsBlock) -> None:
    many = {f"S{i:03d}USDT": TierAssignment(i % 4, 100.0 + i, 50.0, i / 1000) for i in range(50)}
    snap = build_snapshot(block, _children(), many, NOW)
    top = snap["tiers"]["top"]
    assert len(top) == TOP_TIER_SYMBOLS and top[0]["symbol"] == "S049USDT"
    # a snapshot built before tiers carried thresholds and top symbols (e.g. by a test double) still works
    del snap["tiers"]["thresholds"], snap["tiers"]["top"]
    tiers = stats_json(snap)["supervisor"]["tiers"]
    assert tiers["thresholds"] == {} and tiers["top"] == []


def test_stats_json_with_a_dead_writer_and_no_tiers(block: StatsBlock) -> None:
    snap = build_snapshot(block, _children(c0={"alive": False, "pid": None}), None, NOW)
    doc = stats_json(snap)
    assert doc["totals"]["trades_count"] == 0 and doc["totals"]["last_trades_time"] is None
    assert doc["writer"]["alive"] is False and doc["supervisor"]["tiers"] is None




def test_every_catalogue_entry_with_a_json_path_is_in_its_section(block: StatsBlock) -> None:
    _publish_healthy(block)
    doc = stats_json(_snap(block))
    for entries, section in ((WORKER, doc["workers"][0]), (WRITER, doc["writer"])):
        for e in entries:
            if e.json is None:
                continue
            node = section
            for key in e.json:
                assert key in node, (e.name, e.json)
                node = node[key]
            if e.label is not None:
                assert set(node) == set(e.keys), e.name  # every key of the group, published or 0
