"""Repairs what the stream missed, over REST, within the worker's REST weight budget.

Two kinds of hole are repaired:

- aggTrade id gaps (collector.pipeline.Gap): paged from `GET /fapi/v1/aggTrades?symbol=&fromId=&limit=`
  until every id of the gap was received, each trade handed back to the pipeline
  (`on_backfill_trade`), which validates and filters it like a live one;
- missing closed 1m candles (the first closed kline after a reconnect jumps over minutes): fetched from
  `GET /fapi/v1/klines?symbol=&interval=1m&startTime=&endTime=&limit=`.

Why one sequential job queue: after a mass reconnect every symbol has a gap at once; a single consumer
that takes weight from the shared WeightBudget before each request (the same budget the open-interest
poller spends) turns that burst into a steady trickle at the budget's rate, and a 429/418 answer
(reported to the budget, which then pauses for Retry-After or the ban) stops the poller and the
backfill together: no retry storm is possible.

Gaps are stored once, when resolved (filled, or given up: filled_at NULL), as one `gaps` row with both
detected_at and filled_at. Why not a row at detection and the same key again at fill time: the gaps
key is (symbol, from_id, to_id) and the writer loads with COPY, falling back to INSERT ... ON CONFLICT
DO NOTHING on a duplicate, so the second row would be silently discarded and filled_at never set. A
gap still being repaired when the worker stops is stored unfilled (NULL filled_at), so nothing detected
is lost from the table; every gap is also logged the moment it is detected.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode

import msgspec

from collector.wire import AggTrade

log = logging.getLogger(__name__)

AGG_TRADES_PATH = "/fapi/v1/aggTrades"
KLINES_PATH = "/fapi/v1/klines"
# Binance's maximum page of /fapi/v1/aggTrades; its weight is 20 whatever the limit, so always ask for
# as much of the gap as one page can hold.
AGG_TRADES_LIMIT = 1000
AGG_TRADES_WEIGHT = 20
# Binance's maximum page of /fapi/v1/klines (weight 10 at this size, see kline_weight).
KLINES_LIMIT = 1500
MINUTE_MS = 60_000
# A request answered with something other than 200/429/418 (5xx, network error, unparsable body) is
# retried this many times in all before its gap is given up: enough to ride out a blip, and a gap
# that cannot be fetched must not block the queue behind it forever.
MAX_ATTEMPTS = 4
# First pause after a failed request, doubled per attempt: 1, 2, 4 s - short against the minutes a
# gap stays useful to repair, long enough not to hammer a struggling exchange.
RETRY_BASE_S = 1.0
# Longest single sleep while waiting for weight: the stop event is checked at least this often even
# when the budget says "hours" (a 418 ban).
MAX_WAIT_S = 60.0
# aiohttp total timeout per request: Binance answers in well under a second; 10 s means "broken".
REQUEST_TIMEOUT_S = 10.0


# --- pure planning --------------------------------------------------------------------------------------------


def kline_weight(limit: int) -> int:
    """Binance's request weight of /fapi/v1/klines for a given `limit` (documented table)."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def agg_trade_page(symbol: str, next_id: int, to_id: int) -> tuple[str, dict[str, str | int]]:
    """The next aggTrades request of a gap whose ids next_id..to_id are still missing."""
    if next_id > to_id:
        raise ValueError("nothing left to fetch")
    return AGG_TRADES_PATH, {"symbol": symbol, "fromId": next_id, "limit": min(AGG_TRADES_LIMIT, to_id - next_id + 1)}


def agg_trade_pages(from_id: int, to_id: int) -> list[int]:
    """fromId of every page needed to cover from_id..to_id when the exchange returns full pages."""
    return list(range(from_id, to_id + 1, AGG_TRADES_LIMIT))


def kline_pages(symbol: str, first_open_ms: int, last_open_ms: int) -> list[tuple[str, dict[str, str | int], int]]:
    """(path, query, weight) of the klines requests covering the 1m candles opening first..last."""
    pages = []
    start = first_open_ms
    while start <= last_open_ms:
        end = min(last_open_ms, start + (KLINES_LIMIT - 1) * MINUTE_MS)
        limit = (end - start) // MINUTE_MS + 1
        pages.append((KLINES_PATH, {"symbol": symbol, "interval": "1m", "startTime": start, "endTime": end,
                                    "limit": limit}, kline_weight(limit)))
        start = end + MINUTE_MS
    return pages


