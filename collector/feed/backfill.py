"""Repairs what the stream missed, over REST, within the worker's REST weight budget.

Two kinds of hole are repaired, from the venue's REST history (collector.feed.rest_history: Binance's
/fapi/v1/aggTrades and /fapi/v1/klines; collector.feed.venue_history: OKX's and Bybit's):

- trade id gaps (collector.pipeline.router.Gap): paged from the venue's trades by id until every id of
  the gap was received, each trade handed back to the pipeline (`on_backfill_trade`), which validates and
  filters it like a live one; a venue with no trades by id (Bybit) stores the gap unfillable at once;
- missing closed 1m candles (the first closed kline after a reconnect jumps over minutes): fetched from
  the venue's candle history.

Why one sequential job queue: after a mass reconnect every symbol has a gap at once; a single consumer
that takes weight from the REST weight budget before each request (the same budget the open-interest
poller and every other worker spend) turns that burst into a steady trickle at the budget's rate, and a
429/418 answer (reported to the budget, which then pauses for Retry-After or the ban) stops the poller
and the backfill together: no retry storm is possible. Candle repairs go first (a priority queue): a
candle hole costs one light request and leaves every 5m..1d candle of its periods wrong until filled.

Gaps are durable from detection: every hole is written to `gaps` when it is found (state detected), again
when its repair starts (filling) and when it ends (filled, or unfillable when the exchange no longer has
the data). A repair that cannot finish here (the worker stops, or REST keeps failing) leaves its row
detected; whichever worker owns the symbol next (a successor after kill -9, the next start after a
stop) reads the unfinished rows (gaps_repo.open_gaps, see take_over) and repairs them. The writer keeps
the most advanced version of each row (gaps_repo.upsert_gaps_sql), so the order versions land in does
not matter. A gap taken over from the table is filtered from the symbol's current filter state (its
state at detection died with the process that found it).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec

from collector.feed.backfill_plan import (
    MINUTE_MS,
    BackfillSink,
    CandleJob,
    GapLike,
    OpenGapLike,
    TailCheckJob,
    TakenOverGap,
    TradeGapJob,
)
from collector.feed.backfill_rest import BudgetedRequests
from collector.feed.rest_budget import WeightGate
from collector.feed.rest_client import Fetch
from collector.feed.rest_history import BinanceHistory, RestHistory

log = logging.getLogger(__name__)

Job = TradeGapJob | CandleJob | TailCheckJob

# Share of the budget (tokens and the clock minute's weight) a trade-gap page must leave untouched: after a
# mass drop the trade gaps are found at once and the candle holes only when the next kline closes; this
# keeps weight for those (a klines request weighs 1, so 20% of 1200/min is 240 of them) instead of making
# them wait for the next minute. The price: while trade gaps are backlogged they get 80% of the budget.
TRADES_RESERVE = 0.2
# Queue order: candles before trade gaps (see the module docstring), then first come first served.
CANDLE_PRIORITY = 0
TRADES_PRIORITY = 1
# A repair whose requests kept failing (network, 5xx) is left detected and not taken over again from the
# table before this many seconds: long enough that a broken exchange is not hammered, short against the
# hours a repair stays possible.
RETRY_FAILED_AFTER_S = 60.0
# How many resolved repairs are remembered so that a rescan of the table, which may not yet show their
# final row (still on its way through the writer), does not start them again.
REMEMBER_RESOLVED = 10_000


class Backfiller(BudgetedRequests):
    """One worker's REST repair queue: trade gaps and missing candles, one request at a time.

    `history` is the venue's REST history (collector.feed.rest_history); Binance's by default."""

    def __init__(self, rest_url: str, sink: BackfillSink, gate: WeightGate, stop: asyncio.Event, *,
                 fetch: Fetch | None = None, clock: Callable[[], float] = time.time,
                 trades: bool = True, history: RestHistory | None = None) -> None:
        super().__init__(rest_url, gate, stop, history or BinanceHistory(), fetch, clock)
        self.sink = sink
        self.trades = trades  # False when trades are not collected: gaps are stored unfilled at once
        # (priority, sequence, job): candles first, then in arrival order
        self.queue: asyncio.PriorityQueue[tuple[int, int, Job]] = asyncio.PriorityQueue()
        self._seq = 0
        self._current: Job | None = None
        self._active: set[tuple[str, str, int, int]] = set()  # queued or being repaired
        self._not_before: dict[tuple[str, str, int, int], float] = {}  # resolved (inf) or failed (retry time)
        self._candles_queued = 0  # candle jobs waiting: a trade gap waiting for weight gives way to them
        self._ids = "aggTrade" if self.history.venue == "binance" else f"{self.history.venue} trade id"  # logs

    def _should_give_way(self) -> bool:
        return self._candles_queued > 0

    # --- intake (called by the pipeline, on the event loop) --------------------------------------------------

    def add_trade_gap(self, gap: GapLike) -> None:
        job = TradeGapJob(gap, gap.from_id)
        if not self.trades:
            self._record(job, "unfillable", "trades are not collected")
            return
        if self.history.no_trade_history:  # the venue cannot serve them: stored as it is, with why
            self.counts["gaps_unfilled"] += 1
            self._record(job, "unfillable", self.history.no_trade_history)
            return
        self._record(job, "detected", self.history.trade_gap_reason)
        self._enqueue(job)

    def add_tail_check(self, symbol: str, after_id: int) -> None:
        """Ask for a resumed symbol's trades after `after_id` (collector.pipeline.tails), behind the gaps."""
        if self.trades and not self.history.no_trade_history:
            self._enqueue(TailCheckJob(symbol, after_id))

    def add_candle_gap(self, symbol: str, first_open_ms: int, last_open_ms: int) -> None:
        log.warning("%s: 1m candles %d..%d missing (%d), fetching over REST", symbol, first_open_ms,
                    last_open_ms, (last_open_ms - first_open_ms) // MINUTE_MS + 1)
        job = CandleJob(symbol, first_open_ms, last_open_ms, int(self.clock() * 1000))
        self._record(job, "detected", "closed 1m klines skipped on the stream")
        self._enqueue(job)

    def take_over(self, gaps: list[OpenGapLike]) -> int:
        """Queue unfinished repairs read from the gaps table (a predecessor's, or an earlier run's).

        Skips what this backfiller already has queued, is repairing, has resolved (its final row may not
        have reached the table yet) or saw fail less than RETRY_FAILED_AFTER_S ago. Returns how many
        were queued.
        """
        now = self.clock()
        taken = 0
        for g in gaps:
            job: Job
            if g.kind == "trades":
                if not self.trades or self.history.no_trade_history:
                    continue
                job = TradeGapJob(TakenOverGap(g.symbol, g.from_id, g.to_id, g.detected_ms), g.from_id)
            elif g.kind == "candles_1m":
                job = CandleJob(g.symbol, g.from_id, g.to_id, g.detected_ms)
            else:
                continue
            if job.key in self._active or self._not_before.get(job.key, 0.0) > now:
                continue
            self._enqueue(job)
            taken += 1
        if taken:
            self.counts["taken_over"] += taken
            log.warning("took over %d unfinished repairs from the gaps table", taken)
        return taken

    def _enqueue(self, job: Job) -> None:
        self._active.add(job.key)
        self._seq += 1
        candle = isinstance(job, CandleJob)
        self._candles_queued += candle
        self.queue.put_nowait((CANDLE_PRIORITY if candle else TRADES_PRIORITY, self._seq, job))

    def _record(self, job: Job, state: str, reason: str, filled_ms: int | None = None) -> None:
        kind, symbol, lo, hi = job.key
        self.sink.record_gap(kind, symbol, lo, hi, job.detected_ms, state, reason, int(self.clock() * 1000),
                             filled_ms)

    def _finish(self, job: Job, not_before: float) -> None:
        self._active.discard(job.key)
        self._not_before[job.key] = not_before
        if len(self._not_before) > REMEMBER_RESOLVED:
            del self._not_before[next(iter(self._not_before))]  # the oldest entry

    # --- the loop ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                job = await self._next_job()
                if job is None:
                    break
                self._current = job
                if isinstance(job, TailCheckJob):
                    await self._check_tail(job)
                    self._current = None
                    self.queue.task_done()
                    continue
                self._record(job, "filling", "repairing over REST")
                try:
                    await (self._fill_trades(job) if isinstance(job, TradeGapJob) else self._fill_candles(job))
                except Exception:  # a bug in one repair must not take the worker's feed down with it
                    log.exception("backfill job %r failed", job)
                    self._record(job, "detected", "repair failed with an error; retried later")
                    self._finish(job, self.clock() + RETRY_FAILED_AFTER_S)
                self._current = None
                self.queue.task_done()  # lets a caller await queue.join() for "everything repaired"
        finally:
            self._abandon_pending()
            await self._close()

    async def _next_job(self) -> Job | None:
        getter = asyncio.ensure_future(self.queue.get())
        stopper = asyncio.ensure_future(self.stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            stopper.cancel()
            job = getter.result()[2]
            self._candles_queued -= isinstance(job, CandleJob)
            return job
        getter.cancel()
        return None

    def _abandon_pending(self) -> None:
        """Stopping: every repair not finished stays detected in the table, for the next owner to finish."""
        jobs = [self._current] if self._current is not None and self._current.key in self._active else []
        while not self.queue.empty():
            jobs.append(self.queue.get_nowait()[2])
            self._candles_queued -= isinstance(jobs[-1], CandleJob)
        jobs = [j for j in jobs if not isinstance(j, TailCheckJob)]  # not a gap: nothing to leave behind
        for job in jobs:
            self._record(job, "detected", "stopped before the repair finished; the next start repairs it")
            self._active.discard(job.key)
        if jobs:
            log.warning("stopping with %d repairs unfinished: left as detected in the gaps table", len(jobs))

    async def _fill_trades(self, job: TradeGapJob) -> None:
        gap = job.gap
        complete = True
        while job.next_id <= gap.to_id:
            path, query, weight = self.history.trade_page(gap.symbol, job.next_id, gap.to_id)
            body = await self._request(path, query, weight, TRADES_RESERVE, preemptible=True)
            if body is None and self._preempted:  # a candle repair came up while waiting for weight
                self._active.discard(job.key)
                self._enqueue(job)  # continues from job.next_id after the candles
                return
            if body is None:  # REST kept failing, or stopping: not the exchange's answer, try again later
                self._unfinished(job)
                return
            rows = self._decode(self.history.trades, body, gap.symbol)
            if rows is None or not rows:
                complete = False
                break
            ranged = self.history.ranged_ids
            if ranged and len(rows) > 1 and rows[-1].a < gap.to_id:
                rows = rows[:-1]  # its push may go on past the page: asked again, whole, from its first fill
            receipt, before = self.clock(), job.next_id
            for r in rows:
                if r.a < job.next_id:
                    continue
                first = r.f if ranged else r.a
                if first > gap.to_id:
                    break
                if first != job.next_id:
                    complete = False  # the exchange no longer has some of these ids
                self.counts["trades"] += self.sink.on_backfill_trade(r, gap, receipt)
                job.next_id = r.a + 1
            if job.next_id == before:  # nothing usable in the page: the exchange cannot cover the gap
                complete = False
                break
            if self.stop.is_set() and job.next_id <= gap.to_id:
                self._unfinished(job)
                return
        self._resolve(job, int(self.clock() * 1000) if complete and job.next_id > gap.to_id else None)

    async def _check_tail(self, job: TailCheckJob) -> None:
        """One page of the symbol's trades after the checkpoint (a longer tail is a busy symbol's, whose next
        live trade shows the rest), unless a live trade made it moot; a failed request leaves the tail to
        the symbol's next live trade, as without the check."""
        self._active.discard(job.key)
        if not self.sink.tail_open(job.symbol, job.after_id):
            return
        path, query, weight = self.history.trade_page(job.symbol, job.after_id + 1,
                                                      job.after_id + self.history.trade_page_limit)
        body = await self._request(path, query, weight, TRADES_RESERVE, preemptible=True)
        if body is None and self._preempted:
            self._enqueue(job)  # after the candle repair that came up
            return
        rows = self._decode(self.history.trades, body, job.symbol)
        if rows is not None:
            self.counts["tail_checks"] += 1
            ids = ([(i, r.T) for r in rows for i in range(r.f, r.a + 1)] if self.history.ranged_ids else
                   [(r.a, r.T) for r in rows])
            self.sink.on_tail(job.symbol, job.after_id, ids, self.clock())

    async def _fill_candles(self, job: CandleJob) -> None:
        for path, query, weight in self.history.candle_pages(job.symbol, job.first_open_ms, job.last_open_ms):
            body = await self._request(path, query, weight)
            if body is None:
                self._unfinished(job)
                return
            rows = self._decode(self.history.candles, body, job.symbol)
            if not rows:
                log.warning("%s: candles %d..%d could not be fetched (%s %s)", job.symbol, job.first_open_ms,
                            job.last_open_ms, path, query)
                self.counts["candles_failed"] += 1
                self._record(job, "unfillable", "the exchange returned no klines for these minutes")
                self._finish(job, math.inf)
                return
            receipt = self.clock()
            for row in rows:
                if isinstance(row[0], int) and job.first_open_ms <= row[0] <= job.last_open_ms:
                    self.counts["candles"] += self.sink.on_backfill_kline(job.symbol, row, receipt)
        log.info("%s: 1m candles %d..%d filled from REST", job.symbol, job.first_open_ms, job.last_open_ms)
        self._record(job, "filled", "fetched over REST", int(self.clock() * 1000))
        self._finish(job, math.inf)

    def _unfinished(self, job: Job) -> None:
        """REST gave up (repeated failures) or the worker is stopping: the row stays detected, for a retry
        (take_over after RETRY_FAILED_AFTER_S) or the next owner of the symbol."""
        if self.stop.is_set():
            self._record(job, "detected", "stopped while repairing; the next start repairs it")
            self._active.discard(job.key)
            return
        self.counts["repairs_deferred"] += 1
        kind, symbol, lo, hi = job.key
        log.warning("%s: repair of %s %d..%d deferred: REST keeps failing", symbol, kind, lo, hi)
        self._record(job, "detected", "REST requests failed; retried later")
        self._finish(job, self.clock() + RETRY_FAILED_AFTER_S)

    def _resolve(self, job: TradeGapJob, filled_ms: int | None) -> None:
        gap = job.gap
        self.counts["gaps_filled" if filled_ms is not None else "gaps_unfilled"] += 1
        if filled_ms is None:
            log.warning("%s: %s gap %d..%d stored unfilled", gap.symbol, self._ids, gap.from_id, gap.to_id)
            self._record(job, "unfillable", "the exchange no longer has some of these ids")
        else:
            log.info("%s: %s gap %d..%d filled from REST", gap.symbol, self._ids, gap.from_id, gap.to_id)
            self._record(job, "filled", "fetched over REST", filled_ms)
        self._finish(job, math.inf)

    def _decode(self, parse: Callable[[str, bytes], list[Any]], body: bytes | None, symbol: str) -> list[Any] | None:
        if body is None:
            return None
        try:
            return parse(symbol, body)
        except (msgspec.DecodeError, ValueError, TypeError) as e:  # ValidationError is a DecodeError
            self.counts["failures"] += 1
            log.warning("%s: unusable REST answer (%s): %r", symbol, e, body[:200])
            return None
