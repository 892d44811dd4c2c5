"""The arbiter's view of its children: their state, how a hung one is treated, how one is stopped and
how the endpoints show them.

Why apart from collector.runtime.arbiter: this is the plain data and the pure decisions (back-off
delays, the liveness rule), which tests check without starting a process.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from collector.observability.snapshot import ChildInfo
from collector.runtime.checkpoint_block import CheckpointBlock

log = logging.getLogger("collector.runtime.arbiter")  # the supervisor's log lines, whichever module

# Restart backoff for dead children: immediate first, then doubling to a cap, so a crash loop costs
# little CPU but a one-off crash is repaired in about a second.
RESTART_DELAY_INITIAL = 1.0
RESTART_DELAY_CAP = 60.0
# A child that lived this long is considered healthy again: its next crash restarts at the initial delay.
HEALTHY_AFTER_S = 60.0
# A hung child gets SIGABRT first (Python's faulthandler, enabled in every child, writes each thread's
# stack to the child's stderr, so the hang can be diagnosed), and SIGKILL this long after if it is still
# there: plenty for the dump, and SIGABRT does nothing at all to a stopped (SIGSTOP) process.
ABORT_GRACE_S = 5.0
# The supervisor's main loop wakes on a child's death (its sentinel), a signal and a coordinator command at
# once; the period is for what is decided by time alone. While a hand-over, a restart's back-off or an abort's
# grace runs, every LOOP_TIMEOUT_S: that bounds how late it ends. Otherwise only liveness is timed, judged
# against monitoring.heartbeat_timeout_s (120 s by default): IDLE_LOOP_TIMEOUT_S, or a quarter of the
# timeout if that is shorter, so a hung child is still caught within the timeout plus a quarter of it.
LOOP_TIMEOUT_S = 1.0
IDLE_LOOP_TIMEOUT_S = 5.0


@dataclass
class Child:
    role: str  # "writer", "worker" or "api" (the read API: no stats slot, no heartbeat)
    index: int
    process: mp.process.BaseProcess | None = None
    started: float = 0.0
    restarts: int = 0
    started_ms: int | None = None
    expected_exit: bool = False  # asked to stop for a restart (config reload): not a crash
    next_delay: float = RESTART_DELAY_INITIAL
    restart_at: float | None = None
    stop: MpEvent | None = None  # the child watches it
    control: Queue[Any] | None = None  # to a worker (collector.runtime.worker_control.read_control)
    symbols: list[str] = field(default_factory=list)
    # liveness: the newest heartbeat (updated_ms of the child's stats slot) and when the supervisor saw it
    # change (monotonic), so a wall-clock step can neither kill a healthy child nor hide a hung one
    beat_ms: int = 0
    beat_seen: float = 0.0
    aborted_at: float | None = None  # when SIGABRT was sent to the current process
    killed: bool = False  # SIGKILL sent: the reaper restarts it
    handover: bool = False  # a predecessor still collects: the worker waits for its hand-over

    @property
    def name(self) -> str:
        return "writer" if self.role == "writer" else f"worker {self.index + 1}"


@dataclass
class Retiring:
    """A worker replaced by a successor, still collecting until RETIRE_AFTER_S has passed."""

    process: mp.process.BaseProcess
    stop: MpEvent
    since: float
    stop_sent: bool = False
    successor: Child | None = None  # told ("handover") once this process has exited
    control: Queue[Any] | None = None  # its own control queue (the successor has a new one): see request_stop


def request_stop(stop: MpEvent, control: Queue[Any] | None) -> None:
    """Ask a worker to stop: `stop` is the request; ("stop", None) on its control queue wakes it to read it.

    Why both: the event is what the worker checks, at every round of its housekeeping; the message makes that
    round happen now rather than at its next timer (up to collector.runtime.worker.MAX_SLEEP_S later), since
    a worker wakes as soon as its control queue is readable (collector.runtime.worker_control.ControlWatch).
    The event is set first, so the round the message causes sees it."""
    stop.set()
    if control is not None:
        control.put(("stop", None))


def successor_ready(r: Retiring, block: CheckpointBlock | None) -> bool:
    """The successor holds for the hand-over and receives every symbol: the predecessor may stop now."""
    s = r.successor
    if s is None or not s.handover or block is None or s.started_ms is None:
        return False
    return block.ready_ms(s.index + 1) >= s.started_ms


def liveness_action(silent_s: float, timeout_s: float, aborted_s: float | None, grace_s: float = ABORT_GRACE_S
                    ) -> str | None:
    """What to do with a child silent for `silent_s`: "abort" (SIGABRT), "kill" (SIGKILL) or nothing (None).

    `aborted_s` is how long ago SIGABRT was sent (None: not yet). Silence up to `timeout_s` is fine; past
    it the child is aborted once, and killed once it has outlived the abort by `grace_s`.
    """
    if aborted_s is not None:
        return "kill" if aborted_s >= grace_s else None
    return "abort" if silent_s > timeout_s else None


def loop_period(children: list[Child], retiring: list[Retiring], heartbeat_timeout_s: float) -> float:
    """How long the supervisor's main loop may wait for an event before its timed checks are due."""
    if retiring or any(c.restart_at is not None or c.aborted_at is not None for c in children):
        return LOOP_TIMEOUT_S
    return min(IDLE_LOOP_TIMEOUT_S, heartbeat_timeout_s / 4)


def join_or_kill(c: Child, timeout: float) -> None:
    p = c.process
    assert p is not None
    p.join(timeout)
    if p.is_alive():
        log.error("%s %d did not stop within %.0fs: killing it", c.role, c.index + 1, timeout)
        p.kill()
        p.join(5)


def api_info(children: list[Child], url: str) -> dict[str, Any] | None:
    """The read API child as /stats and the status page show it (None when the supervisor runs none)."""
    for c in list(children):
        if c.role == "api":
            p = c.process
            return {"url": url, "docs": f"{url}/api/v1/docs", "pid": p.pid if p else None,
                    "alive": p is not None and p.is_alive(), "restarts": c.restarts}
    return None


def child_infos(children: list[Child], venue_of: Callable[[int], str] = lambda _: "binance") -> list[ChildInfo]:
    """The children as the endpoints show them (called from the health server's and coordinator's threads);
    `venue_of(index)` is the venue worker `index` serves."""
    kids = []
    for c in list(children):
        if c.role == "api":  # shown apart (api_info): the slots are the writer's and the workers'
            continue
        p = c.process  # read once: the arbiter's loop may replace it meanwhile
        alive = p is not None and p.is_alive()
        kids.append(ChildInfo(c.role, 0 if c.role == "writer" else c.index + 1, p.pid if p else None, alive,
                              c.restarts, len(c.symbols), c.started_ms,
                              venue_of(c.index) if c.role == "worker" else "binance"))
    return kids
