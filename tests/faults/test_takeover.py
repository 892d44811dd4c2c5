"""Fault scenarios: a worker's successor continues from its predecessor's checkpoints (collector.runtime.checkpoints).

kill -9 of workers at seeded points around sim-minute boundaries, and a SIGHUP that replaces every
worker; afterwards the database is compared with the simulator's truth value by value:

- funding: no symbol-minute with two rows;
- trades: exactly the rows one uninterrupted filter would keep, except where a successor had to
  repair a gap. The filter runs with the time rule alone (large-trade and price rules disabled by
  configuration), so the expected rows follow from the trade tape and the gaps the collector reports
  (`expected_kept`). The bound on extra rows: a successor resumes the filter state S as of its
  checkpoint (last id X) and decides the live trades from Y on from S, while the gap X+1..Y-1 is
  re-filtered from S as well. An uninterrupted filter reaches Y with a state that differs from S only
  if it kept a trade inside the gap; if it did not, the two agree from Y on. If it did, both are
  greedy time samplers over the same trades, the successor's starting no later, so their keeps
  interleave (a1 <= b1 <= a2 <= b2 ...): at most one extra time_interval row. Hence
  extra <= number of gaps in which the uninterrupted filter kept a trade (`bound`); a successor that
  starts the filter afresh keeps its first trade of every symbol and exceeds it;
- open interest: every window of `filters.open_interest.interval_s` (scaled with the sim speed to the
  production ratio: 300 s of exchange time) holds a row of every symbol;
- every closed 1m kline stored once;
- liquidations: every one sent stored once and equal, or inside a `liquidations` gap row of its symbol
  (collector.pipeline.liquidation_holes: the times no worker received them, unrepairable); a kill -9 leaves
  one such row per symbol of the victim, a full restart one per symbol, a hand-over none.
"""

from __future__ import annotations

import math
import os
import random
import signal
from collections import Counter, defaultdict
from pathlib import Path

import psutil
import pytest
from helpers import SupervisorProcess, wait_for, write_config
from test_gaps import Collector, assert_liquidations

from collector.pipeline.trade_filter import SymbolFilter
from exchange_sim import SimConfig

pytestmark = pytest.mark.faults

SPEED = 10  # sim seconds per wall second
SYMBOLS = 16
WORKERS = 2
# The time rule's interval, in sim (= event) time; all tiers alike, so the expectation needs no tiers.
SAMPLE_S = 300
# Open interest: the production ratio, 300 s of exchange time per poll interval, in wall seconds.
OI_INTERVAL_S = 300 / SPEED
MINUTE_MS = 60_000


def _config() -> dict:
    return {
        "filters": {
            "trades": {"tier_intervals_s": [SAMPLE_S] * 4, "tier_multipliers": [1e12] * 4,
                       "price_change_pct": 1000.0},
            "open_interest": {"interval_s": OI_INTERVAL_S},
        },
    }


def _start(tmp_path: Path, db_url: str, seed: int) -> Collector:
    return Collector(tmp_path, db_url, SimConfig(port=0, symbols=SYMBOLS, rate=60, speed=SPEED, seed=seed,
                                                 trade_history=200_000), workers=WORKERS, **_config())


def _workers(c: Collector) -> dict[str, int]:
    out = {}
    for p in psutil.Process(c.sup.proc.pid).children(recursive=True):
        try:
            title = " ".join(p.cmdline()).strip()
        except psutil.Error:
            continue
        if title.startswith("collector: worker "):
            out[title.split()[2]] = p.pid  # "1/2"
    return out


def _worker_symbols(c: Collector, name: str) -> list[str]:
    """The symbols worker `name` ("1/2") collects now: its log's latest "symbols:" line."""
    log = (c.logs / f"worker-{name.split('/')[0]}.log").read_text()
    return log.rsplit("symbols: ", 1)[1].split("\n", 1)[0].split()


def _log_count(c: Collector, text: str) -> int:
    return c.worker_logs().count(text)


def _sim_ms(c: Collector) -> int:
    return c.sim.sim.sim_now()


def _wait_sim(c: Collector, target_ms: int, what: str) -> None:
    wait_for(lambda: _sim_ms(c) >= target_ms, 120, what, poll=0.002)


def _tape(c: Collector) -> dict[str, list[tuple[int, int]]]:
    """Every aggTrade the simulator published: symbol -> [(id, trade time ms)], in id order."""
    def read() -> dict[str, list[tuple[int, int]]]:
        return {st.name: [(r[0], r[5]) for r in st.trades] for st in c.sim.sim.market.states}
    return c.sim.call(read)


def _filter() -> SymbolFilter:
    return SymbolFilter(3, math.inf, SAMPLE_S * 1000, 1000.0)


