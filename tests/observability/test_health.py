"""/health, /stats, /metrics: pure functions over snapshots, then the same over real HTTP."""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from collector.observability import health as h
from collector.observability.health import ChildInfo, HealthServer, HealthThresholds, build_snapshot
from collector.pipeline.tiers import TierAssignment
from collector.runtime.shm import WORKER_FIELDS, WRITER_FIELDS, StatsBlock

NOW = 1_750_000_000_000
MIN = 60_000


@pytest.fixture
def block() -> Iterator[StatsBlock]:
    b = StatsBlock.create(process_slots=3, symbol_slots=0)
    yield b
    b.close()


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


# --- /stats ------------------------------------------------------------------------------------------------------


def test_stats_json_shape_and_totals(block: StatsBlock) -> None:
    _publish_healthy(block)
    doc = h.stats_json(_snap(block))
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
                      "queue_full", "symbols", "alive", "restarts"}
    wr = doc["writer"]
    assert wr["rows"]["trades"] == 1_000 and wr["copy_latency"]["buckets"]["0.005"] == 3
    assert set(wr) >= {"batches", "errors", "commit_lag_ms", "pending", "spooled", "replayed_flushes", "partitions",
                       "queue_depth", "last_event_time"}
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
    assert len(top) == h.TOP_TIER_SYMBOLS and top[0]["symbol"] == "S049USDT"
    # a snapshot built before tiers carried thresholds and top symbols (e.g. by a test double) still works
    del snap["tiers"]["thresholds"], snap["tiers"]["top"]
    tiers = h.stats_json(snap)["supervisor"]["tiers"]
    assert tiers["thresholds"] == {} and tiers["top"] == []


def test_stats_json_with_a_dead_writer_and_no_tiers(block: StatsBlock) -> None:
    snap = build_snapshot(block, _children(c0={"alive": False, "pid": None}), None, NOW)
    doc = h.stats_json(snap)
    assert doc["totals"]["trades_count"] == 0 and doc["totals"]["last_trades_time"] is None
    assert doc["writer"]["alive"] is False and doc["supervisor"]["tiers"] is None


