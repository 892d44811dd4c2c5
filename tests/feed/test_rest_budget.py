"""The process tree's one REST weight budget (collector.feed.rest_budget): shared tokens, shared pauses, and a
lock that survives its holder being killed."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

from collector.feed.rest_budget import SharedWeightBudget, create_budget_file
from collector.pipeline.limits import WeightBudget

T0 = 1_767_225_600_000.0
LIMIT = WeightBudget.BINANCE_LIMIT_PER_MIN


def budget_file(tmp_path: Path, per_min: int = 600) -> Path:
    path = tmp_path / "rest-budget"
    create_budget_file(path, T0, LIMIT, per_min / LIMIT)
    return path


def test_a_busy_worker_uses_what_idle_ones_do_not(tmp_path: Path) -> None:
    """With 600/min for the collector, one worker with a backlog gets all 600 at once (30 pages of 20), not
    its 1/8; what it spent is gone for the others, and both see the same refill time."""
    path = budget_file(tmp_path)
    busy, idle = SharedWeightBudget(path), SharedWeightBudget(path)
    granted = sum(busy.try_acquire(20, T0) for _ in range(40))
    assert granted == 30
    assert not idle.try_acquire(20, T0)
    # the minute's budget is spent: both wait for the next clock minute
    assert idle.wait_time(20, T0) == busy.wait_time(20, T0) == 60_000.0
    assert not idle.try_acquire(20, T0 + 2000)
    assert idle.try_acquire(20, T0 + 60_000)
    busy.close()
    idle.close()


def test_requests_in_flight_cannot_pass_the_minutes_budget(tmp_path: Path) -> None:
    """The exchange's count (X-MBX-USED-WEIGHT-1M) does not include requests still in flight: after it
    said 280 of 300, one worker's last page (20) is in flight; the tokens refilled meanwhile must not let
    another worker's klines request (weight 1) through in the same clock minute."""
    path = budget_file(tmp_path, per_min=300)
    a, b = SharedWeightBudget(path), SharedWeightBudget(path)
    for i in range(14):
        assert a.try_acquire(20, T0 + i)
    a.on_response(200, {"X-MBX-USED-WEIGHT-1M": "280"}, T0 + 100)
    assert a.try_acquire(20, T0 + 200)  # in flight
    assert not b.try_acquire(1, T0 + 10_000)  # 50 tokens refilled by now, but the minute holds 300
    assert b.wait_time(1, T0 + 10_000) == 50_000
    assert b.try_acquire(1, T0 + 60_000)
    a.close()
    b.close()


def test_a_429_seen_by_one_worker_pauses_every_worker(tmp_path: Path) -> None:
    path = budget_file(tmp_path)
    a, b = SharedWeightBudget(path), SharedWeightBudget(path)
    a.on_response(429, {"Retry-After": "7"}, T0)
    assert b.paused_until_ms == T0 + 7000
    assert not b.try_acquire(1, T0 + 6999)
    assert b.wait_time(1, T0 + 1000) >= 6000
    assert b.try_acquire(1, T0 + 7000 + 60_000)
    a.on_response(418, {}, T0 + 100_000)  # a ban without Retry-After: the long default, for everyone
    assert b.paused_until_ms == T0 + 100_000 + WeightBudget.DEFAULT_BAN_MS
    a.close()
    b.close()


def _spend(path: str, n: int, out: mp.Queue) -> None:
    budget = SharedWeightBudget(path)
    out.put(sum(budget.try_acquire(20, T0) for _ in range(n)))


def test_processes_together_never_get_more_than_the_budget(tmp_path: Path) -> None:
    """4 processes race for 30 pages' worth at one instant: exactly 30 are granted in all."""
    path = budget_file(tmp_path)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_spend, args=(str(path), 25, out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(got) == 30, got


def test_a_holder_killed_inside_the_lock_does_not_wedge_the_others(tmp_path: Path) -> None:
    path = budget_file(tmp_path)
    code = ("import fcntl, os, signal, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code, str(path)], timeout=30).returncode == -9
    budget = SharedWeightBudget(path)
    assert budget.try_acquire(20, T0)  # would block forever if the dead holder's lock were kept
    budget.close()


def test_trade_pages_leave_a_reserve_for_candle_repairs(tmp_path: Path) -> None:
    """After a mass drop the trade gaps come first (found at reconnect) and would spend the whole minute;
    with the backfill's TRADES_RESERVE they leave 20%, so candle holes found seconds later go at once."""
    from collector.feed.backfill import TRADES_RESERVE
    from collector.feed.backfill_plan import AGG_TRADES_WEIGHT

    path = budget_file(tmp_path, per_min=300)
    trades, candles = SharedWeightBudget(path), SharedWeightBudget(path)
    pages = sum(trades.try_acquire(AGG_TRADES_WEIGHT, T0, TRADES_RESERVE) for _ in range(20))
    assert pages == 12  # 240 of 300: one more would leave less than 60
    assert trades.wait_time(AGG_TRADES_WEIGHT, T0, TRADES_RESERVE) > 0
    assert sum(candles.try_acquire(1, T0 + 1000) for _ in range(60)) == 60
    trades.close()
    candles.close()