def expected_kept(tape: list[tuple[int, int]], gaps: list[tuple[int, int]]) -> set[int]:
    """Ids the collector keeps: one filter over the tape, forked at every gap as the pipeline does (the
    gap re-filtered from a copy of the state the successor resumed, the live trades from that state)."""
    f, kept = _filter(), set()
    starts = {lo: hi for lo, hi in gaps}
    skip_to = None
    for a, t in tape:
        if skip_to is not None and a <= skip_to:
            continue
        if a in starts:
            fork = f.copy()  # as Pipeline._gap forks it (copy.copy cannot rebuild a compiled SymbolFilter)
            for b, tb in tape:
                if a <= b <= starts[a] and fork.decide(1.0, 1.0, tb) is not None:
                    kept.add(b)
            skip_to = starts[a]
            continue
        if f.decide(1.0, 1.0, t) is not None:
            kept.add(a)
    return kept


def uninterrupted_kept(tape: list[tuple[int, int]]) -> set[int]:
    return expected_kept(tape, [])


def _all_receiving(c: Collector) -> bool:
    """Every current worker has received trades of all its symbols by now (~40 per symbol and second)."""
    workers = c.stats()["workers"]
    return len(workers) == WORKERS and all(
        w and w.get("alive") and (w.get("received") or {}).get("trades", 0) >= 50 * w["symbols"] for w in workers)


def _repairs_done(c: Collector) -> bool:
    """Every gap the current workers detected is resolved (stored in `gaps`), and none is unfilled."""
    workers = c.stats()["workers"]
    if len(workers) < WORKERS:
        return False
    for w in workers:
        if not w or w.get("rejected") is None:
            return False
        b = w.get("backfilled") or {}
        if (w["rejected"].get("gap", 0) != b.get("gaps_filled", 0) + b.get("gaps_unfilled", 0)
                or b.get("gaps_unfilled", 0)):
            return False
    # liquidation holes are unfillable by nature (no venue serves their history): not repairs
    return c.query("SELECT count(*) FROM gaps WHERE filled_at IS NULL AND kind <> 'liquidations'")[0][0] == 0


def _stored_1m(c: Collector) -> list[tuple[str, int]]:
    return c.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint FROM candles_1m")


def _closed_1m(t: dict, stored: list[tuple[str, int]], listed: str | None) -> set[tuple[str, int]]:
    """The closed 1m klines the collector must have stored: all of them, but for a symbol listed during the
    run only from its first stored one (the minute it was listed in closes ~3 wall seconds later at speed 10,
    often before the worker that gets it subscribes; nothing backfills a listing's first minutes)."""
    first_listed = min((ms for s, ms in stored if s == listed), default=None)
    return {(k["s"], k["t"]) for k in t["klines"] if k["i"] == "1m"
            and (k["s"] != listed or (first_listed is not None and k["t"] >= first_listed))}


def _finish(c: Collector, listed: str | None = None) -> tuple[dict, dict[str, list[tuple[int, int]]], str]:
    """Pause the market, wait until everything published is stored (gaps filled), stop with SIGTERM."""
    c.control("pause")
    t = c.truth(klines=True)

    def stored_all() -> bool:
        stored = _stored_1m(c)
        return _closed_1m(t, stored, listed) <= set(stored)

    wait_for(lambda: _repairs_done(c) and stored_all(), 120, "every gap filled and every closed kline stored")
    tape = _tape(c)
    code, out = c.stop()
    assert code == 0, out[-3000:]
    return t, tape, out


