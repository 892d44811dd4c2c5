"""The process tree's one REST weight budget (collector.rest_budget): shared tokens, shared pauses, and a
lock that survives its holder being killed."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

from collector.filters.limits import WeightBudget
from collector.rest_budget import SharedWeightBudget, create_budget_file

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
    assert idle.wait_time(20, T0) == busy.wait_time(20, T0) == 2000.0  # 20 weight at 600/min
    assert idle.try_acquire(20, T0 + 2000)
    busy.close()
    idle.close()


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