# --- /metrics ----------------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def parse_metrics(text: str) -> dict[str, dict]:
    """A strict little parser of the 0.0.4 text format: {family: {type, help, samples: [(name, labels, v)]}}."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, help_ = line[7:].split(" ", 1)
            assert name not in families, f"family {name} declared twice"
            families[name] = {"help": help_, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and kind in ("counter", "gauge", "histogram", "summary", "untyped")
            families[name]["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            name, labels_text, value = m.groups()
            labels = {}
            pos = 0
            while labels_text and pos < len(labels_text):
                lm = _LABEL.match(labels_text, pos)
                assert lm, f"bad labels in {line!r}"
                raw = lm.group(2)
                labels[lm.group(1)] = re.sub(r'\\(.)', lambda x: {"n": "\n"}.get(x.group(1), x.group(1)), raw)
                pos = lm.end()
            fam = families[current]
            suffixes = ("_bucket", "_sum", "_count") if fam["type"] == "histogram" else ("",)
            assert any(name == current + s for s in suffixes), f"{name} outside its family {current}"
            fam["samples"].append((name, labels, float(value)))
    return families


def test_metrics_parse_and_carry_the_values(block: StatsBlock) -> None:
    _publish_healthy(block)
    fams = parse_metrics(h.render_metrics(_snap(block)))
    for name, fam in fams.items():
        assert fam["type"] and fam["samples"], name
        assert (fam["type"] == "counter") == name.endswith("_total"), name
    def value(family: str, **labels: str) -> float:
        hits = [v for n, lab, v in fams[family]["samples"] if lab == labels]
        assert len(hits) == 1, (family, labels, fams[family]["samples"])
        return hits[0]
    assert value("collector_worker_received_total", worker="2", type="trades") == 1_000
    assert value("collector_worker_kept_total", worker="1", reason="time_interval") == 10
    assert value("collector_worker_rejected_total", worker="2", reason="gap") == 2
    assert value("collector_worker_last_event_timestamp_seconds", worker="1", type="trades") == (NOW - 1_000) / 1000
    assert value("collector_writer_rows_total", table="candles_5m") == 2
    assert value("collector_child_up", role="worker", worker="2") == 1
    assert value("collector_child_restarts_total", role="writer") == 0
    assert value("collector_tier_symbols", tier="3") == 2
    assert value("collector_uptime_seconds") == 1200
    hist = fams["collector_writer_copy_latency_seconds"]
    buckets = [(lab["le"], v) for n, lab, v in hist["samples"] if n.endswith("_bucket")]
    assert buckets[0] == ("0.005", 3) and buckets[-1] == ("+Inf", 5)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    sums = {n: v for n, lab, v in hist["samples"] if not lab}
    assert sums == {"collector_writer_copy_latency_seconds_sum": 3.1, "collector_writer_copy_latency_seconds_count": 5}


def test_dead_child_has_no_value_metrics_but_is_reported_down(block: StatsBlock) -> None:
    _publish_healthy(block)
    fams = parse_metrics(h.render_metrics(_snap(block, c1={"alive": False, "pid": None, "restarts": 2})))
    up = {lab.get("worker", "w"): v for _, lab, v in fams["collector_child_up"]["samples"]}
    assert up == {"w": 1, "1": 0, "2": 1}
    assert not any(lab.get("worker") == "1" for _, lab, _ in fams["collector_worker_received_total"]["samples"])


def test_every_field_has_a_metric() -> None:
    for role, fields in (("worker", WORKER_FIELDS), ("writer", WRITER_FIELDS)):
        for f in fields:
            h.metric_spec(role, f)  # raises KeyError for an unexported field
    with pytest.raises(KeyError):
        h.metric_spec("worker", "brand_new_counter")


def test_label_values_are_escaped() -> None:
    assert h.escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    weird = 'wo"rk\\er\nx'
    snap = {"now_ms": NOW, "supervisor": {"pid": 1, "started_ms": None}, "tiers": None,
            "children": [{"role": weird, "slot": 1, "pid": 5, "alive": True, "restarts": 0, "symbols": 0,
                          "started_ms": None, "stats": None, "stats_pid": None, "stats_updated_ms": None,
                          "stats_stale": False}]}
    text = h.render_metrics(snap)
    assert text.count("\n") == len(text.splitlines())  # no raw newline leaked into a sample line
    fams = parse_metrics(text)
    assert fams["collector_child_up"]["samples"][0][1] == {"role": weird, "worker": "1"}


# --- HTTP ----------------------------------------------------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


@pytest.fixture
def server_for(block: StatsBlock):
    servers = []

    def start(snapshot_fn) -> HealthServer:
        s = HealthServer(snapshot_fn=snapshot_fn)
        s.start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def test_http_endpoints(block: StatsBlock, server_for, capfd) -> None:
    _publish_healthy(block)
    srv = server_for(lambda: _snap(block))
    assert srv.host == "127.0.0.1" and srv.port > 0
    status, ctype, body = _get(srv.port, "/health")
    assert (status, ctype) == (200, "application/json") and json.loads(body)["ok"] is True
    status, ctype, body = _get(srv.port, "/stats?pretty=1")
    assert status == 200 and json.loads(body)["totals"]["trades_count"] == 1_000
    status, ctype, body = _get(srv.port, "/metrics")
    assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert "collector_worker_received_total" in parse_metrics(body.decode())
    status, ctype, body = _get(srv.port, "/")
    assert (status, ctype) == (200, "text/html; charset=utf-8") and b'id="workers"' in body
    status, _, body = _get(srv.port, "/nope")
    assert status == 404 and "/health" in json.loads(body)["endpoints"]
    assert capfd.readouterr().err == ""  # no per-request log lines on stderr


def test_http_health_503_when_a_child_is_dead(block: StatsBlock, server_for) -> None:
    _publish_healthy(block)
    srv = server_for(lambda: _snap(block, c2={"alive": False, "pid": None, "restarts": 1}))
    status, _, body = _get(srv.port, "/health")
    doc = json.loads(body)
    assert status == 503 and doc["ok"] is False
    assert doc["reasons"] == ["worker 2 is down (restarting; 1 restarts so far)"]


def test_http_survives_a_failing_snapshot(block: StatsBlock, server_for, caplog) -> None:
    calls = []

    def flaky() -> dict:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return _snap(block)

    srv = server_for(flaky)
    with caplog.at_level(logging.ERROR, logger="collector.observability.health"):
        status, _, body = _get(srv.port, "/metrics")
    assert status == 500 and json.loads(body) == {"error": "RuntimeError"}
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)
    status, _, _ = _get(srv.port, "/stats")  # still serving
    assert status == 200


def test_stop_releases_the_port(block: StatsBlock) -> None:
    srv = HealthServer(snapshot_fn=lambda: _snap(block))
    srv.start()
    port = srv.port
    srv.stop()
    again = HealthServer(port=port, snapshot_fn=lambda: _snap(block))
    again.start()  # would raise EADDRINUSE if the first had not closed its socket
    again.stop()


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
    fams = parse_metrics(h.render_metrics(snap))
    failing = {lab["proc"]: v for _, lab, v in fams["collector_timescaledb_jobs_failing"]["samples"]}
    assert failing == {"policy_retention": 0, "policy_compression": 0, "policy_refresh_continuous_aggregate": 1}
    checked = fams["collector_timescaledb_jobs_checked_timestamp_seconds"]["samples"]
    assert [v for *_, v in checked] == [(NOW - 5_000) / 1000]
    jobs = h.stats_json(snap)["writer"]["timescaledb_jobs"]
    assert jobs["failing"]["policy_refresh_continuous_aggregate"] == 1 and jobs["checked_at"] is not None
    # the job recovers: the next publish carries 0 for it and /health is ok again
    st.jobs_failing = {}
    publish(st)
    assert h.health(_snap(block, now=NOW), NOW) == (True, [])
