"""A worker's filters and what the supervisor tells it while it runs (tiers, REST pause, config, hand-over).

Why apart from collector.runtime.worker: building the trade filter and applying the supervisor's control
messages is plain logic over the pipeline's objects, testable without a process, a socket or a feed.
"""

from __future__ import annotations

import asyncio
import logging
import queue as queue_mod
import time
from typing import TYPE_CHECKING, Protocol

from collector.config import Config
from collector.feed.pacing import PACER
from collector.pipeline.activity import window_ms
from collector.pipeline.encode import numeric_cache_size
from collector.pipeline.thresholds import Warmup
from collector.pipeline.tiers import TierAssignment
from collector.pipeline.trade_filter import FilterParams, TradeFilter

if TYPE_CHECKING:
    from collector.pipeline.router import Pipeline
    from collector.runtime.worker_spec import WorkerSpec

log = logging.getLogger(__name__)


class RestPausable(Protocol):
    """A REST weight budget (collector.pipeline.limits.WeightBudget, collector.feed.rest_budget)."""

    def pause_until(self, until_ms: float) -> None: ...


class Quietable(Protocol):
    """The worker's statistics publisher (collector.runtime.worker_stats.StatsPublisher)."""

    quiet: bool


def filter_params(cfg: Config) -> FilterParams:
    tf = cfg.filters.trades
    return FilterParams(price_change_pct=tf.price_change_pct, tier_intervals_s=tuple(tf.tier_intervals_s),
                        keep_all=tf.keep_all)


def build_trade_filter(cfg: Config, tiers: dict[str, TierAssignment]) -> TradeFilter:
    f = TradeFilter(filter_params(cfg))
    if tiers:
        f.set_tiers(tiers)
    return f


def build_warmup(cfg: Config, spec: WorkerSpec, trade_filter: TradeFilter) -> Warmup | None:
    """The fresh-start refinement of provisional thresholds, or None when the tiers are live ones."""
    if not spec.tiers_provisional:
        return None
    tf = cfg.filters.trades
    return Warmup(spec.tiers, tuple(tf.tier_multipliers), trade_filter.params.default_tier, tf.threshold_quantile)


def read_control(spec: WorkerSpec, pipeline: Pipeline, trade_filter: TradeFilter,
                  publisher: Quietable | None, budget: RestPausable | None = None,
                  warmup: Warmup | None = None) -> bool:
    """Apply the supervisor's messages; True when one said the predecessor has handed over."""
    handover = False
    while True:
        try:
            kind, payload = spec.control.get_nowait()
        except queue_mod.Empty:
            return handover
        if kind == "tiers":
            trade_filter.set_tiers(payload)
            if warmup is not None:
                warmup.end()  # tiers from live statistics: nothing provisional is left to refine
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
            apply_live_config(payload, pipeline, trade_filter)
        elif kind == "handover":
            handover = True
        # "stop": only the wake-up for spec.stop (collector.runtime.children.request_stop), which the
        # housekeeping checks on every round


def control_fd(control: object) -> int | None:
    """The file descriptor a multiprocessing queue's messages arrive on; None for any other queue (tests).

    multiprocessing.Queue has no public one: its `_reader` end of the pipe is what the standard library's
    concurrent.futures.process waits on too."""
    fileno = getattr(getattr(control, "_reader", None), "fileno", None)
    return fileno() if callable(fileno) else None


class ControlWatch:
    """Sets `wake` when a control message is readable, so the housekeeping applies it at once rather than at
    its next timer (up to collector.runtime.worker.MAX_SLEEP_S later).

    One-shot: it fires once and stops watching; `arm()` after the queue was read watches for the next
    message. Why not a standing watch: the pipe stays readable until the queue is read, and a round that
    failed before reading it (or a worker past its housekeeping) would have the loop call back on every turn.
    Without a pipe to watch (not a multiprocessing queue: tests) nothing is watched and MAX_SLEEP_S bounds
    the delay, as it always did."""

    def __init__(self, loop: asyncio.AbstractEventLoop, control: object, wake: asyncio.Event) -> None:
        self.loop, self.wake, self.fd = loop, wake, control_fd(control)
        self.armed = False

    def arm(self) -> None:
        """Watch for the next message (a no-op while watching already)."""
        if self.fd is not None and not self.armed:
            self.loop.add_reader(self.fd, self._fired)
            self.armed = True

    def close(self) -> None:
        if self.fd is not None and self.armed:
            self.loop.remove_reader(self.fd)
            self.armed = False

    def _fired(self) -> None:
        self.close()
        self.wake.set()


def apply_live_config(cfg: Config, pipeline: Pipeline, trade_filter: TradeFilter) -> None:
    """What SIGHUP changes without a restart: filter parameters (the statistics window too), flush settings,
    log level."""
    params = filter_params(cfg)
    if params != trade_filter.params:
        trade_filter.set_params(params)
        pipeline.encoder.numerics.size = numeric_cache_size(params.keep_all)
    if restarted := pipeline.set_stats_window(window_ms(cfg.filters.trades.stats_window_s)):
        log.warning("filters.trades.stats_window is now %s: the statistics of %d symbols start afresh (the old "
                    "window's slots do not fit the new one); tiers computed from then on use them",
                    cfg.filters.trades.stats_window, restarted)
    pipeline.funding_gate.interval_ms = int(cfg.filters.funding.min_interval_s * 1000)
    pipeline.batch_rows = cfg.writer.batch_rows
    pipeline.flush_interval_ms = cfg.writer.flush_interval_ms
    PACER.rest_s = cfg.exchange.read_rest_ms / 1000
    logging.getLogger().setLevel(cfg.logging.level)
    log.info("configuration reloaded")
