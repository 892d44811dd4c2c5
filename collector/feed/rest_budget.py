"""One REST weight budget for the whole process tree: a WeightBudget whose state lives in a small file.

Why: Binance limits REST weight per IP, and a fixed share per worker wastes what idle workers do not
use (after a reconnect one worker may have dozens of gaps while the others have none). Every worker
opens the same file; each call locks it (flock), loads the state (WeightBudget.to_bytes, 40 bytes),
applies the pure WeightBudget logic and stores the state back. So tokens are spent where they are
needed, and a 429/418 reported by any worker pauses every worker at its next request.

Why flock and not a multiprocessing lock: the kernel releases a flock when its holder dies, so a
worker killed with SIGKILL inside the critical section (a few µs) cannot wedge the others.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from collector.pipeline.limits import WeightBudget


class WeightGate(Protocol):
    """A REST weight budget as its users see it (WeightBudget, or SharedWeightBudget over the file): how
    long to wait before `weight` may be spent leaving `reserve` (a fraction of capacity), taking it, and
    what the server answered. Times in ms."""

    def wait_time(self, weight: float, now_ms: float, reserve: float = 0.0) -> float: ...
    def try_acquire(self, weight: float, now_ms: float, reserve: float = 0.0) -> bool: ...
    def on_response(self, status: int, headers: Mapping[str, str], now_ms: float) -> None: ...


def create_budget_file(path: str | Path, now_ms: float, limit_per_min: float, fraction: float) -> None:
    """Write a full bucket (share 1: the whole collector's budget) for the workers to open."""
    state = WeightBudget(now_ms, limit_per_min=limit_per_min, fraction=fraction, share=1.0).to_bytes()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.pwrite(fd, state, 0)
    finally:
        os.close(fd)


class SharedWeightBudget:
    """The WeightGate interface (wait_time, try_acquire, on_response, pause_until) over the shared file."""

    def __init__(self, path: str | Path, limit_per_min: float = WeightBudget.BINANCE_LIMIT_PER_MIN) -> None:
        self.path = str(path)
        self.limit_per_min = limit_per_min
        self._fd = os.open(self.path, os.O_RDWR)

    @contextmanager
    def _locked(self, write: bool = True) -> Iterator[WeightBudget]:
        fcntl.flock(self._fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        try:
            budget = WeightBudget.from_bytes(os.pread(self._fd, WeightBudget.STATE.size, 0), self.limit_per_min)
            yield budget
            if write:
                os.pwrite(self._fd, budget.to_bytes(), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def try_acquire(self, weight: float, now_ms: float, reserve: float = 0.0) -> bool:
        with self._locked() as b:
            return b.try_acquire(weight, now_ms, reserve)

    def wait_time(self, weight: float, now_ms: float, reserve: float = 0.0) -> float:
        with self._locked() as b:
            return b.wait_time(weight, now_ms, reserve)

    def on_response(self, status: int, headers: Mapping[str, str], now_ms: float) -> None:
        with self._locked() as b:
            b.on_response(status, headers, now_ms)

    def pause_until(self, until_ms: float) -> None:
        with self._locked() as b:
            b.pause_until(until_ms)

    @property
    def paused_until_ms(self) -> float:
        """Read every stats tick by each worker: a shared lock, nothing written."""
        with self._locked(write=False) as b:
            return b.paused_until_ms

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
