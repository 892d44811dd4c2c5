"""collector.runtime.stopping: a StopEvent sleeps like wait_for on a plain Event, without raising.

Run on uvloop, the loop the workers use.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from collector.runtime.stopping import StopEvent, sleep_unless_stopped

KINDS = [asyncio.Event, StopEvent]


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return uvloop.run(main())


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_a_sleep_that_runs_its_course_returns_false_after_its_time(kind: type[asyncio.Event]) -> None:
    async def main() -> tuple[bool, float]:
        ev = kind()
        t0 = time.monotonic()
        stopped = await sleep_unless_stopped(ev, 0.2)
        return stopped, time.monotonic() - t0

    stopped, took = run(main)
    # uvloop's timers run on a millisecond clock: a 50 ms sleep was once measured at 49.7 ms
    assert stopped is False and 0.15 <= took < 5.0


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_a_set_event_wakes_every_sleeper_at_once(kind: type[asyncio.Event]) -> None:
    async def main() -> tuple[list[bool], float]:
        ev = kind()
        sleepers = [asyncio.create_task(sleep_unless_stopped(ev, 60.0)) for _ in range(3)]
        await asyncio.sleep(0)  # they are all asleep now
        t0 = time.monotonic()
        ev.set()
        results = await asyncio.gather(*sleepers)
        return results, time.monotonic() - t0

    results, took = run(main)
    assert results == [True, True, True] and took < 5.0  # not the 60 s


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_an_event_set_before_returns_true_without_sleeping(kind: type[asyncio.Event]) -> None:
    async def main() -> bool:
        ev = kind()
        ev.set()
        return await sleep_unless_stopped(ev, 60.0)

    assert run(main) is True


def _exceptions_raised_by_a_sleep(kind: type[asyncio.Event]) -> list[str]:
    """The exceptions raised (and caught or not) while a sleep runs its course, seen with sys.monitoring."""
    raised: list[str] = []
    tool = sys.monitoring.PROFILER_ID
    sys.monitoring.use_tool_id(tool, "test_stopping")
    try:
        def on_raise(code: Any, offset: int, exc: BaseException) -> None:
            if not isinstance(exc, StopIteration):  # a coroutine returning a value raises StopIteration in C
                raised.append(type(exc).__name__)

        async def main() -> bool:
            ev = kind()
            sys.monitoring.register_callback(tool, sys.monitoring.events.RAISE, on_raise)
            sys.monitoring.set_events(tool, sys.monitoring.events.RAISE)
            try:
                return await sleep_unless_stopped(ev, 0.01)
            finally:
                sys.monitoring.set_events(tool, 0)

        assert run(main) is False
    finally:
        sys.monitoring.register_callback(tool, sys.monitoring.events.RAISE, None)
        sys.monitoring.free_tool_id(tool)
    return raised


def test_a_stop_event_sleep_raises_nothing() -> None:
    assert _exceptions_raised_by_a_sleep(StopEvent) == []


def test_a_plain_event_sleep_ends_by_cancelling_its_waiter() -> None:
    """What StopEvent avoids (and the proof that the measurement above can see an exception)."""
    assert "CancelledError" in _exceptions_raised_by_a_sleep(asyncio.Event)


def test_a_cancelled_sleeper_leaves_nothing_behind() -> None:
    async def main() -> tuple[bool, int, bool]:
        ev = StopEvent()
        sleeper = asyncio.create_task(ev.sleep(60.0))
        await asyncio.sleep(0)
        assert ev.sleeping == 1  # the count can see a sleeper
        sleeper.cancel()
        try:
            await sleeper
        except asyncio.CancelledError:
            pass
        left = ev.sleeping
        ev.set()  # nothing to wake: no error
        return sleeper.cancelled(), left, await ev.sleep(60.0)

    cancelled, left, stopped = run(main)
    assert cancelled and left == 0 and stopped is True