def weight_needed(jobs: list[TradeGapJob | CandleJob]) -> int:
    """REST weight the queued jobs will spend at least (full pages, no retries): a budget check."""
    total = 0
    for job in jobs:
        if isinstance(job, TradeGapJob):
            total += AGG_TRADES_WEIGHT * len(agg_trade_pages(job.next_id, job.gap.to_id))
        else:
            total += sum(w for _, _, w in kline_pages(job.symbol, job.first_open_ms, job.last_open_ms))
    return total


# --- what is repaired, and where it goes ----------------------------------------------------------------------


class GapLike(Protocol):
    symbol: str
    from_id: int
    to_id: int
    detected_ms: int


class BackfillSink(Protocol):
    """The pipeline's backfill entry points (collector.pipeline.Pipeline implements them)."""

    def on_backfill_trade(self, t: AggTrade, gap: GapLike, receipt: float) -> bool: ...
    def on_backfill_kline(self, symbol: str, row: list, receipt: float) -> bool: ...
    def gap_resolved(self, gap: GapLike, filled_ms: int | None) -> None: ...


class WeightGate(Protocol):
    def wait_time(self, weight: float, now_ms: float) -> float: ...
    def try_acquire(self, weight: float, now_ms: float) -> bool: ...
    def on_response(self, status: int, headers: dict[str, str], now_ms: float) -> None: ...


@dataclass
class TradeGapJob:
    gap: GapLike
    next_id: int


@dataclass
class CandleJob:
    symbol: str
    first_open_ms: int
    last_open_ms: int


class RestAggTrade(msgspec.Struct):
    """One row of /fapi/v1/aggTrades (the stream's fields without e/E/s)."""

    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - Binance's name
    T: int
    m: bool


_agg_rows = msgspec.json.Decoder(list[RestAggTrade])
_kline_rows = msgspec.json.Decoder(list[list[str | int]])

# (status, headers, body) of one GET; the default implementation is aiohttp, tests pass a fake.
Fetch = Callable[[str], Awaitable[tuple[int, dict[str, str], bytes]]]


