"""A worker process: one uvloop event loop, one feed for its share of one venue's symbols, the pipeline.

The feed is Binance's (collector.feed.source) or, for a worker of OKX or Bybit, collector.feed.venue_feed
(collector.runtime.venue_worker builds it); both run over the same connection layer.

Everything here runs in the child: the supervisor builds a `WorkerSpec` (collector.runtime.worker_spec)
without importing this module; heavy objects (feed, filters, sockets) are created in `run_worker`.
Batches go to the writer over a Unix socket (collector.transport.link) and stay in this worker's memory
until the writer acknowledges them as committed or spooled. When the writer falls behind and more than
writer.worker_max_unacked_mb wait, the worker stops reading the exchange's sockets (until below half)
rather than dropping anything it has accepted: the kernel and then the exchange buffer for us. A pause
longer than the keepalive or the exchange's patience costs the connection; it is re-opened once reading
resumes, and the trades and candles it missed are gaps, backfilled. Every pause is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import psycopg

from collector.config import Config
from collector.db import gaps_repo
from collector.feed.backfill import Backfiller
from collector.feed.cryptofeed_feed import bind_feed_class
from collector.feed.open_interest import poll_positions
from collector.feed.pacing import PACER
from collector.feed.rest_budget import SharedWeightBudget
from collector.feed.rest_client import RestClient
from collector.feed.source import FastBinanceFutures, subscription_channels
from collector.feed.venue_feed import VenueFeed
from collector.feed.venue_history import venue_history
from collector.pipeline.activity import window_ms
from collector.pipeline.batches import Batch
from collector.pipeline.limits import WeightBudget
from collector.pipeline.router import Pipeline
from collector.runtime.checkpoint_block import CheckpointBlock
from collector.runtime.checkpoints import RESUME_IDS_MAX_AGE_MS, Checkpointer, resume_activity
from collector.runtime.handover import HandoverBuffer
from collector.runtime.stopping import StopEvent, sleep_unless_stopped
from collector.runtime.venue_worker import VenueContracts, build_venue_feed, venue_rest_budget
from collector.runtime.wakeups import coalesce
from collector.runtime.worker_control import ControlWatch, build_trade_filter, build_warmup, read_control
from collector.runtime.worker_spec import WorkerSpec
from collector.runtime.worker_stats import StatsPublisher
from collector.transport.link import WriterLink

if TYPE_CHECKING:
    from collector.feed.backfill_plan import BackfillSink

log = logging.getLogger(__name__)

# The worker's housekeeping (publish stats, read control messages, back-pressure) sleeps until its next
# deadline instead of ticking: at the real market's rate a fixed 50 ms tick was most of an idle worker's
# CPU, times 8 workers. Batches have their own timer (arm_flush_timer). Deadlines: the checkpoint snapshot,
# the provisional-threshold refresh, the tail checks, and at most MAX_SLEEP_S. A control message (tiers, REST
# pause, config, hand-over) and a stop request (sent with one: collector.runtime.children.request_stop) wake
# it at once (worker_control.ControlWatch), so MAX_SLEEP_S only bounds what sends no message (a test's
# spec.stop) and the retry after a failed round. Timers due within collector.runtime.wakeups.TIMER_SLACK_S
# of each other share one wake-up.
MAX_SLEEP_S = 2.0
# How often the stats are looked at; they are copied to shared memory only when they changed, and at
# least every worker_stats.HEARTBEAT_S: the heartbeat the supervisor's liveness check reads (monitoring.
# heartbeat_timeout_s, 120 s by default) and /stats' freshness (health's stats_silent_ms is 10 s). At the
# real market's rate the counters change between any two looks, and at 0.5 s the copy was ~7% of a loaded
# worker's CPU (bench/README). Looked at when the worker is awake anyway, not on a timer of their own: by
# its flush timer (the streams brought rows) and by every housekeeping round (at least every MAX_SLEEP_S,
# with the checkpoint snapshot). So a busy worker's counters are at most STATS_PUBLISH_S old, a quiet one's
# at most STATS_PUBLISH_S + MAX_SLEEP_S, and a quiet worker's housekeeping wakes once per 2 s instead of
# twice (bench/README, 2026-12-05 evening).
STATS_PUBLISH_S = 1.0
# While paused by back-pressure the unacknowledged bytes are checked this often, so reading resumes promptly
# once the writer catches up (acknowledgements arrive on the link, which does not wake the housekeeping).
PAUSED_CHECK_S = 0.05
# How long a stopping worker waits for the writer to acknowledge its last batches.
DRAIN_TIMEOUT_S = 30.0
# How often provisional thresholds are re-derived from the symbols' own trades (collector.pipeline.thresholds).
# The first refresh runs at the first housekeeping tick, so the ticker's own thresholds never apply; after
# that a symbol crosses 300 trades at most a second before its threshold follows. A refresh costs a count
# per symbol plus a histogram walk for those whose count grew by 5%: 4.6 ms for 496 symbols on average
# over bench/fresh_start.py's first ten minutes.
WARMUP_REFRESH_S = 1.0
# How often the worker logs where its provisional thresholds come from.
WARMUP_LOG_S = 60.0


async def _worker_main(spec: WorkerSpec, on_booted: Callable[[], None] = lambda: None) -> None:
    """Build the worker (its boot: see collector.runtime.exitcodes), call `on_booted`, then run until stopped."""
    cfg = spec.config
    loop = asyncio.get_running_loop()
    # StopEvents: every loop of the worker sleeps on one of these (collector.runtime.stopping says why)
    stop = StopEvent()
    wake = StopEvent()  # wakes the housekeeping early: a stop request

    def on_stop_signal() -> None:
        stop.set()
        wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the supervisor reloads config and tells us

    link = WriterLink(spec.socket_path)
    trade_filter = build_trade_filter(cfg, spec.tiers)
    warmup = build_warmup(cfg, spec, trade_filter)
    next_warmup = next_warmup_log = 0.0
    checkpointer: Checkpointer | None = None

    def emit(batch: Batch) -> None:
        if checkpointer is not None:
            checkpointer.before_send(batch)
        link.send(batch)

    pipeline = Pipeline(
        spec.symbols, list(cfg.collection.data_types), trade_filter, emit, venue=spec.venue,
        funding_interval_ms=int(cfg.filters.funding.min_interval_s * 1000),
        batch_rows=cfg.writer.batch_rows, flush_interval_ms=cfg.writer.flush_interval_ms,
        stats_window_ms=window_ms(cfg.filters.trades.stats_window_s),
    )
    # Between light reads the worker rests (collector.feed.pacing), after sending what it holds.
    PACER.rest_s = cfg.exchange.read_rest_ms / 1000
    PACER.before_rest = pipeline.flush_pending
    # One REST weight budget for every REST user of every worker (open-interest pollers and backfills),
    # shared through a file the supervisor created: a 429/418 reported by any of them pauses all.
    # Another venue's workers have their own budget (its limits are its own: a Binance 429 never pauses them).
    budget = (rest_budget(cfg, spec.rest_weight_share, spec.rest_budget_path) if spec.venue == "binance"
              else venue_rest_budget(spec))
    # cast: Pipeline.on_backfill_trade takes a GapToFill (one with a filter_state), BackfillSink promises any
    # GapLike; the backfiller only ever passes back the gaps the pipeline reported (pipeline.on_gap below) and
    # the TakenOverGaps it read back from the table, which have one (None)
    rest = RestClient()  # the worker's one HTTP client: backfill, open interest and exchangeInfo
    contracts = VenueContracts()  # OKX's contract sizes for repaired trades, once the feed loaded them
    backfill = Backfiller(spec.endpoints.rest, cast("BackfillSink", pipeline), budget, stop, fetch=rest.get,
                          trades="trades" in cfg.collection.data_types,
                          history=None if spec.venue == "binance" else venue_history(spec.venue, contracts.of))
    pipeline.on_gap = backfill.add_trade_gap
    pipeline.on_candle_gap = backfill.add_candle_gap
    # cast: bind_feed_class returns a subclass of the class it is given, typed as its default base
    feed_cls = cast(type[FastBinanceFutures],
                    bind_feed_class(spec.endpoints, FastBinanceFutures, ws_client=cfg.exchange.ws_client))
    # Open interest is polled on Binance; OKX and Bybit push it (VenueFeed keeps one per interval).
    oi_symbols = spec.symbols if "open_interest" in cfg.collection.data_types and spec.venue == "binance" else []
    oi_positions = poll_positions(oi_symbols, cfg.filters.open_interest.interval_s)
    oi_ready = asyncio.Event()  # the poller waits for the positions to be restored
    holding: HandoverBuffer | None = None
    if spec.checkpoints_name:
        checkpointer = Checkpointer(CheckpointBlock.attach(spec.checkpoints_name), spec.symbol_slots, pipeline,
                                    link)
        if spec.handover:
            checkpointer.active = False
            holding = HandoverBuffer(spec.symbols)
            log.info("holding events until the predecessor of these symbols has handed over")
        else:
            log.info("resumed the checkpoints of %d symbols", checkpointer.resume(oi_positions, RESUME_IDS_MAX_AGE_MS))
            pipeline.tails.expect(pipeline.last_trade_id, int(time.time() * 1000))  # traded while unsubscribed
    if holding is None:
        oi_ready.set()
    feed: FastBinanceFutures | VenueFeed
    if spec.venue == "binance":
        feed = feed_cls(
            exchange_symbols=spec.symbols, channels=subscription_channels(list(cfg.collection.data_types)),
            sink=holding or pipeline, oi_symbols=oi_symbols, oi_interval=cfg.filters.open_interest.interval_s,
            oi_gate=budget, stop_event=stop, oi_positions=oi_positions, oi_ready=oi_ready, rest=rest,
            timeout=cfg.exchange.silent_timeout_s, timeout_interval=max(1.0, cfg.exchange.silent_timeout_s / 4),
        )
    else:
        feed = contracts.feed = build_venue_feed(spec, holding or pipeline, rest, budget)

    paused = False
    pauses = 0
    max_unacked = cfg.writer.worker_max_unacked_mb << 20
    link_stop = StopEvent()

    publisher = StatsPublisher(spec, pipeline, feed, link, budget) if spec.stats_name else None
    if publisher is not None and (resumed := resume_activity(publisher.block, spec.symbol_slots, pipeline)):
        log.info("resumed statistics of %d symbols from a predecessor", resumed)

    def take_over(why: str) -> None:
        """The predecessor is gone (or took too long): continue from its checkpoints, then what we held."""
        nonlocal holding
        if holding is None or checkpointer is None:
            return
        checkpointer.active = True
        checkpointer.block.set_ready(spec.index + 1, 0)
        resumed = checkpointer.resume(oi_positions, RESUME_IDS_MAX_AGE_MS)
        pipeline.tails.expect(pipeline.last_trade_id, int(time.time() * 1000))  # before the held events
        feed.set_sink(pipeline)
        held = len(holding.events)
        skipped = holding.release(pipeline)
        holding = None
        oi_ready.set()
        log.info("%s: resumed the checkpoints of %d symbols; replayed %d held events (%d trades already "
                 "processed by the predecessor)", why, resumed, held, skipped)

    flush_timer: asyncio.TimerHandle | None = None
    flush_timer_ms = 0  # when flush_timer is due

    def flush_pending() -> None:
        """The flush timer: send the batches the policy lets go, re-arm for the next one; and the stats, when
        due (STATS_PUBLISH_S: awake anyway, so no wake-up of their own)."""
        nonlocal flush_timer
        flush_timer = None
        now = time.time()
        pipeline.flush_due(int(now * 1000))
        arm_flush_timer()
        if now >= published_at + STATS_PUBLISH_S:
            try:
                publish_stats(now)
            except Exception:  # as in the housekeeping: a bug here must not stop the flushes
                log.exception("publishing the stats failed; carrying on")

    def arm_flush_timer() -> None:
        """A batch got its first row (or one was sent): one timer, for the earliest batch that may go.

        A batch that may go now gets a zero-delay timer: the event loop fires it after the callbacks of the
        current socket read, so everything read together leaves together (the stream went quiet). Its own
        timer rather than a housekeeping wake-up: the housekeeping round (stats, control queue,
        checkpoints) would otherwise run once per batch."""
        nonlocal flush_timer, flush_timer_ms
        due_ms = pipeline.next_flush_ms()
        if due_ms is None or (flush_timer is not None and flush_timer_ms <= due_ms):
            return
        if flush_timer is not None:
            flush_timer.cancel()
        flush_timer_ms = due_ms
        flush_timer = loop.call_later(max(0.0, due_ms / 1000 - time.time()), flush_pending)

    pipeline.on_first_row = arm_flush_timer
    published_at = 0.0  # when publish_stats last ran (time.time())

    def publish_stats(now: float) -> None:
        nonlocal published_at
        published_at = now
        if publisher is not None and not publisher.quiet:
            publisher.publish(paused)

    async def housekeeping() -> None:
        watch = ControlWatch(loop, spec.control, wake)  # a control message or stop request wakes it
        try:
            while not stop.is_set():
                if spec.stop.is_set():
                    stop.set()
                    break
                wake.clear()
                try:
                    delay = tick()
                except Exception:  # a bug here must not take the feed (and its unacknowledged batches) down
                    log.exception("housekeeping failed; carrying on")
                    delay = MAX_SLEEP_S  # not re-armed: a message this round left unread waits for the next
                else:
                    watch.arm()  # tick() read the queue: wake on the next message
                if not wake.is_set():
                    await sleep_unless_stopped(wake, delay)
        finally:
            watch.close()

    def tick() -> float:
        """Everything due now; returns the seconds until the next deadline."""
        nonlocal paused, pauses, next_warmup, next_warmup_log
        now = time.time()
        if now >= published_at + STATS_PUBLISH_S:
            publish_stats(now)
        pipeline.flush_due(int(now * 1000))  # the flush timer's job; here too, in case a callback raised
        arm_flush_timer()
        if checkpointer is not None:
            checkpointer.tick()
        for sym, after in pipeline.tails.take_due(int(now * 1000), bool(pipeline.last_event_ms)).items():
            if pipeline.tail_open(sym, after):  # else a live trade of it came: its own gap, if any
                backfill.add_tail_check(sym, after)
        if holding is not None and checkpointer is not None:
            if holding.overflowing():
                take_over("the predecessor did not hand over in time")
            elif holding.ready() and not checkpointer.block.ready_ms(spec.index + 1):
                checkpointer.block.set_ready(spec.index + 1, int(time.time() * 1000))  # the supervisor retires
        over = link.unacked_bytes > max_unacked
        if over != paused and (not paused or link.unacked_bytes < max_unacked // 2):
            paused = not paused
            pauses += paused
            _set_reading(feed, not paused)
            (log.warning if paused else log.info)(
                "writer behind: %s reading from the exchange (%d MB unacknowledged)",
                "paused" if paused else "resumed", link.unacked_bytes >> 20)
        if read_control(spec, pipeline, trade_filter, publisher, budget, warmup):
            take_over("the predecessor has handed over")
        now = time.time()
        if warmup is not None and not warmup.ended and now >= next_warmup:
            next_warmup = now + WARMUP_REFRESH_S
            trade_filter.set_thresholds(warmup.refresh(pipeline.activity, int(now * 1000), pipeline.trades_added))
            if now >= next_warmup_log:
                next_warmup_log = now + WARMUP_LOG_S
                log.info("provisional tiers: large-trade thresholds from own trades %d, scaled ticker prior %d, "
                         "none yet %d", *warmup.sources)
        timers = [now + (PAUSED_CHECK_S if paused else MAX_SLEEP_S)]  # the stats: no timer of their own
        if warmup is not None and not warmup.ended:
            timers.append(next_warmup)
        if checkpointer is not None:
            timers.append(checkpointer.next_due)
        if (tails_ms := pipeline.tails.due_ms) is not None and tails_ms > now * 1000:  # else next round
            timers.append(tails_ms / 1000)
        due = coalesce(timers)  # one wake-up for the timers due together (collector.runtime.wakeups)
        if holding is not None:  # a hand-over in progress: notice "ready" and overflow promptly
            due = min(due, now + PAUSED_CHECK_S)
        return due - time.time()

    log.info("worker %d/%d: %d symbols, data types %s", spec.index + 1, spec.total, len(spec.symbols),
             ",".join(cfg.collection.data_types))
    log.info("symbols: %s", " ".join(spec.symbols))
    on_booted()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(link.run(link_stop), name="writer-link")
        async with asyncio.TaskGroup() as feed_tg:
            feed_tg.create_task(feed.run(stop), name="feed")
            feed_tg.create_task(housekeeping(), name="housekeeping")
            feed_tg.create_task(backfill.run(), name="backfill")
            if spec.dsn is not None:
                feed_tg.create_task(take_over_gaps(spec.dsn, spec.venue, spec.symbols, backfill, stop,
                                                   cfg.exchange.gap_rescan_s), name="gap-takeover")
        await rest.close()
        take_over("stopping before the hand-over")  # what we held must not be lost
        pipeline.flush_all()
        if not await link.wait_acked(DRAIN_TIMEOUT_S):
            log.error("worker %d: %d batches (%d bytes) not acknowledged by the writer at shutdown",
                      spec.index + 1, len(link.unacked), link.unacked_bytes)
        if checkpointer is not None:
            checkpointer.final()
        link_stop.set()
    if publisher is not None:
        if not publisher.quiet:
            publisher.publish(False, activity=True)
        publisher.close()
    if checkpointer is not None:
        checkpointer.block.close()
    log.info("worker %d stopped: received %s kept %s rejected %s backfilled %s REST %s", spec.index,
             dict(pipeline.received), dict(pipeline.kept), dict(pipeline.rejected), dict(pipeline.backfilled),
             dict(backfill.counts))


def _open_gaps(dsn: str, venue: str, symbols: list[str]) -> list[gaps_repo.OpenGap]:
    # bounded, so a stopping worker never waits long for this read
    with psycopg.connect(dsn, connect_timeout=10, application_name="collector-worker",
                         options="-c statement_timeout=10000") as conn:
        return gaps_repo.open_gaps(conn, venue, symbols)


async def take_over_gaps(dsn: str, venue: str, symbols: list[str], backfill: Backfiller, stop: asyncio.Event,
                         every_s: float) -> None:
    """At start and every `every_s`: queue the unfinished repairs of this worker's symbols from `gaps`.

    What a killed predecessor or a stopped run left detected or filling is finished here; the read runs
    in a thread so the feed never waits for the database, and a failed read is retried next period.
    """
    while not stop.is_set():
        try:
            backfill.take_over(await asyncio.to_thread(_open_gaps, dsn, venue, symbols))  # type: ignore[arg-type]
        except Exception as exc:  # database down or schema not there yet: the next round tries again
            log.warning("could not read unfinished repairs from the gaps table: %s", exc)
        await sleep_unless_stopped(stop, every_s)


def rest_budget(cfg: Config, share: float, path: str | None = None) -> WeightBudget | SharedWeightBudget:
    """The REST weight budget: exchange.rest_weight_per_min of Binance's per-IP limit. With `path`, the one
    budget every worker shares (collector.feed.rest_budget); without, this worker's own with `share` of it."""
    limit = WeightBudget.BINANCE_LIMIT_PER_MIN
    if path is not None:
        return SharedWeightBudget(path, limit)
    return WeightBudget(time.time() * 1000, limit_per_min=limit,
                        fraction=min(1.0, cfg.exchange.rest_weight_per_min / limit), share=share)


