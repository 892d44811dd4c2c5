"""When the worker's housekeeping next wakes: the earliest timer, stretched to take in timers just after it.

Why: each of the housekeeping's periodic timers (stats check, checkpoint snapshot, provisional-threshold
refresh) is re-armed from the moment it ran, so timers of the same period drift a few hundred µs apart
and an idle worker woke twice per period, once for each, to do a few µs of work. Waking once for every
timer due within `slack` of the earliest halves those wake-ups; no timer runs more than `slack` late.
Batch flush deadlines are not passed here (their lateness is latency, collector.pipeline.router).
"""

from __future__ import annotations

from collections.abc import Iterable

# How late a housekeeping timer may run so that it shares a wake-up with an earlier one.
TIMER_SLACK_S = 0.02


def coalesce(deadlines: Iterable[float], slack: float = TIMER_SLACK_S) -> float:
    """The latest deadline within `slack` of the earliest one (same clock as the deadlines)."""
    ds = sorted(deadlines)
    if not ds:
        raise ValueError("coalesce() needs at least one deadline")
    first = ds[0]
    return max(d for d in ds if d <= first + slack)
