"""Open interest, polled over REST: when each symbol is due, and the poller that spends budget weight on it.

Why polled here and not by cryptofeed: its poller requests every symbol back to back, ignores Retry-After
and has no notion of a budget shared with the backfill; and a successor must resume each symbol's
schedule from its predecessor's checkpoint (collector.runtime.checkpoints), which PollPositions holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from collector.feed.cryptofeed_adapter import PolledConnection
from collector.feed.rest_budget import WeightGate
from collector.feed.rest_client import RestClient
from collector.runtime.stopping import sleep_unless_stopped

log = logging.getLogger(__name__)

# Binance's documented request weight of GET /fapi/v1/openInterest.
OPEN_INTEREST_WEIGHT = 1
# Open interest is polled this fraction of `interval` after the previous poll of the symbol, not a
# whole interval: the slack (60 s at the default 300 s) is what lets a worker's successor, which
# resumes each symbol's schedule from its checkpoint (collector.runtime.checkpoints), take over after a crash
# and still poll every symbol within every `interval`. Costs 25% more weight: ~125/min for 500 symbols.
OI_POLL_FRACTION = 0.8
# The period is cut into this many slots; when a symbol is due, the worker polls it and every other symbol due
# before the end of the current slot together (up to a slot early for those). After one period each symbol sits with
# the others of its slot, so a worker wakes for open interest ~8 times a period (every 30 s at the default
# 300 s interval) instead of once per symbol (every ~4 s for 62 symbols), its HTTP code runs warm, and its
# rows reach the writer in one batch. A poll is never later for it; the weight per period is unchanged.
OI_BURSTS_PER_PERIOD = 8
# A poll that failed (network error, 5xx, 429) is tried again this much later rather than a period later,
# so one failure does not cost the symbol its window; a 429/418 also pauses the weight gate meanwhile.
OI_RETRY_S = 5.0


class PollPositions:
    """When each symbol's open interest is next due: one period after its last poll.

    Pure: times are passed in. Symbols never polled (a fresh start) are spread evenly over the first
    period; a symbol restored from a checkpoint is due one period after the poll its predecessor made,
    so a restart does not start again from the first symbol. `burst` says which symbols are polled
    together (OI_BURSTS_PER_PERIOD says why).
    """

    def __init__(self, symbols: list[str], period_ms: int, start_ms: int) -> None:
        n = max(len(symbols), 1)
        self.period_ms = period_ms
        self.slot_ms = max(period_ms // OI_BURSTS_PER_PERIOD, 1)
        self._first = {s: start_ms + i * period_ms // n for i, s in enumerate(symbols)}
        self.last: dict[str, int] = {}  # symbol -> wall ms of its last request

    def restore(self, symbol: str, polled_ms: int) -> None:
        """A predecessor's last poll of `symbol` (from its checkpoint)."""
        if symbol in self._first and polled_ms > self.last.get(symbol, 0):
            self.last[symbol] = polled_ms

    def due_ms(self, symbol: str) -> int:
        last = self.last.get(symbol)
        return self._first[symbol] if last is None else last + self.period_ms

    def next(self) -> tuple[str, int] | None:
        """(symbol, due ms) of the symbol due first; overdue ones come oldest first."""
        if not self._first:
            return None
        sym = min(self._first, key=self.due_ms)
        return sym, self.due_ms(sym)

    def burst(self, now_ms: int) -> list[str]:
        """The symbols to poll together now that the first is due: every symbol due before the end of the
        current slot (the period cut into OI_BURSTS_PER_PERIOD slots from the epoch), overdue ones included,
        oldest first."""
        end = now_ms - now_ms % self.slot_ms + self.slot_ms
        return sorted((s for s in self._first if self.due_ms(s) < end), key=self.due_ms)

    def polled(self, symbol: str, now_ms: int) -> None:
        self.last[symbol] = now_ms

    def failed(self, symbol: str, now_ms: int, retry_ms: int) -> None:
        """The poll made at now_ms gave nothing: due again retry_ms later."""
        self.last[symbol] = now_ms + retry_ms - self.period_ms


