"""One REST request of the repair queue (collector.feed.backfill), within the worker's REST budget.

Why apart from the queue: waiting for weight, retrying failures with backoff and reading rate-limit
answers is the same for every repair and every venue (the venue's reading of an answer comes from its
RestHistory, collector.feed.rest_history); the queue decides what to repair and in which order.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlencode

from collector.feed.rest_budget import WeightGate
from collector.feed.rest_client import Fetch, RestClient
from collector.feed.rest_history import RestHistory
from collector.runtime.stopping import sleep_unless_stopped

log = logging.getLogger("collector.feed.backfill")

# A request answered with something other than data or a rate limit (5xx, network error, unparsable body)
# is retried this many times in all before its gap is given up: enough to ride out a blip, and a gap
# that cannot be fetched must not block the queue behind it forever.
MAX_ATTEMPTS = 4
# First pause after a failed request, doubled per attempt: 1, 2, 4 s - short against the minutes a
# gap stays useful to repair, long enough not to hammer a struggling exchange.
RETRY_BASE_S = 1.0
# Longest single sleep while waiting for weight: the stop event is checked at least this often even
# when the budget says "hours" (a 418 ban).
MAX_WAIT_S = 60.0
# A trade page waiting for weight (up to a minute) looks this often for a candle repair to give way to.
PREEMPT_POLL_S = 0.2


class BudgetedRequests:
    """GETs against one venue's REST that first take weight from `gate` and report every answer to it."""

    def __init__(self, rest_url: str, gate: WeightGate, stop: asyncio.Event, history: RestHistory,
                 fetch: Fetch | None, clock: Callable[[], float]) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.gate = gate
        self.stop = stop
        self.history = history
        self.clock = clock
        # Every request goes through `fetch`: the worker's RestClient.get (its one HTTP client), or a fake
        # in tests; without one a RestClient of our own is made and closed when the queue stops.
        self._own_rest: RestClient | None = None
        if fetch is None:
            self._own_rest = RestClient()
            fetch = self._own_rest.get
        self._fetch = fetch
        self._preempted = False  # the last _request gave way to a queued candle repair
        self.counts: Counter[str] = Counter()  # requests, throttled, failures, trades, candles, gaps_*

    def _should_give_way(self) -> bool:
        """Whether a preemptible request waiting for weight should give way (a candle repair is queued)."""
        return False

    async def _request(self, path: str, query: dict[str, str | int], weight: int,
                       reserve: float = 0.0, preemptible: bool = False) -> bytes | None:
        """GET path?query once weight is available (leaving `reserve` of the budget); retried on a rate
        limit (after the budget's pause) and, up to MAX_ATTEMPTS in all, on other failures. None when given
        up or stopping, or (`preemptible`, then self._preempted is set) when a candle repair is queued while
        this request waits for weight."""
        url = f"{self.rest_url}{path}?{urlencode(query)}"
        failures = 0
        self._preempted = False
        while not self.stop.is_set():
            if not await self._acquire(weight, reserve, preemptible):
                return None
            self.counts["requests"] += 1
            try:
                status, headers, body = await self._get(url)
            except (TimeoutError, OSError, Exception) as e:  # noqa: B014 - every transport failure is retried
                status, headers, body = 0, {}, repr(e).encode()
            answer = self.history.answer(self.gate, status, headers, body, self.clock() * 1000)
            if answer == "ok":
                return body
            if answer == "throttled":
                self.counts["throttled"] += 1
                log.warning("REST %s answered %d (Retry-After %s): pausing every REST user", path, status,
                            headers.get("Retry-After") or headers.get("retry-after"))
                continue
            failures += 1
            self.counts["failures"] += 1
            log.warning("REST %s failed (%s, attempt %d/%d): %r", path, status or "no answer", failures,
                        MAX_ATTEMPTS, body[:200])
            if failures >= MAX_ATTEMPTS or await self._pause(RETRY_BASE_S * 2 ** (failures - 1)):
                return None
        return None

    async def _acquire(self, weight: int, reserve: float = 0.0, preemptible: bool = False) -> bool:
        """Wait until the budget grants `weight` (leaving `reserve`); False when stopping or (preemptible)
        giving way to a queued candle repair."""
        while True:
            if preemptible and self._should_give_way():
                self._preempted = True
                return False
            now_ms = self.clock() * 1000
            wait_ms = self.gate.wait_time(weight, now_ms, reserve)
            if wait_ms <= 0 and self.gate.try_acquire(weight, now_ms, reserve):
                return True
            longest = PREEMPT_POLL_S if preemptible else MAX_WAIT_S
            if await self._pause(min(max(wait_ms, 10.0) / 1000, longest) if math.isfinite(wait_ms) else longest):
                return False

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when stopping."""
        return await sleep_unless_stopped(self.stop, seconds)

    async def _get(self, url: str) -> tuple[int, dict[str, str], bytes]:
        return await self._fetch(url)

    async def _close(self) -> None:
        if self._own_rest is not None:
            await self._own_rest.close()
