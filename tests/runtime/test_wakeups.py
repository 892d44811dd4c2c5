"""collector.runtime.wakeups.coalesce: one wake-up for housekeeping timers due within the slack."""

from __future__ import annotations

import pytest

from collector.runtime.wakeups import coalesce


def test_timers_within_the_slack_share_the_latest_of_them() -> None:
    assert coalesce([10.5, 10.5004, 11.0], slack=0.02) == 10.5004


def test_a_timer_beyond_the_slack_is_not_waited_for() -> None:
    assert coalesce([11.0, 10.5, 10.53], slack=0.02) == 10.5


def test_no_timer_runs_more_than_the_slack_late() -> None:
    deadlines = [1.0, 1.01, 1.015, 1.03, 1.5]
    woke = coalesce(deadlines, slack=0.02)
    assert woke == 1.015 and woke - min(deadlines) <= 0.02


def test_one_timer() -> None:
    assert coalesce([3.0]) == 3.0


def test_no_timer_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        coalesce([])