def _assert_matches_truth(c: Collector, t: dict, tape: dict[str, list[tuple[int, int]]],
                          window_start_ms: int, listed: str | None = None) -> dict[str, int]:
    """`listed`: a symbol listed during the run, watched only from when the collector picked it up, so its
    klines and open interest are checked from its first stored row on."""
    # funding: never two rows in one symbol-minute
    doubled = c.query("SELECT symbol, date_trunc('minute', time), count(*) FROM funding GROUP BY 1, 2 "
                      "HAVING count(*) > 1")
    assert doubled == [], f"{len(doubled)} funding symbol-minutes with 2 rows: {doubled[:5]}"
    assert c.query("SELECT count(*) FROM funding")[0][0] > 0
    # 1m klines: every closed one, once
    stored = _stored_1m(c)
    assert len(stored) == len(set(stored)) and set(stored) == _closed_1m(t, stored, listed)
    # trades: the expected rows exactly, and the extra time_interval rows within the bound
    gaps: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for s, lo, hi in c.query("SELECT symbol, from_id, to_id FROM gaps WHERE kind <> 'liquidations'"):
        gaps[s].append((lo, hi))
    rows: dict[str, set[int]] = defaultdict(set)
    for s, a, reason in c.query("SELECT symbol, trade_id, save_reason FROM trades"):
        assert reason == "time_interval", (s, a, reason)
        rows[s].add(a)
    extra = bound = 0
    for s, trades in tape.items():
        if not trades:
            continue
        assert rows[s], f"{s}: traded, but no trade stored"
        # the collector's filter starts at the first trade it received (kept: nothing was kept before it)
        trades = [tr for tr in trades if tr[0] >= min(rows[s])]
        want = expected_kept(trades, gaps[s])
        assert rows[s] == want, (s, sorted(rows[s] - want)[:5], sorted(want - rows[s])[:5], gaps[s])
        plain = uninterrupted_kept(trades)
        extra += max(0, len(rows[s]) - len(plain))
        bound += sum(1 for lo, hi in gaps[s] if any(lo <= a <= hi for a in plain))
    assert extra <= bound, f"{extra} extra time_interval rows, bound {bound}"
    # open interest: every symbol in every window of 300 s of exchange time, from the first poll to the pause
    window = int(OI_INTERVAL_S * SPEED * 1000)
    oi: dict[str, list[int]] = defaultdict(list)
    for s, ms in c.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint FROM open_interest ORDER BY 2"):
        oi[s].append(ms)
    assert set(oi) == set(tape)
    for s, times in oi.items():
        start = times[0] if s == listed else window_start_ms
        points = [start, *[x for x in times if x >= start], t["sim_ms"]]
        worst = max(b - a for a, b in zip(points, points[1:], strict=False))
        assert worst <= window, f"{s}: {worst / 1000:.0f} s of exchange time without an open-interest row"
    holes = assert_liquidations(c, t)
    return {"extra": extra, "bound": bound, "gaps": sum(map(len, gaps.values())), "liquidation_holes": holes}



@pytest.mark.timeout(420)
@pytest.mark.parametrize("seed", [3, 8])
def test_kill_9_around_minute_boundaries_resumes_every_step(db_url: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    c = _start(tmp_path, db_url, seed)
    try:
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM open_interest")[0][0] == SYMBOLS, 90,
                 "a first open-interest row of every symbol")
        oi_start = c.query("SELECT max(t) FROM (SELECT min((extract(epoch FROM time) * 1000)::bigint) AS t "
                           "FROM open_interest GROUP BY symbol) f")[0][0]
        # just before, just after, and anywhere in a minute, in random order; wall ms -> sim ms x SPEED
        offsets = [-rng.uniform(50, 600), rng.uniform(20, 600), rng.uniform(-30_000, 30_000) / SPEED]
        rng.shuffle(offsets)
        killed: Counter[str] = Counter()  # symbol -> kills of the worker collecting it
        for offset_wall_ms in offsets:
            victim_name = rng.choice([f"{i + 1}/{WORKERS}" for i in range(WORKERS)])
            boundary = (_sim_ms(c) // MINUTE_MS + 2) * MINUTE_MS
            _wait_sim(c, boundary + int(offset_wall_ms * SPEED), "the kill point")
            victim = _workers(c)[victim_name]
            killed.update(_worker_symbols(c, victim_name))
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda n=victim_name, v=victim: _workers(c).get(n, v) != v, 60, "the worker to be restarted")
            wait_for(lambda: _all_receiving(c), 60, "the successor to receive trades")
            wait_for(lambda: _repairs_done(c), 90, "the takeover gaps to be filled")
        # one more open-interest period after the last takeover, then compare
        _wait_sim(c, _sim_ms(c) + int(OI_INTERVAL_S * SPEED * 1000 * 1.2), "an open-interest period")
        t, tape, _ = _finish(c)
        result = _assert_matches_truth(c, t, tape, oi_start)
        print("kill -9 result:", result)  # the README's numbers (-s)
        assert result["liquidation_holes"] == dict(killed)  # one per symbol and kill, no other symbol's
    finally:
        c.stop()


