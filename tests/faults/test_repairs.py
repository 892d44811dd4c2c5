"""Fault scenarios: repairs survive whatever stops them, candles go first, late candles fix their roll-ups.

The real collector (`supervisor.py`) against the in-process simulator (tests/faults/test_gaps.py's
`Collector`) and a real PostgreSQL; the simulator's REST answers are slowed down (`fault/rest?delay=`) so
that repairs are still queued or running when the fault strikes. Verdicts compare the database with the
simulator's ground truth value by value: every aggTrade id once (keep_all), every closed 1m kline, every
closed 5m kline equal to its roll-up, and every recorded gap filled.
"""

from __future__ import annotations

import math
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psutil
import pytest
from helpers import SupervisorProcess, miss_a_minute_close, wait_for
from test_gaps import Collector, assert_every_id_once, ids_complete
from test_worker_crash import _worker_pids

from collector.feed.backfill import TRADES_RESERVE
from exchange_sim import SimConfig

pytestmark = pytest.mark.faults

# Every REST answer takes this long while a test wants repairs to pile up (one request at a time per
# worker: a handful of gaps then takes tens of seconds to work through).
SLOW_REST_S = 4
# The workers read unfinished repairs back from `gaps` this often (exchange.gap_rescan_s; 60 s by default).
RESCAN_S = 2


def open_gaps(c: Collector, kind: str | None = None, symbols: list[str] | None = None) -> int:
    """Rows of `gaps` still detected or filling (of a kind, of some symbols)."""
    q = "SELECT count(*) FROM gaps WHERE state IN ('detected', 'filling')"
    args: list[object] = []
    if kind is not None:
        q += " AND kind = %s"
        args.append(kind)
    if symbols is not None:
        q += " AND symbol = ANY(%s)"
        args.append(symbols)
    return c.query(q, *args)[0][0]


def gap_states(c: Collector) -> dict[str, int]:
    return dict(c.query("SELECT state, count(*) FROM gaps GROUP BY state"))


def worker_symbols(c: Collector, n: int) -> list[str]:
    """The symbols worker n (1-based) collects, from its log's "symbols:" line."""
    path = c.logs / f"worker-{n}.log"
    line = wait_for(lambda: next((ln for ln in (path.read_text() if path.exists() else "").splitlines()
                                  if "symbols: " in ln), None), 30, f"worker {n} to log its symbols")
    return line.split("symbols: ", 1)[1].split()


def slow_rest(c: Collector, on: bool) -> None:
    c.control("fault/rest", fraction=1, delay=SLOW_REST_S) if on else c.control("fault/rest")


def drop_before_a_minute_closes(c: Collector) -> float:
    """Every connection misses a minute's close (helpers.miss_a_minute_close): a candle hole on every symbol
    and the trades meanwhile (a trade gap each). Returns the wall time of the drop."""
    return miss_a_minute_close(c.sim.rest_url)


def stored_1m(c: Collector) -> set[tuple[str, int]]:
    return {(s, int(ms)) for s, ms in c.query(
        "SELECT symbol, (extract(epoch FROM time) * 1000)::bigint FROM candles_1m")}


def candles(c: Collector, table: str) -> dict[tuple[str, int], tuple]:
    return {(r[0], r[1]): r[2:] for r in c.query(
        f"SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume, "
        f"quote_volume, trades FROM {table}")}


def truth_candles(t: dict, interval: str) -> dict[tuple[str, int], tuple]:
    return {(k["s"], k["t"]): (Decimal(k["o"]), Decimal(k["h"]), Decimal(k["l"]), Decimal(k["c"]), Decimal(k["v"]),
                               Decimal(k["q"]), k["n"]) for k in t["klines"] if k["i"] == interval}


def assert_matches_truth(c: Collector, t: dict, rollups: bool = True) -> None:
    """Every closed 1m kline stored once and equal; every closed 5m kline equal to its roll-up (unless the
    scenario is too short to close one); every aggTrade id once; no gap left open."""
    want_1m = truth_candles(t, "1m")
    wait_for(lambda: set(want_1m) <= stored_1m(c), 60, "every closed 1m kline")
    assert candles(c, "candles_1m") == want_1m
    want_5m = truth_candles(t, "5m") if rollups else {}
    assert want_5m or not rollups
    wait_for(lambda: {k: candles(c, "candles_5m").get(k) for k in want_5m} == want_5m, 30,
             "every closed 5m kline to equal its roll-up")
    symbols = [s for s, v in t["symbols"].items() if (v["agg_ids"]["last"] or -1) >= 0]
    wait_for(lambda: ids_complete(c, t, symbols), 60, "every aggTrade id")
    assert_every_id_once(c, t, symbols)
    wait_for(lambda: open_gaps(c) == 0, 60, "no gap left detected or filling")