def _set_reading(feed: FastBinanceFutures | VenueFeed, on: bool) -> None:
    """Pause or resume reading every WebSocket: back-pressure to the exchange instead of dropping rows.

    Both connection classes (collector.feed.websocket.PicowsConnection, collector.feed.cryptofeed_adapter.WSConnection) stop
    reading their socket and hold it, across their own flow control and reconnects, until resumed. The
    REST pollers (open interest) have no such method and go on: a few rows a second within their budget.
    """
    for handler in feed.connections:
        set_reading = getattr(handler.conn, "resume_reading" if on else "pause_reading", None)
        if set_reading is not None:
            set_reading()


def run_worker(spec: WorkerSpec) -> None:
    """Process entry point (spawned). A failure before the worker has booted exits with BOOT_ERROR."""
    import faulthandler
    from pathlib import Path

    import setproctitle
    import uvloop

    from collector.runtime.exitcodes import exit_boot_error
    from collector.runtime.logs import exit_with_parent, log_dir, setup_logging

    exit_with_parent()
    faulthandler.enable()  # the supervisor's SIGABRT for a hung worker dumps every thread's stack to stderr
    setproctitle.setproctitle(f"collector: worker {spec.index + 1}/{spec.total} ({len(spec.symbols)} symbols)")
    name, run_dir = f"worker-{spec.index + 1}", Path(spec.socket_path).parent
    booted = False

    def mark_booted() -> None:
        nonlocal booted
        booted = True

    try:
        setup_logging(spec.config.logging, log_dir(spec.config.logging) / f"{name}.log")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the whole group: the supervisor decides
        uvloop.run(_worker_main(spec, mark_booted))
    except Exception as e:
        if booted:
            raise
        exit_boot_error(run_dir, name, e)