@pytest.mark.timeout(420)
def test_sighup_replacing_every_worker_hands_over_exactly(db_url: str, tmp_path: Path) -> None:
    c = _start(tmp_path, db_url, 5)
    try:
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM open_interest")[0][0] == SYMBOLS, 90,
                 "a first open-interest row of every symbol")
        oi_start = c.query("SELECT max(t) FROM (SELECT min((extract(epoch FROM time) * 1000)::bigint) AS t "
                           "FROM open_interest GROUP BY symbol) f")[0][0]
        cfg = tmp_path / "main.yaml"
        import yaml

        doc = yaml.safe_load(cfg.read_text())
        doc["exchange"]["silent_timeout_s"] = 61  # an exchange setting: every worker is replaced
        write_config(cfg, **doc)
        before = set(_workers(c).values())
        c.sup.signal(signal.SIGHUP)
        wait_for(lambda: len(_workers(c)) == WORKERS and not before & set(_workers(c).values()), 120,
                 "every predecessor to retire")
        wait_for(lambda: _all_receiving(c) and _repairs_done(c), 90, "the successors to collect")
        _wait_sim(c, _sim_ms(c) + int(OI_INTERVAL_S * SPEED * 1000 * 1.2), "an open-interest period")
        t, tape, _ = _finish(c)
        result = _assert_matches_truth(c, t, tape, oi_start)
        print("SIGHUP result:", result)
        assert result["extra"] == 0 and result["liquidation_holes"] == {}  # the successors received meanwhile
        assert _log_count(c, "the predecessor has handed over") == WORKERS
    finally:
        c.stop()


@pytest.mark.timeout(420)
def test_full_restart_resumes_from_the_database(db_url: str, tmp_path: Path) -> None:
    """SIGTERM, then a new collector on the same database, within one minute of exchange time (the market
    is paused meanwhile, so the state carried over is all that differs from an uninterrupted run)."""
    c = _start(tmp_path, db_url, 9)
    try:
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM open_interest")[0][0] == SYMBOLS, 90,
                 "a first open-interest row of every symbol")
        oi_start = c.query("SELECT max(t) FROM (SELECT min((extract(epoch FROM time) * 1000)::bigint) AS t "
                           "FROM open_interest GROUP BY symbol) f")[0][0]
        boundary = (_sim_ms(c) // MINUTE_MS + 1) * MINUTE_MS
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM funding WHERE time >= to_timestamp(%s)",
                                 boundary / 1000)[0][0] == SYMBOLS, 60, "this minute's funding rows")
        c.control("pause")
        code, out = c.sup.stop()
        assert code == 0, out[-3000:]
        c.sup = SupervisorProcess("--workers", str(WORKERS), "--config", str(tmp_path / "main.yaml"), cwd=tmp_path)
        wait_for(lambda: len(c.live_connections()) >= WORKERS, 60, "the new workers to connect")
        c.control("resume")
        wait_for(lambda: _all_receiving(c), 60, "the new workers to receive trades")
        _wait_sim(c, _sim_ms(c) + int(OI_INTERVAL_S * SPEED * 1000 * 1.2), "an open-interest period")
        t, tape, out = _finish(c)
        result = _assert_matches_truth(c, t, tape, oi_start)
        print("full restart result:", result)
        assert result["extra"] == 0 and result["gaps"] == 0
        # nobody received liquidations between the stop and the new run's first events: one row per symbol
        assert result["liquidation_holes"] == {s: 1 for s in tape}
        assert f"loaded the checkpoints of {SYMBOLS} symbols saved by the last run" in out
    finally:
        c.stop()


@pytest.mark.timeout(420)
def test_listing_reshards_with_a_hand_over(db_url: str, tmp_path: Path) -> None:
    """A listing found by the universe refresh replaces the worker that gets it: the same hand-over."""
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=SYMBOLS, rate=60, speed=SPEED, seed=4,
                                              trade_history=200_000), workers=WORKERS,
                  exchange={"universe_refresh_s": 3}, **_config())
    try:
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM open_interest")[0][0] == SYMBOLS, 90,
                 "a first open-interest row of every symbol")
        oi_start = c.query("SELECT max(t) FROM (SELECT min((extract(epoch FROM time) * 1000)::bigint) AS t "
                           "FROM open_interest GROUP BY symbol) f")[0][0]
        before = set(_workers(c).values())
        c.control("list", symbol="NEWLYUSDT", price=2.5)
        wait_for(lambda: len(_workers(c)) == WORKERS and len(before & set(_workers(c).values())) == WORKERS - 1,
                 120, "the worker that got the listing to be replaced")
        wait_for(lambda: c.query("SELECT count(*) FROM open_interest WHERE symbol = 'NEWLYUSDT'")[0][0] > 0, 90,
                 "the listing's open interest")
        wait_for(lambda: _all_receiving(c) and _repairs_done(c), 90, "the successor to collect")
        _wait_sim(c, _sim_ms(c) + int(OI_INTERVAL_S * SPEED * 1000 * 1.2), "an open-interest period")
        t, tape, _ = _finish(c, listed="NEWLYUSDT")
        result = _assert_matches_truth(c, t, tape, oi_start, listed="NEWLYUSDT")
        print("listing result:", result)
        assert result["extra"] == 0 and result["gaps"] == 0 and result["liquidation_holes"] == {}
        assert _log_count(c, "the predecessor has handed over") == 1
    finally:
        c.stop()