def writer_pid(c: Collector) -> int | None:
    for p in psutil.Process(c.sup.proc.pid).children(recursive=True):
        try:
            if " ".join(p.cmdline()).strip() == "collector: writer":
                return p.pid
        except psutil.Error:  # exited (or a zombie not reaped yet)
            continue
    return None


def restart(c: Collector, tmp_path: Path) -> None:
    """A new `supervisor.py` on the same config, database and simulator (after the old one stopped)."""
    c.sup = SupervisorProcess("--workers", "2", "--config", str(tmp_path / "main.yaml"), cwd=tmp_path)
    c._stopped = None


@pytest.mark.timeout(300)
def test_worker_killed_mid_repair_leaves_its_gaps_recorded_and_they_are_filled(db_url: str, tmp_path: Path) -> None:
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=16, rate=80, speed=10, seed=21), workers=2,
                  filters={"trades": {"keep_all": True}}, exchange={"gap_rescan_s": RESCAN_S})
    try:
        mine = worker_symbols(c, 1)
        # a trade of every symbol stored (keep_all), not only sent: a skip before the collector's first trade
        # of a symbol is no gap it can see (a fresh start has nothing to compare the first id with)
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM trades WHERE symbol = ANY(%s)", mine)[0][0]
                 == len(mine), 60, "a stored trade of every symbol of worker 1")
        slow_rest(c, True)
        for sym in mine:
            c.control("fault/skip", symbol=sym, count=3)
        # recorded at detection, before any repair finished: that is what a successor finds
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM gaps WHERE symbol = ANY(%s)", mine)[0][0]
                 == len(mine), 60, "worker 1's gaps to be recorded")
        # a successor resumes gap detection from the trade ids and closed klines its predecessor published
        # (every 2 s, once acknowledged): wait for a stored kline of every symbol and a publication made
        # after that and after the gaps were found, as a longer-lived worker has
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM candles_1m WHERE symbol = ANY(%s)",
                                 mine)[0][0] == len(mine), 60, "a closed kline of every symbol of worker 1")
        published = (datetime.now(UTC) + timedelta(seconds=4.5)).isoformat()
        wait_for(lambda: (c.stats()["workers"][0]["activity_published_at"] or "") > published[:23], 30,
                 "worker 1 to publish its symbol slots")
        assert open_gaps(c, "trades", mine) >= 2  # still being repaired (slow REST) when it is killed
        victim = _worker_pids(c)["1/2"]
        os.kill(victim, signal.SIGKILL)
        recorded = c.query("SELECT symbol, from_id, to_id FROM gaps WHERE kind = 'trades' AND symbol = ANY(%s)", mine)
        slow_rest(c, False)
        wait_for(lambda: _worker_pids(c).get("1/2", victim) != victim, 60, "worker 1 restarted")
        wait_for(lambda: "took over" in (c.logs / "worker-1.log").read_text(), 60,
                 "the successor to take over the unfinished repairs")
        # what was missed while no process read worker 1's symbols shows up at each symbol's next trade (ids)
        # and next closed kline (minutes)
        at_restart = {s: (v["agg_ids"]["last"], v["kline_closed"].get("1m", 0)) for s, v in c.truth()["symbols"].items()}
        wait_for(lambda: all(v["agg_ids"]["last"] > at_restart[s][0] and v["kline_closed"].get("1m", 0) > at_restart[s][1]
                             for s, v in c.truth()["symbols"].items()), 60, "a trade and a kline after the restart")
        c.control("pause")
        t = c.truth(klines=True)
        assert_matches_truth(c, t, rollups=False)  # speed 10: too short for a closed 5m kline
        for sym, lo, hi in recorded:  # each range the killed worker had found: filled, not just re-found
            assert c.query("SELECT state FROM gaps WHERE kind = 'trades' AND symbol = %s AND from_id = %s "
                           "AND to_id = %s", sym, lo, hi) == [("filled",)], (sym, lo, hi)
        code, out = c.stop()
        assert code == 0, out[-3000:]
    finally:
        c.stop()


