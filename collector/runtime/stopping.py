"""Sleep unless stopped: the one wait every loop of the collector uses between two rounds of work.

Why a helper: a loop that sleeps with asyncio.sleep notices a stop request only when it wakes, so a
stopping worker would wait out the longest sleep of any of its tasks; waiting on the stop event with a
timeout wakes at once. Written once so every loop stops the same way.

Why StopEvent: `asyncio.wait_for(event.wait(), timeout)` ends every sleep that runs its course by
cancelling the waiting task, which raises and catches several exceptions per sleep; an idle worker's loops
(open-interest polls, housekeeping, the feed's timers) mostly sleep their course, so that was a visible
share of its CPU. A StopEvent's timed wait is a future resolved either by a timer or by `set()`: nothing
raises unless the sleeper itself is cancelled.
"""

from __future__ import annotations

import asyncio


class StopEvent(asyncio.Event):
    """An asyncio.Event with a cheap timed wait (`sleep`); everything else is asyncio.Event's."""

    def __init__(self) -> None:
        super().__init__()
        self._sleepers: set[asyncio.Future[bool]] = set()

    @property
    def sleeping(self) -> int:
        """How many sleeps wait on this event now: a cancelled or finished sleep is no longer counted, so a
        loop that cancels its sleepers leaves nothing behind (what the tests check)."""
        return len(self._sleepers)

    def set(self) -> None:
        super().set()
        sleepers, self._sleepers = self._sleepers, set()
        for fut in sleepers:
            if not fut.done():
                fut.set_result(True)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, returning early when set; True when set."""
        if self.is_set():
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(max(seconds, 0.0), _resolve, fut)
        self._sleepers.add(fut)
        try:
            return await fut
        finally:  # also when the sleeper is cancelled: no timer and no future left behind
            timer.cancel()
            self._sleepers.discard(fut)


def _resolve(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds` (negative: not at all), returning early when `stop` is set; True when stopping.

    A StopEvent sleeps on a timer; a plain asyncio.Event (tests, callers that have one) through wait_for."""
    if isinstance(stop, StopEvent):
        return await stop.sleep(seconds)
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    except TimeoutError:
        return False
    return True
