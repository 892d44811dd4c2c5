"""Sleep unless stopped: the one wait every loop of the collector uses between two rounds of work.

Why a helper: a loop that sleeps with asyncio.sleep notices a stop request only when it wakes, so a
stopping worker would wait out the longest sleep of any of its tasks; waiting on the stop event with a
timeout wakes at once. Written once so every loop stops the same way.
"""

from __future__ import annotations

import asyncio


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds` (negative: not at all), returning early when `stop` is set; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    except TimeoutError:
        return False
    return True
