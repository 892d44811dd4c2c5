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
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent

from collector.config import Config
from collector.exchange import Endpoints, bind_feed_class
from collector.filters.limits import WeightBudget
from collector.filters.trades import FilterParams, TradeFilter
from collector.pipeline import Pipeline
from collector.source import FastBinanceFutures, subscription_channels
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
    tiers: dict[str, TierAssignment] = field(default_factory=dict)
    rest_weight_share: float = 1.0  # of the collector's REST weight budget


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
    feed_cls = bind_feed_class(spec.endpoints, FastBinanceFutures)
    oi_symbols = spec.symbols if "open_interest" in cfg.collection.data_types else []
    feed = feed_cls(
        exchange_symbols=spec.symbols, channels=subscription_channels(list(cfg.collection.data_types)),
        sink=pipeline, oi_symbols=oi_symbols, oi_interval=cfg.filters.open_interest.interval_s,
        oi_gate=WeightBudget(time.time() * 1000, share=spec.rest_weight_share), stop_event=stop,
        timeout=cfg.exchange.silent_timeout_s, timeout_interval=max(1.0, cfg.exchange.silent_timeout_s / 4),
    )

    paused = False
    pauses = 0
    link_stop = asyncio.Event()

    async def housekeeping() -> None:
        nonlocal paused, pauses
        while not stop.is_set():
            if spec.stop.is_set():
                stop.set()
                break
            pipeline.flush_due(int(time.time() * 1000))
            over = link.unacked_bytes > MAX_UNACKED_BYTES
            if over != paused and (not paused or link.unacked_bytes < MAX_UNACKED_BYTES // 2):
                paused = not paused
                pauses += paused
                _set_reading(feed, not paused)
                (log.warning if paused else log.info)(
                    "writer behind: %s reading from the exchange (%d MB unacknowledged)",
                    "paused" if paused else "resumed", link.unacked_bytes >> 20)
            _read_control(spec, pipeline, trade_filter)
            try:
                await asyncio.wait_for(stop.wait(), TICK_S)
            except TimeoutError:
                pass

    log.info("worker %d/%d: %d symbols, data types %s", spec.index + 1, spec.total, len(spec.symbols),
             ",".join(cfg.collection.data_types))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(link.run(link_stop), name="writer-link")
        async with asyncio.TaskGroup() as feed_tg:
            feed_tg.create_task(feed.run(stop), name="feed")
            feed_tg.create_task(housekeeping(), name="housekeeping")
        pipeline.flush_all()
        if not await link.wait_acked(DRAIN_TIMEOUT_S):
            log.error("worker %d: %d batches (%d bytes) not acknowledged by the writer at shutdown",
                      spec.index + 1, len(link.unacked), link.unacked_bytes)
        link_stop.set()
    log.info("worker %d stopped: received %s kept %s rejected %s", spec.index, dict(pipeline.received),
             dict(pipeline.kept), dict(pipeline.rejected))


def _set_reading(feed: FastBinanceFutures, on: bool) -> None:
    """Pause or resume reading every WebSocket: back-pressure to the exchange instead of dropping rows."""
    for handler in feed.connections:
        transport = getattr(getattr(handler.conn, "conn", None), "transport", None)
        if transport is not None:
            (transport.resume_reading if on else transport.pause_reading)()


def _read_control(spec: WorkerSpec, pipeline: Pipeline, trade_filter: TradeFilter) -> None:
    while True:
        try:
            kind, payload = spec.control.get_nowait()
        except queue_mod.Empty:
            return
        if kind == "tiers":
            trade_filter.set_tiers(payload)
            log.info("tiers updated for %d symbols", len(payload))
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

    from collector.logs import log_dir, setup_logging

    setproctitle.setproctitle(f"collector: worker {spec.index + 1}/{spec.total} ({len(spec.symbols)} symbols)")
    setup_logging(spec.config.logging, log_dir(spec.config.logging) / f"worker-{spec.index + 1}.log")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the whole group: the supervisor decides
    uvloop.run(_worker_main(spec))
