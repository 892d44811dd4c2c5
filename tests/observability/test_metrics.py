"""/metrics: the exposition prometheus_client renders from a snapshot, read back with its own parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_health import NOW, _publish_healthy, _snap

from collector.observability.catalogue import WORKER_FIELDS, WRITER_FIELDS
from collector.observability.metrics import render_metrics
from collector.observability.snapshot import ChildInfo, build_snapshot
from collector.observability.stats import stats_json
from collector.pipeline.tiers import TierAssignment
from collector.runtime.shm import StatsBlock

# The whole exposition of ZERO_SNAPSHOT, line for line: every family name, label and help text the Grafana
# dashboards (deploy/grafana) and operators' alerts may depend on. A change here is a change of the interface.
EXPECTED = Path(__file__).parent / "data" / "metrics_zero.txt"


def zero_snapshot(block: StatsBlock) -> dict:
    """The writer and one worker, each with every catalogue field published as 0 (a fresh slot)."""
    block.process_slot(0, pid=100).publish(now_ms=NOW - 1_000)
    block.process_slot(1, pid=101).publish(now_ms=NOW - 2_000)
    kids = [ChildInfo("writer", 0, 100, True, started_ms=NOW - 60_000),
            ChildInfo("worker", 1, 101, True, restarts=0, symbols=0, started_ms=NOW - 60_000)]
    return build_snapshot(block, kids, {"BTCUSDT": TierAssignment(0, 1e6, 5e5, 1.0)}, NOW,
                          tiers_computed_ms=NOW - 5_000, started_ms=NOW - 120_000)


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """{family: [(sample name, labels, value)]} by prometheus_client's parser (a counter family's name
    carries no "_total" there, its samples do)."""
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_zero_snapshot_renders_exactly_the_expected_exposition(block: StatsBlock) -> None:
    text = render_metrics(zero_snapshot(block))
    assert text.splitlines() == EXPECTED.read_text().splitlines()


def test_every_catalogue_field_is_exported(block: StatsBlock) -> None:
    fams = families(render_metrics(zero_snapshot(block)))
    samples = {(name, tuple(sorted(labels.items()))) for fam in fams.values() for name, labels, _ in fam}
    worker = {n for n, labels in samples if ("worker", "1") in labels and n.startswith("collector_worker_")}
    writer = {n for n, labels in samples if n.startswith(("collector_writer_", "collector_timescaledb_"))}
    # one sample per field: groups by label value, the histogram's buckets by le
    assert sum(1 for _ in filter(lambda s: s[0] in worker, samples)) == len(WORKER_FIELDS)
    histogram_extra = 2  # _count, and _sum stands for copy_latency_sum_s
    assert sum(1 for _ in filter(lambda s: s[0] in writer, samples)) == len(WRITER_FIELDS) + histogram_extra - 1


def test_values_are_carried_and_scaled(block: StatsBlock) -> None:
    _publish_healthy(block)
    fams = families(render_metrics(_snap(block)))

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        hits = [v for n, lab, v in fams[family] if lab == labels and n == (sample or family)]
        assert len(hits) == 1, (family, labels, fams[family])
        return hits[0]

    assert value("collector_worker_received", "collector_worker_received_total", worker="2", type="trades", venue="binance") == 1_000
    assert value("collector_worker_kept", "collector_worker_kept_total", worker="1", reason="time_interval", venue="binance") == 10
    assert value("collector_worker_rejected", "collector_worker_rejected_total", worker="2", reason="gap", venue="binance") == 2
    assert value("collector_worker_last_event_timestamp_seconds", worker="1", type="trades", venue="binance") == (NOW - 1_000) / 1000
    assert value("collector_writer_rows", "collector_writer_rows_total", table="candles_5m") == 2
    assert value("collector_child_up", role="worker", worker="2", venue="binance") == 1
    assert value("collector_child_restarts", "collector_child_restarts_total", role="writer") == 0
    assert value("collector_tier_symbols", tier="3") == 2
    assert value("collector_uptime_seconds") == 1200
    hist = fams["collector_writer_copy_latency_seconds"]
    buckets = [(lab["le"], v) for n, lab, v in hist if n.endswith("_bucket")]
    assert buckets[0] == ("0.005", 3) and buckets[-1] == ("+Inf", 5)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert {n: v for n, lab, v in hist if not lab} == {"collector_writer_copy_latency_seconds_sum": 3.1,
                                                       "collector_writer_copy_latency_seconds_count": 5}


def test_a_rejection_the_feed_counts_reaches_metrics(block: StatsBlock) -> None:
    """invalid_open_interest (feed.source) used to be dropped by the slot, which ignored unknown names."""
    from collector.pipeline.router import Pipeline
    from collector.pipeline.trade_filter import FilterParams, TradeFilter

    pipe = Pipeline(["BTCUSDT"], ["open_interest"], TradeFilter(FilterParams()), lambda batch: None, venue="binance")
    pipe.on_bad_frame("invalid_open_interest")
    _publish_healthy(block)
    slot = block.process_slot(1, pid=101)
    slot.update(pipe.rejected, "rejected.")
    slot.publish(now_ms=NOW - 200)
    fams = families(render_metrics(_snap(block)))
    hits = [v for _, lab, v in fams["collector_worker_rejected"] if lab == {"worker": "1",
                                                                         "venue": "binance",
                                                                         "reason": "invalid_open_interest"}]
    assert hits == [1]


# One frame per skip kind only the OKX and Bybit decoders count (collector.feed.venues): (venue, frame, kind).
VENUE_SKIPS = [
    ("okx", '{"event":"error","code":"60012","msg":"Invalid request"}', "venue_error"),
    ("okx", '{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade"}',
     "venue_notice"),
    ("okx", '{"arg":{"channel":"books5","instId":"BTC-USDT-SWAP"},"data":[{"asks":[],"bids":[],"ts":"1"}]}',
     "unknown_channel"),
    ("bybit", '{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1,'
              '"data":[{"T":1,"s":"BTCUSDT","S":"Hold","v":"1","p":"100"}]}', "unknown_side"),
]


@pytest.mark.parametrize(("venue", "frame", "kind"), VENUE_SKIPS, ids=[k for _, _, k in VENUE_SKIPS])
def test_a_skip_a_venue_decoder_counts_reaches_stats_and_metrics(venue: str, frame: str, kind: str,
                                                                 block: StatsBlock) -> None:
    """These kinds were counted by the decoders but missing from the catalogue: publishing them raised."""
    from collector.feed.venues.bybit import BybitDecoder
    from collector.feed.venues.common import ContractSize, VenueSymbol
    from collector.feed.venues.okx import OkxDecoder
    from collector.pipeline.router import Pipeline
    from collector.pipeline.trade_filter import FilterParams, TradeFilter

    name = "BTC-USDT-SWAP" if venue == "okx" else "BTCUSDT"
    pipe = Pipeline([name], ["trades", "liquidations"], TradeFilter(FilterParams()), lambda batch: None, venue=venue)
    decoder = (OkxDecoder if venue == "okx" else BybitDecoder)([VenueSymbol(venue, name, "BTC-USDT-PERP",
                                                                             ContractSize("1"))], pipe)
    decoder.handle(frame, NOW / 1000)
    assert decoder.skipped.counts == {kind: 1}
    _publish_healthy(block)
    slot = block.process_slot(1, pid=101)
    slot.update(pipe.rejected, "rejected.")
    slot.publish(now_ms=NOW - 200)
    snap = _snap(block)
    hits = [v for _, lab, v in families(render_metrics(snap))["collector_worker_rejected"]
            if lab["worker"] == "1" and lab["reason"] == kind]
    assert hits == [1]
    doc = stats_json(snap)
    assert next(w for w in doc["workers"] if w["worker"] == 1)["rejected"][kind] == 1
    assert doc["totals"]["rejected"][kind] == 1


def test_dead_child_has_no_value_metrics_but_is_reported_down(block: StatsBlock) -> None:
    _publish_healthy(block)
    fams = families(render_metrics(_snap(block, c1={"alive": False, "pid": None, "restarts": 2})))
    up = {lab.get("worker", "w"): v for _, lab, v in fams["collector_child_up"]}
    assert up == {"w": 1, "1": 0, "2": 1}
    assert not any(lab.get("worker") == "1" for _, lab, _ in fams["collector_worker_received"])


def test_label_values_are_escaped() -> None:
    weird = 'wo"rk\\er\nx'
    snap = {"now_ms": NOW, "supervisor": {"pid": 1, "started_ms": None}, "tiers": None,
            "children": [{"role": weird, "slot": 1, "pid": 5, "alive": True, "restarts": 0, "symbols": 0,
                          "started_ms": None, "stats": None, "stats_pid": None, "stats_updated_ms": None,
                          "stats_stale": False}]}
    text = render_metrics(snap)
    assert 'role="wo\\"rk\\\\er\\nx"' in text  # the text format's escapes, no raw newline in a sample line
    assert families(text)["collector_child_up"][0][1] == {"role": weird, "worker": "1", "venue": "binance"}
