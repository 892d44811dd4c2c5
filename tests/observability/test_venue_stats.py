"""Per-venue totals in /stats and the venue label on /metrics: two workers of two venues, their counters
summed per venue, the connection state from liveness and event age."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from test_health import MIN, NOW, _publish_healthy, _snap

from collector.observability.metrics import render_metrics
from collector.observability.stats import stats_json
from collector.runtime.shm import StatsBlock


def _two_venues(block: StatsBlock) -> None:
    _publish_healthy(block)  # workers 1 and 2: received trades 500 / 1000, funding 20, klines 3 each
    w2 = block.process_slot(2, pid=102)  # a fresh slot: worker 2's values again, and more
    w2.update({"trades": 1000, "funding": 20, "klines": 3}, prefix="received.")
    w2.update({"last_event_ms.trades": NOW - 1_000, "symbols": 10, "reconnects": 1})
    w2.update({"malformed_json": 4, "invalid_frame": 1, "bad_number": 9}, prefix="rejected.")
    w2.update({"trades": 30, "gaps": 2}, prefix="rows.")
    w2.update({"last_event_ms.funding": NOW - 500, "paused": 1})
    w2.publish(now_ms=NOW - 200)


def test_each_venue_sums_its_own_workers(block: StatsBlock) -> None:
    _two_venues(block)
    doc = stats_json(_snap(block, c2={"venue": "bybit", "symbols": 7}))
    assert [w["venue"] for w in doc["workers"]] == ["binance", "bybit"]
    binance, bybit = doc["venues"]["binance"], doc["venues"]["bybit"]
    assert (binance["workers"], binance["workers_up"], binance["symbols"]) == (1, 1, 10)
    assert binance["received"] == {"trades": 500, "funding": 20, "klines": 3, "liquidations": 0,
                                   "open_interest": 0} and binance["messages"] == 523
    assert bybit["messages"] == 1023 and bybit["symbols"] == 7
    # frame errors: what could not be decoded at all, not a bad value in a good frame
    assert (bybit["frame_errors"], binance["frame_errors"]) == (5, 0)
    assert bybit["rows"]["trades"] == 30 and bybit["gaps"] == 2 and binance["gaps"] == 0
    # a mean since the process started (10 min before its publication 200 ms before NOW)
    assert binance["messages_per_s"] == round(523 / ((10 * MIN - 200) / 1000), 1)
    assert bybit["connection"] == {"state": "receiving", "reconnects": 1, "watchdog_trips": 0, "paused_workers": 1,
                                   "last_event_time": "2025-06-15T15:06:39.500Z"}


def test_frame_errors_count_the_venue_decoders_whole_frame_skips(block: StatsBlock) -> None:
    # An OKX / Bybit decoder skips a whole frame as venue_error (an error answer), venue_notice (OKX's
    # notice of a closing connection), unknown_channel or unknown_side: frames the venue sent that the feed
    # could not use, as malformed_json is; bad_number and unknown_symbol are also a good frame's bad value.
    _publish_healthy(block)
    w2 = block.process_slot(2, pid=102)
    w2.update({"venue_error": 1, "venue_notice": 2, "unknown_channel": 3, "unknown_side": 4, "bad_number": 9,
               "unknown_symbol": 7}, prefix="rejected.")
    w2.publish(now_ms=NOW - 200)
    doc = stats_json(_snap(block, c2={"venue": "okx"}))
    assert (doc["venues"]["okx"]["frame_errors"], doc["venues"]["binance"]["frame_errors"]) == (10, 0)


def test_a_venue_whose_worker_is_down_or_silent_says_so(block: StatsBlock) -> None:
    _two_venues(block)
    doc = stats_json(_snap(block, c1={"alive": False, "pid": None}, c2={"venue": "bybit"}))
    assert doc["venues"]["binance"]["connection"]["state"] == "down"
    assert doc["venues"]["binance"]["workers_up"] == 0 and doc["venues"]["binance"]["messages_per_s"] == 0
    # both workers on one venue, one of them silent for two minutes: partial
    _publish_healthy(block)
    stale = block.process_slot(2, pid=102)
    stale.update({"last_event_ms.trades": NOW - 2 * MIN})
    stale.publish(now_ms=NOW - 200)
    assert stats_json(_snap(block))["venues"]["binance"]["connection"]["state"] == "partial"
    assert list(stats_json(_snap(block))["venues"]) == ["binance"]


def test_every_worker_sample_on_metrics_carries_its_venue(block: StatsBlock) -> None:
    _two_venues(block)
    text = render_metrics(_snap(block, c2={"venue": "okx"}))
    by_worker: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if "worker" in s.labels:
                by_worker.setdefault(s.labels["worker"], set()).add(s.labels.get("venue", "?"))
    assert by_worker == {"1": {"binance"}, "2": {"okx"}}
