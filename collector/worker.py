"""A worker process: one uvloop event loop, one cryptofeed feed for its share of symbols, the pipeline.

Everything here runs in the child: `WorkerSpec` is built by the supervisor and must stay small and
picklable (spawn start method); heavy objects (feed, filters, sockets) are created in `run_worker`.
Batches go to the writer over a Unix socket (collector.transport) and stay in this worker's memory
until the writer acknowledges them as committed or spooled. When the writer falls behind and more than
MAX_UNACKED_BYTES wait, the worker pauses reading the exchange's sockets rather than dropping anything
it has accepted (the exchange then buffers, and in the end disconnects us: a gap that is detected and
backfilled). Every pause is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import queue as queue_mod
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent

import psycopg

from collector import storage
from collector.backfill import Backfiller
from collector.config import Config
from collector.exchange import Endpoints, bind_feed_class
from collector.filters.activity import SymbolActivity
from collector.filters.limits import WeightBudget
from collector.filters.trades import FilterParams, TradeFilter
from collector.pipeline import Pipeline
from collector.rest_budget import SharedWeightBudget
from collector.source import FastBinanceFutures, subscription_channels
from collector.stats import StatsBlock
from collector.tiers import TierAssignment
from collector.transport import WriterLink

log = logging.getLogger(__name__)

# Timer period of the worker's housekeeping (flush old batches, pump the outbox, read control
# messages): short against the 250 ms flush interval so latency stays close to it.
TICK_S = 0.05
# Memory a worker may hold in batches the writer has not acknowledged before it stops reading the
# exchange: ~64 MB is minutes of filtered data and tens of seconds of keep_all at full rate.
MAX_UNACKED_BYTES = 64 * 1024 * 1024
# How long a stopping worker waits for the writer to acknowledge its last batches.
DRAIN_TIMEOUT_S = 30.0
# How often the per-symbol slots (23 KB activity image + resume points) are copied to shared memory:
# ~90 µs for 62 symbols. The resume points decide how much a crashed worker's successor re-fetches over
# REST (at most this many seconds of trades, duplicates dropped by the keys), hence short.
ACTIVITY_PUBLISH_S = 2.0


@dataclass
class WorkerSpec:
    index: int
    total: int
    symbols: list[str]
    config: Config
    endpoints: Endpoints
    socket_path: str  # the writer's (collector.transport)
    control: Queue  # from the supervisor: ("tiers", {symbol: TierAssignment}) or ("config", Config)
    stop: MpEvent
    stats_name: str | None = None  # the supervisor's shared-memory statistics block (collector.stats)
    symbol_slots: dict[str, int] = field(default_factory=dict)  # symbol -> its slot in that block
    tiers: dict[str, TierAssignment] = field(default_factory=dict)
    rest_weight_share: float = 1.0  # of the collector's REST weight budget (without rest_budget_path)
    rest_budget_path: str | None = None  # the process tree's shared REST budget (collector.rest_budget)
    dsn: str | None = None  # where the gaps table is read back (unfinished repairs to take over)


def filter_params(cfg: Config) -> FilterParams:
    tf = cfg.filters.trades
    return FilterParams(price_change_pct=tf.price_change_pct, tier_intervals_s=tuple(tf.tier_intervals_s),
                        keep_all=tf.keep_all)


def build_trade_filter(cfg: Config, tiers: dict[str, TierAssignment]) -> TradeFilter:
    f = TradeFilter(filter_params(cfg))
    if tiers:
        f.set_tiers(tiers)
    return f


async def _worker_main(spec: WorkerSpec) -> None:
    cfg = spec.config
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the supervisor reloads config and tells us

    link = WriterLink(spec.socket_path)
    trade_filter = build_trade_filter(cfg, spec.tiers)
    pipeline = Pipeline(
        spec.symbols, list(cfg.collection.data_types), trade_filter, link.send,
        funding_interval_ms=int(cfg.filters.funding.min_interval_s * 1000),
        batch_rows=cfg.writer.batch_rows, flush_interval_ms=cfg.writer.flush_interval_ms,
    )
    # One REST weight budget for every REST user of every worker (open-interest pollers and backfills),
    # shared through a file the supervisor created: a 429/418 reported by any of them pauses all.
    budget = rest_budget(cfg, spec.rest_weight_share, spec.rest_budget_path)
    backfill = Backfiller(spec.endpoints.rest, pipeline, budget, stop,
                          trades="trades" in cfg.collection.data_types)
    pipeline.on_gap = backfill.add_trade_gap
    pipeline.on_candle_gap = backfill.add_candle_gap
    feed_cls = bind_feed_class(spec.endpoints, FastBinanceFutures, ws_client=cfg.exchange.ws_client)
    oi_symbols = spec.symbols if "open_interest" in cfg.collection.data_types else []
    feed = feed_cls(
        exchange_symbols=spec.symbols, channels=subscription_channels(list(cfg.collection.data_types)),
        sink=pipeline, oi_symbols=oi_symbols, oi_interval=cfg.filters.open_interest.interval_s,
        oi_gate=budget, stop_event=stop,
        timeout=cfg.exchange.silent_timeout_s, timeout_interval=max(1.0, cfg.exchange.silent_timeout_s / 4),
    )

    paused = False
    pauses = 0
    link_stop = asyncio.Event()

    publisher = StatsPublisher(spec, pipeline, feed, link, budget) if spec.stats_name else None
    if publisher is not None and (resumed := publisher.resume()):
        log.info("resumed statistics and trade ids of %d symbols from a predecessor", resumed)

    async def housekeeping() -> None:
        while not stop.is_set():
            if spec.stop.is_set():
                stop.set()
                break
            try:
                tick()
            except Exception:  # a bug here must not take the feed (and its unacknowledged batches) down
                log.exception("housekeeping failed; carrying on")
            try:
                await asyncio.wait_for(stop.wait(), TICK_S)
            except TimeoutError:
                pass

    def tick() -> None:
        nonlocal paused, pauses
        if publisher is not None and not publisher.quiet:
            publisher.publish(paused)
        pipeline.flush_due(int(time.time() * 1000))
        over = link.unacked_bytes > MAX_UNACKED_BYTES
        if over != paused and (not paused or link.unacked_bytes < MAX_UNACKED_BYTES // 2):
            paused = not paused
            pauses += paused
            _set_reading(feed, not paused)
            (log.warning if paused else log.info)(
                "writer behind: %s reading from the exchange (%d MB unacknowledged)",
                "paused" if paused else "resumed", link.unacked_bytes >> 20)
        _read_control(spec, pipeline, trade_filter, publisher, budget)

    log.info("worker %d/%d: %d symbols, data types %s", spec.index + 1, spec.total, len(spec.symbols),
             ",".join(cfg.collection.data_types))
    log.info("symbols: %s", " ".join(spec.symbols))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(link.run(link_stop), name="writer-link")
        async with asyncio.TaskGroup() as feed_tg:
            feed_tg.create_task(feed.run(stop), name="feed")
            feed_tg.create_task(housekeeping(), name="housekeeping")
            feed_tg.create_task(backfill.run(), name="backfill")
            if spec.dsn is not None:
                feed_tg.create_task(take_over_gaps(spec.dsn, spec.symbols, backfill, stop, cfg.exchange.gap_rescan_s),
                                    name="gap-takeover")
        pipeline.flush_all()
        if not await link.wait_acked(DRAIN_TIMEOUT_S):
            log.error("worker %d: %d batches (%d bytes) not acknowledged by the writer at shutdown",
                      spec.index + 1, len(link.unacked), link.unacked_bytes)
        link_stop.set()
    if publisher is not None:
        if not publisher.quiet:
            publisher.publish(False, activity=True)
        publisher.close()
    log.info("worker %d stopped: received %s kept %s rejected %s backfilled %s REST %s", spec.index,
             dict(pipeline.received), dict(pipeline.kept), dict(pipeline.rejected), dict(pipeline.backfilled),
             dict(backfill.counts))


class StatsPublisher:
    """Copies this worker's counters into its shared-memory slot (collector.stats); cheap, every tick."""

    def __init__(self, spec: WorkerSpec, pipeline: Pipeline, feed: FastBinanceFutures, link: WriterLink,
                 budget: WeightBudget | SharedWeightBudget) -> None:
        assert spec.stats_name is not None
        self.block = StatsBlock.attach(spec.stats_name)
        self.slot = self.block.process_slot(spec.index + 1)
        self.owner = spec.index + 1
        self.spec, self.pipeline, self.feed, self.link, self.budget = spec, pipeline, feed, link, budget
        self._next_activity = 0.0
        # (link sequence number, trade ids, kline opens) recorded at each publication, oldest first
        self._snapshots: deque[tuple[int, dict[str, int], dict[str, int]]] = deque()
        self._durable: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self.quiet = False
        self._trips = 0
        self._reconnects = 0
        self.last_watchdog_ms = 0
        self.last_reconnect_ms = 0

    def publish(self, paused: bool, activity: bool = False) -> None:
        p, slot, now = self.pipeline, self.slot, time.time()
        slot.update(p.received, "received.")
        slot.update(p.kept, "kept.")
        slot.update(p.rows, "rows.")
        slot.update(p.rejected, "rejected.")
        slot.update(p.last_event_ms, "last_event_ms.")
        slot.update(p.backfilled, "backfilled.")
        slot.set("rest_paused_until_ms", max(0.0, self.budget.paused_until_ms))
        trips = reconnects = 0
        for h in self.feed.connections:
            st = h.conn.stats
            trips += st.watchdog_trips
            reconnects += st.reconnects
        if trips > self._trips:
            self.last_watchdog_ms = int(now * 1000)
        if reconnects > self._reconnects:
            self.last_reconnect_ms = int(now * 1000)
        self._trips, self._reconnects = trips, reconnects
        slot.update({
            "reconnects": reconnects, "watchdog_trips": trips, "last_watchdog_ms": self.last_watchdog_ms,
            "last_reconnect_ms": self.last_reconnect_ms, "outbox_batches": self.link.sent_batches,
            "outbox_pending_batches": len(self.link.unacked), "outbox_pending_bytes": self.link.unacked_bytes,
            "paused": float(paused), "symbols": len(self.spec.symbols),
            "late_dropped": sum(a.late_dropped for a in p.activity.values()),
        })
        slot.publish()
        if activity or now >= self._next_activity:
            self._next_activity = now + ACTIVITY_PUBLISH_S
            slot.set("activity_published_ms", now * 1000)
            trade_ids, kline_opens = self._durable_resume_points()
            for sym, act in p.activity.items():
                index = self.spec.symbol_slots.get(sym)
                if index is not None:
                    self.block.publish_activity(index, self.owner, act.to_bytes(),
                                                last_trade_id=trade_ids.get(sym, 0),
                                                last_kline_open_ms=kline_opens.get(sym, 0))

    def _durable_resume_points(self) -> tuple[dict[str, int], dict[str, int]]:
        """The newest (trade id, kline) positions whose rows the writer has all acknowledged.

        A successor resumes gap detection from what is published here, so it must not be ahead of what
        is safe: rows still in this worker's builders or in unacknowledged batches die with it. Every
        publication flushes the builders and records the positions with the link's sequence number;
        a recorded position becomes publishable once the writer has acknowledged everything up to it.
        """
        p = self.pipeline
        p.flush_all()
        self._snapshots.append((self.link.last_seq, dict(p.last_trade_id), dict(p.last_kline_open)))
        acked = self.link.acked_through
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= acked:
            self._snapshots.popleft()
        if self._snapshots[0][0] <= acked:
            self._durable = self._snapshots[0][1:]
        return self._durable

    def resume(self) -> int:
        """Take over what a predecessor (crashed or replaced) left in this worker's symbol slots.

        Its rolling statistics continue instead of restarting from zero, and its last aggTrade id and
        closed kline become this worker's starting point: the first live trade then reveals the ids
        missed while no process was reading (a gap, backfilled over REST), likewise missed candles.
        Returns how many symbols were resumed.
        """
        resumed = 0
        for sym, index in self.spec.symbol_slots.items():
            try:
                r = self.block.read_activity(index)
            except Exception:  # a stale slot (its owner died mid-write): start that symbol afresh
                continue
            if r is None or sym not in self.pipeline.activity:
                continue
            try:
                self.pipeline.activity[sym] = SymbolActivity.from_bytes(r.data)
            except ValueError:
                pass
            if r.last_trade_id:
                self.pipeline.last_trade_id[sym] = r.last_trade_id
            if r.last_kline_open_ms:
                self.pipeline.last_kline_open[sym] = r.last_kline_open_ms
            resumed += 1
        return resumed

    def close(self) -> None:
        self.block.close()