class Backfiller:
    """One worker's REST repair queue: trade gaps and missing candles, one request at a time."""

    def __init__(self, rest_url: str, sink: BackfillSink, gate: WeightGate, stop: asyncio.Event, *,
                 fetch: Fetch | None = None, clock: Callable[[], float] = time.time,
                 trades: bool = True) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.sink = sink
        self.gate = gate
        self.stop = stop
        self.clock = clock
        self.trades = trades  # False when trades are not collected: gaps are stored unfilled at once
        self._fetch = fetch
        self._session: object | None = None
        self.queue: asyncio.Queue[TradeGapJob | CandleJob] = asyncio.Queue()
        self._current: TradeGapJob | CandleJob | None = None
        self.counts: Counter[str] = Counter()  # requests, throttled, failures, trades, candles, gaps_*

    # --- intake (called by the pipeline, on the event loop) --------------------------------------------------

    def add_trade_gap(self, gap: GapLike) -> None:
        if not self.trades:
            self._resolve(gap, None)
            return
        self.queue.put_nowait(TradeGapJob(gap, gap.from_id))

    def add_candle_gap(self, symbol: str, first_open_ms: int, last_open_ms: int) -> None:
        log.warning("%s: 1m candles %d..%d missing (%d), fetching over REST", symbol, first_open_ms,
                    last_open_ms, (last_open_ms - first_open_ms) // MINUTE_MS + 1)
        self.queue.put_nowait(CandleJob(symbol, first_open_ms, last_open_ms))

    # --- the loop ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                job = await self._next_job()
                if job is None:
                    break
                self._current = job
                try:
                    await (self._fill_trades(job) if isinstance(job, TradeGapJob) else self._fill_candles(job))
                except Exception:  # a bug in one repair must not take the worker's feed down with it
                    log.exception("backfill job %r failed", job)
                    if isinstance(job, TradeGapJob):
                        self._resolve(job.gap, None)
                self._current = None
                self.queue.task_done()  # lets a caller await queue.join() for "everything repaired"
        finally:
            self._abandon_pending()
            await self._close()

    async def _next_job(self) -> TradeGapJob | CandleJob | None:
        getter = asyncio.ensure_future(self.queue.get())
        stopper = asyncio.ensure_future(self.stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            stopper.cancel()
            return getter.result()
        getter.cancel()
        return None

    def _abandon_pending(self) -> None:
        """Stopping: every gap not yet filled is stored unfilled, so the table shows every gap seen."""
        jobs = [self._current] if self._current is not None else []
        while not self.queue.empty():
            jobs.append(self.queue.get_nowait())
        for job in jobs:
            if isinstance(job, TradeGapJob):
                self._resolve(job.gap, None)

    async def _fill_trades(self, job: TradeGapJob) -> None:
        gap = job.gap
        complete = True
        while job.next_id <= gap.to_id:
            path, query = agg_trade_page(gap.symbol, job.next_id, gap.to_id)
            body = await self._request(path, query, AGG_TRADES_WEIGHT)
            rows = self._decode(_agg_rows, body, gap.symbol)
            if rows is None or not rows:
                complete = False
                break
            receipt, before = self.clock(), job.next_id
            for r in rows:
                if r.a < job.next_id:
                    continue
                if r.a > gap.to_id:
                    break
                if r.a != job.next_id:
                    complete = False  # the exchange no longer has some of these ids
                t = AggTrade(E=r.T, s=gap.symbol, a=r.a, p=r.p, q=r.q, f=r.f, l=r.l, T=r.T, m=r.m)
                self.counts["trades"] += self.sink.on_backfill_trade(t, gap, receipt)
                job.next_id = r.a + 1
            if job.next_id == before:  # nothing usable in the page: the exchange cannot cover the gap
                complete = False
                break
            if self.stop.is_set() and job.next_id <= gap.to_id:
                complete = False
                break
        self._resolve(gap, int(self.clock() * 1000) if complete and job.next_id > gap.to_id else None)

    async def _fill_candles(self, job: CandleJob) -> None:
        for path, query, weight in kline_pages(job.symbol, job.first_open_ms, job.last_open_ms):
            rows = self._decode(_kline_rows, await self._request(path, query, weight), job.symbol)
            if not rows:
                log.warning("%s: candles %d..%d could not be fetched", job.symbol, query["startTime"],
                            query["endTime"])
                self.counts["candles_failed"] += 1
                return
            receipt = self.clock()
            for row in rows:
                if isinstance(row[0], int) and job.first_open_ms <= row[0] <= job.last_open_ms:
                    self.counts["candles"] += self.sink.on_backfill_kline(job.symbol, row, receipt)

    def _resolve(self, gap: GapLike, filled_ms: int | None) -> None:
        self.counts["gaps_filled" if filled_ms is not None else "gaps_unfilled"] += 1
        if filled_ms is None:
            log.warning("%s: aggTrade gap %d..%d stored unfilled", gap.symbol, gap.from_id, gap.to_id)
        else:
            log.info("%s: aggTrade gap %d..%d filled from REST", gap.symbol, gap.from_id, gap.to_id)
        self.sink.gap_resolved(gap, filled_ms)

    def _decode(self, decoder: msgspec.json.Decoder, body: bytes | None, symbol: str) -> list | None:
        if body is None:
            return None
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as e:  # ValidationError is a DecodeError
            self.counts["failures"] += 1
            log.warning("%s: unusable REST answer (%s): %r", symbol, e, body[:200])
            return None

    # --- one request, within the budget ------------------------------------------------------------------------

    async def _request(self, path: str, query: dict[str, str | int], weight: int) -> bytes | None:
        """GET path?query once weight is available; retried on 429/418 (after the budget's pause) and,
        up to MAX_ATTEMPTS in all, on other failures. None when given up or stopping."""
        url = f"{self.rest_url}{path}?{urlencode(query)}"
        failures = 0
        while not self.stop.is_set():
            if not await self._acquire(weight):
                return None
            self.counts["requests"] += 1
            try:
                status, headers, body = await self._get(url)
            except (TimeoutError, OSError, Exception) as e:  # noqa: B014 - every transport failure is retried
                status, headers, body = 0, {}, repr(e).encode()
            self.gate.on_response(status, headers, self.clock() * 1000)
            if status == 200:
                return body
            if status in (429, 418):
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

    async def _acquire(self, weight: int) -> bool:
        """Wait until the budget grants `weight`; False when stopping."""
        while True:
            now_ms = self.clock() * 1000
            wait_ms = self.gate.wait_time(weight, now_ms)
            if wait_ms <= 0 and self.gate.try_acquire(weight, now_ms):
                return True
            if await self._pause(min(max(wait_ms, 10.0) / 1000, MAX_WAIT_S) if math.isfinite(wait_ms)
                                 else MAX_WAIT_S):
                return False

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when stopping."""
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=max(seconds, 0.0))
            return True
        except TimeoutError:
            return False

    async def _get(self, url: str) -> tuple[int, dict[str, str], bytes]:
        if self._fetch is not None:
            return await self._fetch(url)
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        async with self._session.get(url) as resp:  # type: ignore[attr-defined]
            return resp.status, dict(resp.headers), await resp.read()

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()  # type: ignore[attr-defined]
            self._session = None
