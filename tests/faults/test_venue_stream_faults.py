"""Fault scenarios per venue on the WebSocket side, OKX and Bybit: malformed frames and a stalled stream.

- Malformed frames (the simulator's malformed_rate, in the venue's own framing: a truncated OKX `arg`/`data`
  frame, a truncated Bybit `topic` frame, and well-formed trades of a symbol the venue does not list): each
  one counted in /stats, samples logged, no connection dropped, no worker restarted, and every good frame
  stored: the venue's trades and candles equal its truth with no gap row.
- A stall (the connection stays open, nothing arrives): the watchdog (exchange.silent_timeout_s) reconnects,
  /health says a silent stream was restarted, and the rows are the truth's, the stall's trades and candles
  in stored gap rows, its liquidations inside one `liquidations` gap row per symbol (no venue lets them be
  repaired: collector.pipeline.liquidation_holes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import wait_for
from venue_rig import FLUSH_SLACK_MS, VENUES, VenueRig

pytestmark = pytest.mark.faults

# Wall seconds of silence before the watchdog restarts a stream (small: the scenario stays short).
SILENT_TIMEOUT_S = 3.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("venue", VENUES)
def test_malformed_frames_counted_logged_good_frames_stored(venue: str, db_url: str, tmp_path: Path) -> None:
    rig = VenueRig(tmp_path, db_url)
    try:
        index = rig.worker_of(venue)
        pid = rig.worker_pids()[index]
        conns = {c["id"] for c in rig.live(venue)}
        rejected = lambda: rig.worker_stats(index)["rejected"]  # noqa: E731
        rig.control(venue, "fault/malformed_rate", rate=0.02)
        wait_for(lambda: rejected().get("malformed_json", 0) >= 20, 60, "20 malformed frames counted")
        rig.control(venue, "fault/malformed_rate", rate=0.02, kind="unknown_symbol")
        wait_for(lambda: rejected().get("unknown_symbol", 0) >= 5, 60, "5 unknown-symbol frames counted")
        rig.control(venue, "fault/malformed_rate", rate=0)
        t = rig.settle(venue)
        injected = t["injected"]
        # every bad frame sent is counted, as what it is (the stats are published every 2 s)
        want = {"malformed_json": injected["malformed"], "unknown_symbol": injected["unknown_symbol"]}
        wait_for(lambda: {k: rejected().get(k, 0) for k in want} == want, 30, f"{want} counted in /stats")
        # nothing dropped or restarted for it, and nothing good lost: no gap, every trade and candle stored
        assert {c["id"] for c in rig.live(venue)} == conns
        assert rig.worker_pids()[index] == pid
        assert rig.gaps(venue, "trades") == [] and rig.gaps(venue, "candles_1m") == []
        assert rig.query("SELECT count(*) FROM trades WHERE symbol LIKE 'ZZZZZ%%'")[0][0] == 0
        rig.assert_liquidations(venue, t)
        assert rig.gaps(venue, "liquidations") == []  # no connection was lost: no hole
        code, out = rig.stop()
        assert code == 0, out[-3000:]
        log = rig.worker_log(index)
        assert "skipped a frame (malformed_json, 1 so far)" in log
        assert "skipped a frame (unknown_symbol, 1 so far)" in log
        assert "skipped a frame (malformed_json, 4 so far)" not in log  # samples are rate-limited
    finally:
        rig.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("venue", VENUES)
def test_stalled_stream_restarted_by_the_watchdog(venue: str, db_url: str, tmp_path: Path) -> None:
    rig = VenueRig(tmp_path, db_url, exchange={"silent_timeout_s": SILENT_TIMEOUT_S})
    try:
        index = rig.worker_of(venue)
        pid = rig.worker_pids()[index]
        wait_for(lambda: rig.count("candles_1m", venue) >= 4, 60, f"{venue} candles stored")
        before = {c["id"] for c in rig.live(venue)}
        # the stall's own time (under load a truth read before it can be a sim second or more earlier, and the
        # events sent in between then end the liquidation holes after it)
        stall = rig.control(venue, "fault/stall")
        stall_ms = stall["sim_ms"]
        assert len(stall["stalled"]) == len(before)
        # the watchdog closes the silent sockets and connects again: new, unstalled connections
        wait_for(lambda: rig.subscribed(venue) and not {c["id"] for c in rig.live(venue)} & before, 60,
                 "every stalled connection replaced")
        resubscribed_ms = max(c["opened_sim"] for c in rig.live(venue))
        # published with the worker's next statistics (every 2 s)
        wait_for(lambda: rig.worker_stats(index)["watchdog_trips"] >= 1, 30, "the watchdog trip in /stats")
        wait_for(lambda: "a silent stream was restarted" in str(rig.health()[1]), 30, "the restart in /health")
        assert "received no messages within timeout, restarting connection" in rig.worker_log(index)
        assert rig.worker_pids()[index] == pid  # the worker reconnected; nobody restarted it
        wait_for(lambda: rig.truth(venue)["sim_ms"] > resubscribed_ms + 120_000, 30, "two sim minutes more")
        outage = (stall_ms - FLUSH_SLACK_MS, resubscribed_ms + FLUSH_SLACK_MS)
        t = rig.settle(venue, outage)
        assert rig.trade_problems(venue, t, True, outage) == []
        if venue == "okx":  # the stall's fills were never sent: found as a gap (Bybit's ids cannot show one)
            assert rig.gaps(venue, "trades")
        assert rig.candle_problems(venue, t) == []
        # the stall's liquidations: one hole per symbol, from the last event before the stall (less the late
        # margin) to the symbol's first trade or liquidation after the reconnect; every other one stored
        holes = rig.gap_rows(venue, "liquidations")
        assert sorted(h[0] for h in holes) == sorted(rig.contract_sizes(venue)), holes
        assert all(lo <= stall_ms < hi and state == "unfillable" for _, lo, hi, state in holes), (stall_ms, holes)
        rig.assert_liquidations(venue, t, holes=True)
        # the same process reconnected: it keeps what it was sent before the stall, and (OKX) never got what was
        # published during it; Bybit's tickers snapshot on resubscribing is the state last pushed
        rig.assert_funding(venue, t, outage, unseen=(stall_ms, resubscribed_ms) if venue == "okx" else None)
        code, out = rig.stop()
        assert code == 0, out[-3000:]
    finally:
        rig.stop()