def poll_positions(symbols: list[str], interval: float) -> PollPositions:
    """The open-interest schedule of `symbols` polled every `interval` seconds, starting now."""
    return PollPositions(symbols, int(interval * OI_POLL_FRACTION * 1000), int(time.time() * 1000))


class OpenInterestPoll(PolledConnection):
    """Polls /fapi/v1/openInterest for each symbol every OI_POLL_FRACTION * `interval`, within a budget.

    cryptofeed's HTTPPoll requests every symbol back to back and then sleeps, and on a 429 it waits a
    fixed time regardless of Retry-After; here requests go through the process's RestClient, and each request first takes weight from the gate, and every
    answer (429 Retry-After, 418 ban, used-weight header) is reported back to it. Which symbol is due
    when is `positions` (PollPositions), which a successor restores before `ready` is set.
    """

    def __init__(self, urls: list[str], conn_id: str, interval: float, gate: WeightGate,
                 stop: asyncio.Event, rest: RestClient, symbols: list[str] | None = None,
                 positions: PollPositions | None = None, ready: asyncio.Event | None = None) -> None:
        super().__init__(urls, conn_id, interval, rest)
        self.interval = interval
        self.gate = gate
        self.stop = stop
        self.failures = 0
        self.urls = dict(zip(symbols or [str(i) for i in range(len(urls))], urls, strict=True))
        self.positions = positions or poll_positions(list(self.urls), interval)
        self.ready = ready

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when stopping."""
        return await sleep_unless_stopped(self.stop, seconds)

    # cryptofeed's HTTPPoll.read already departs from HTTPAsyncConn.read; this keeps HTTPPoll's signature.
    async def read(self, header: Any = None) -> AsyncIterator[str]:  # type: ignore[override]
        if self.ready is not None:  # a successor first restores the positions (collector.runtime.checkpoints)
            waiter = asyncio.ensure_future(self.ready.wait())
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({waiter, stopping}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopping.cancel()
        while not self.stop.is_set():
            nxt = self.positions.next()
            if nxt is None:
                return
            _, due_ms = nxt
            if await self._pause(due_ms / 1000 - time.time()):
                return
            for sym in self.positions.burst(int(time.time() * 1000)):
                if not await self._acquire():
                    return
                self.positions.polled(sym, int(time.time() * 1000))
                try:
                    status, headers, body = await self.rest.get(self.urls[sym])
                    self.gate.on_response(status, headers, time.time() * 1000)
                except (TimeoutError, OSError, Exception) as e:  # noqa: B014 - log every transport failure
                    self.failures += 1
                    self.positions.failed(sym, int(time.time() * 1000), int(OI_RETRY_S * 1000))
                    log.warning("%s: open interest request failed: %s: %s", self.id, type(e).__name__, e)
                    continue
                self.message_received()
                if status == 200:
                    yield body.decode("utf-8", "replace")
                else:
                    self.failures += 1
                    self.positions.failed(sym, int(time.time() * 1000), int(OI_RETRY_S * 1000))
                    log.warning("%s: open interest answered %d: %r", self.id, status, body[:200])

    async def _acquire(self) -> bool:
        """Take one request's weight from the gate, waiting while it has none; False when stopping."""
        while True:
            wait_ms = self.gate.wait_time(OPEN_INTEREST_WEIGHT, time.time() * 1000)
            if wait_ms <= 0 and not self.stop.is_set() and self.gate.try_acquire(OPEN_INTEREST_WEIGHT,
                                                                                 time.time() * 1000):
                return True
            # (another worker may take the weight between the two calls: the pause yields to the loop either way)
            if await self._pause(max(wait_ms, 0.0) / 1000):
                return False