@pytest.mark.timeout(300)
def test_stop_with_pending_repairs_records_them_and_the_next_start_fills_them(db_url: str, tmp_path: Path) -> None:
    """SIGTERM while candle holes and trade gaps wait for slow REST: they stay detected in `gaps`; the next
    start repairs them, and the 5m candles built over the holes end up equal to the exchange's 5m klines."""
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=20, rate=100, speed=30, seed=22), workers=2,
                  filters={"trades": {"keep_all": True}}, exchange={"gap_rescan_s": RESCAN_S})
    try:
        wait_for(lambda: all(s["kline_closed"].get("1m", 0) >= 2 for s in c.truth()["symbols"].values()), 60,
                 "two closed 1m klines per symbol")
        slow_rest(c, True)
        drop_before_a_minute_closes(c)
        wait_for(lambda: open_gaps(c, "candles_1m") >= 10, 60, "candle holes to be recorded")
        c.control("pause")  # the truth is final from here on, across the restart
        t = c.truth(klines=True)
        code, out = c.sup.stop()
        assert code == 0, out[-3000:]
        assert open_gaps(c, "candles_1m") >= 10 and open_gaps(c, "trades") >= 10, gap_states(c)
        holes = set(truth_candles(t, "1m")) - stored_1m(c)
        assert len(holes) >= 10  # really missing, not only recorded
        slow_rest(c, False)
        restart(c, tmp_path)
        wait_for(lambda: holes <= stored_1m(c), 60, "the next start to fill the candle holes")
        # the market moves on until the 5m klines over the holes have closed (nothing was missed while the
        # collector was down: the market was paused)
        hole_5m = {(s, ms // 300_000 * 300_000) for s, ms in holes}
        wait_for(lambda: len(c.live_connections()) >= 2, 60, "the new workers to connect")
        c.control("resume")
        wait_for(lambda: hole_5m <= set(truth_candles(c.truth(klines=True), "5m")), 60,
                 "the 5m klines over the holes to close")
        c.control("pause")
        t = c.truth(klines=True)
        assert_matches_truth(c, t)
        code, out = c.stop()
        assert code == 0, out[-3000:]
    finally:
        c.stop()


@pytest.mark.timeout(300)
def test_writer_killed_mid_repair_loses_no_repair(db_url: str, tmp_path: Path) -> None:
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=20, rate=100, speed=30, seed=23), workers=2,
                  filters={"trades": {"keep_all": True}}, exchange={"gap_rescan_s": RESCAN_S})
    try:
        wait_for(lambda: all(s["kline_closed"].get("1m", 0) >= 2 for s in c.truth()["symbols"].values()), 60,
                 "two closed 1m klines per symbol")
        slow_rest(c, True)
        drop_before_a_minute_closes(c)
        wait_for(lambda: c.query("SELECT count(*) FROM gaps WHERE state = 'filling'")[0][0] >= 1
                 and open_gaps(c, "candles_1m") >= 1, 60, "repairs under way")
        writer = wait_for(lambda: writer_pid(c), 10, "the writer's pid")
        os.kill(writer, signal.SIGKILL)
        slow_rest(c, False)
        wait_for(lambda: writer_pid(c) not in (None, writer), 60, "a new writer")
        closed_5m = {s: v["kline_closed"].get("5m", 0) for s, v in c.truth()["symbols"].items()}
        wait_for(lambda: all(v["kline_closed"].get("5m", 0) > closed_5m[s] for s, v in c.truth()["symbols"].items()),
                 60, "a 5m kline to close after the kill")
        c.control("pause")
        t = c.truth(klines=True)
        assert_matches_truth(c, t)
        assert gap_states(c).get("filled", 0) >= 20
        code, out = c.stop()
        assert code == 0, out[-3000:]
    finally:
        c.stop()