def _open_gaps(dsn: str, symbols: list[str]) -> list[storage.OpenGap]:
    # bounded, so a stopping worker never waits long for this read
    with psycopg.connect(dsn, connect_timeout=10, application_name="collector-worker",
                         options="-c statement_timeout=10000") as conn:
        return storage.open_gaps(conn, symbols)


async def take_over_gaps(dsn: str, symbols: list[str], backfill: Backfiller, stop: asyncio.Event,
                         every_s: float) -> None:
    """At start and every `every_s`: queue the unfinished repairs of this worker's symbols from `gaps`.

    What a killed predecessor or a stopped run left detected or filling is finished here; the read runs
    in a thread so the feed never waits for the database, and a failed read is retried next period.
    """
    while not stop.is_set():
        try:
            backfill.take_over(await asyncio.to_thread(_open_gaps, dsn, symbols))  # type: ignore[arg-type]
        except Exception as exc:  # database down or schema not there yet: the next round tries again
            log.warning("could not read unfinished repairs from the gaps table: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


def rest_budget(cfg: Config, share: float, path: str | None = None) -> WeightBudget | SharedWeightBudget:
    """The REST weight budget: exchange.rest_weight_per_min of Binance's per-IP limit. With `path`, the one
    budget every worker shares (collector.rest_budget); without, this worker's own with `share` of it."""
    limit = WeightBudget.BINANCE_LIMIT_PER_MIN
    if path is not None:
        return SharedWeightBudget(path, limit)
    return WeightBudget(time.time() * 1000, limit_per_min=limit,
                        fraction=min(1.0, cfg.exchange.rest_weight_per_min / limit), share=share)


def _set_reading(feed: FastBinanceFutures, on: bool) -> None:
    """Pause or resume reading every WebSocket: back-pressure to the exchange instead of dropping rows."""
    for handler in feed.connections:
        transport = getattr(getattr(handler.conn, "conn", None), "transport", None)
        if transport is not None:
            (transport.resume_reading if on else transport.pause_reading)()


def _read_control(spec: WorkerSpec, pipeline: Pipeline, trade_filter: TradeFilter,
                  publisher: StatsPublisher | None, budget: WeightBudget | SharedWeightBudget | None = None) -> None:
    while True:
        try:
            kind, payload = spec.control.get_nowait()
        except queue_mod.Empty:
            return
        if kind == "tiers":
            trade_filter.set_tiers(payload)
            log.info("tiers updated for %d symbols", len(payload))
        elif kind == "rest_pause" and budget is not None:
            # another worker got a 429/418: the limit is per IP, so everyone waits
            budget.pause_until(payload)
            log.warning("REST paused for %.0f s: a worker was rate limited (the limit is per IP)",
                        max(0.0, payload / 1000 - time.time()))
        elif kind == "quiet" and publisher is not None:
            # a successor is taking over this worker's stats slots; keep collecting until told to stop
            publisher.quiet = True
        elif kind == "config":
            _apply_live_config(payload, pipeline, trade_filter)


def _apply_live_config(cfg: Config, pipeline: Pipeline, trade_filter: TradeFilter) -> None:
    """What SIGHUP changes without a restart: filter parameters, flush settings, log level."""
    params = filter_params(cfg)
    if params != trade_filter.params:
        trade_filter.set_params(params)
    pipeline.funding_gate.interval_ms = int(cfg.filters.funding.min_interval_s * 1000)
    pipeline.batch_rows = cfg.writer.batch_rows
    pipeline.flush_interval_ms = cfg.writer.flush_interval_ms
    logging.getLogger().setLevel(cfg.logging.level)
    log.info("configuration reloaded")


def run_worker(spec: WorkerSpec) -> None:
    """Process entry point (spawned)."""
    import setproctitle
    import uvloop

    from collector.logs import exit_with_parent, log_dir, setup_logging

    exit_with_parent()
    setproctitle.setproctitle(f"collector: worker {spec.index + 1}/{spec.total} ({len(spec.symbols)} symbols)")
    setup_logging(spec.config.logging, log_dir(spec.config.logging) / f"worker-{spec.index + 1}.log")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the whole group: the supervisor decides
    uvloop.run(_worker_main(spec))