@pytest.mark.timeout(480)
def test_after_a_mass_drop_candles_come_first_and_gaps_within_the_budget(db_url: str, tmp_path: Path) -> None:
    """A small budget (300 weight/min) and 40 symbols: the trade gaps of a mass drop cost ~800 weight, well
    over a minute of budget. Every missing 1m candle is still back within 60 s of the drop (candle repairs
    jump the queue), and every trade gap within the budget's arithmetic."""
    budget = 300
    # trade_history: the exchange still has every missed id when the last gap's turn comes, minutes later
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=40, rate=60, speed=30, seed=24,
                                              trade_history=150_000), workers=2,
                  filters={"trades": {"keep_all": True}, "open_interest": {"interval_s": 3600}},
                  exchange={"rest_weight_per_min": budget})
    try:
        wait_for(lambda: all(s["kline_closed"].get("1m", 0) >= 2 for s in c.truth()["symbols"].values()), 60,
                 "two closed 1m klines per symbol")
        dropped_at = drop_before_a_minute_closes(c)
        wait_for(lambda: all(s["kline_closed"].get("1m", 0) >= 4 for s in c.truth()["symbols"].values()), 60,
                 "two more closed 1m klines per symbol")
        t = c.truth(klines=True)
        want = set(truth_candles(t, "1m"))
        wait_for(lambda: want <= stored_1m(c), max(1.0, dropped_at + 60 - time.time()),
                 "every missing 1m candle within 60 s of the drop")
        candles_s = time.time() - dropped_at
        trade_gaps, pages = c.query("SELECT count(*), sum(ceil((to_id - from_id + 1) / 1000.0)) FROM gaps "
                                    "WHERE kind = 'trades'")[0]
        holes = c.query("SELECT count(*) FROM gaps WHERE kind = 'candles_1m'")[0][0]
        assert trade_gaps >= 30 and holes >= 30
        # the weight of the repairs: an aggTrades page is 20, a klines request of a few minutes 1. The
        # exchange counts weight per clock minute and trade pages leave TRADES_RESERVE of each minute to
        # candle repairs (which fit in it), so the pages may take ceil(W / ((1 - reserve) * B)) minute
        # windows, the first of which may be nearly over when the drop happens; plus 20 s for detection
        # and a loaded machine
        assert holes <= TRADES_RESERVE * budget
        deadline = math.ceil(int(pages) * 20 / ((1 - TRADES_RESERVE) * budget)) * 60 + 20
        wait_for(lambda: c.query("SELECT count(*) FROM gaps WHERE kind = 'trades' AND state = 'filled'")[0][0]
                 >= trade_gaps, max(1.0, dropped_at + deadline - time.time()),
                 f"every trade gap within {deadline:.0f} s of the drop")
        gaps_s = time.time() - dropped_at
        heaviest = c.max_weight_per_minute(since=dropped_at - 60)
        assert 0 < heaviest <= budget, heaviest
        code, out = c.stop()
        assert code == 0, out[-3000:]
        print(f"mass drop: 1m candles back after {candles_s:.1f} s, {trade_gaps} trade gaps filled after "
              f"{gaps_s:.1f} s (arithmetic + 20 s: {deadline:.0f} s); heaviest minute {heaviest} of {budget}")
    finally:
        c.stop()


@pytest.mark.timeout(180)
def test_one_workers_backlog_uses_the_whole_budget(db_url: str, tmp_path: Path) -> None:
    """Gaps on worker 1's symbols only, a budget of 600/min: a 1/2 share (300/min, 15 pages at once) would
    need 20 s more for 20 pages; the one shared budget (480 for trade pages at once, see TRADES_RESERVE,
    less the supervisor's start-up requests) fills them at once. Also the target "a single gap is filled
    within 10 s when the budget is idle"."""
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=48, rate=200, speed=10, seed=25), workers=2,
                  filters={"trades": {"keep_all": True}, "open_interest": {"interval_s": 3600}},
                  exchange={"rest_weight_per_min": 600})
    try:
        mine = worker_symbols(c, 1)
        assert len(mine) >= 21
        wait_for(lambda: all((v["agg_ids"]["last"] or -1) >= 0 for s, v in c.truth()["symbols"].items() if s in mine),
                 60, "trades on every symbol of worker 1")
        single = mine[0]
        skipped_at = time.time()
        c.control("fault/skip", symbol=single, count=5)
        wait_for(lambda: c.query("SELECT count(*) FROM gaps WHERE symbol = %s AND filled_at IS NOT NULL",
                                 single)[0][0],
                 10, "a single gap filled within 10 s")
        single_s = time.time() - skipped_at
        others = mine[1:21]
        skipped_at = time.time()
        for sym in others:
            c.control("fault/skip", symbol=sym, count=5)
        wait_for(lambda: c.query("SELECT count(*) FROM gaps WHERE symbol = ANY(%s) AND filled_at IS NOT NULL",
                                 others)[0][0] >= len(others), 10, f"{len(others)} gaps of one worker filled")
        backlog_s = time.time() - skipped_at
        code, out = c.stop()
        assert code == 0, out[-3000:]
        print(f"single gap filled after {single_s:.1f} s; {len(others)} gaps of one worker after {backlog_s:.1f} s")
    finally:
        c.stop()
