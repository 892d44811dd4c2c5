"""A worker's statistics: its counters and per-symbol activity copied into its shared-memory slot.

Why apart from collector.runtime.worker: the publication is the worker's heartbeat (the supervisor's
liveness check reads it) and the input of tiers, but it decides nothing that is stored; what a successor
needs to continue correctly is in collector.runtime.checkpoints, not here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from collector.runtime.heartbeat import PublishPolicy
from collector.runtime.shm import StatsBlock

if TYPE_CHECKING:
    from collector.feed.rest_budget import SharedWeightBudget
    from collector.feed.source import FastBinanceFutures
    from collector.feed.venue_feed import VenueFeed
    from collector.pipeline.limits import WeightBudget
    from collector.pipeline.router import Pipeline
    from collector.runtime.worker_spec import WorkerSpec
    from collector.transport.link import WriterLink

# How often the per-symbol statistics slots (23 KB activity image) are looked at; the images of symbols
# whose statistics changed since their last copy are copied (SymbolActivity.state), all of them at the
# heartbeat. (What a successor resumes from is in collector.runtime.checkpoints.)
ACTIVITY_PUBLISH_S = 2.0
# Counters that did not change are not copied again (collector.runtime.heartbeat), but at least this
# often: the heartbeat. Well inside health's stats_silent_ms (10 s) and monitoring.heartbeat_timeout_s.
HEARTBEAT_S = 5.0
# The activity images only change when a trade is added; unchanged ones are re-copied this often anyway.
ACTIVITY_HEARTBEAT_S = 60.0


class StatsPublisher:
    """Copies this worker's counters into its shared-memory slot (collector.runtime.shm).

    Called when the worker is awake anyway, at most every STATS_PUBLISH_S (collector.runtime.worker); copies
    only what changed, plus a heartbeat."""

    def __init__(self, spec: WorkerSpec, pipeline: Pipeline, feed: FastBinanceFutures | VenueFeed, link: WriterLink,
                 budget: WeightBudget | SharedWeightBudget, clock: Callable[[], float] = time.monotonic) -> None:
        assert spec.stats_name is not None
        self.block = StatsBlock.attach(spec.stats_name)
        self.slot = self.block.process_slot(spec.index + 1)
        self.owner = spec.index + 1
        self.spec, self.pipeline, self.feed, self.link, self.budget = spec, pipeline, feed, link, budget
        self._next_activity = 0.0
        self.clock = clock  # for the heartbeats: monotonic, a wall-clock step back must not silence the child
        self._counters = PublishPolicy(HEARTBEAT_S)
        self._activity = PublishPolicy(ACTIVITY_HEARTBEAT_S)
        self._activity_trades: int | None = None  # Pipeline.trades_added at the last activity copy
        self._images: dict[str, tuple[int, int, int]] = {}  # symbol -> SymbolActivity.state() at its last copy
        self.quiet = False
        self._trips = 0
        self._reconnects = 0
        self.last_watchdog_ms = 0
        self.last_reconnect_ms = 0

    def _signature(self, paused: bool) -> tuple[object, ...]:
        """Changes whenever a published value does: the counters only grow, so their sums move with them."""
        p, link = self.pipeline, self.link
        trips = reconnects = 0
        for h in self.feed.connections:
            trips += h.conn.stats.watchdog_trips
            reconnects += h.conn.stats.reconnects
        return (sum(p.received.values()), sum(p.kept.values()), sum(p.rows.values()), sum(p.rejected.values()),
                sum(p.backfilled.values()), self.budget.paused_until_ms, trips, reconnects, link.sent_batches,
                len(link.unacked), link.unacked_bytes, paused)

    def publish(self, paused: bool, activity: bool = False) -> None:
        """Copy the counters if they changed (or the heartbeat is due), and the activity images if a trade
        arrived since their last copy (or `activity`: a final or hand-over copy, always made)."""
        now, mono = time.time(), self.clock()
        signature = self._signature(paused)
        if self._counters.check(mono, signature) or activity:
            self._publish_counters(paused, now)
        if activity or now >= self._next_activity:
            self._next_activity = now + ACTIVITY_PUBLISH_S
            # the images change only with the trades that feed them (SymbolActivity.add: live and backfilled)
            trades = self.pipeline.trades_added
            if self._activity.check(mono, trades) or activity:
                # asked for, or the heartbeat (no trade since the last copy): every image; else the changed ones
                self._publish_activity(now, every=activity or trades == self._activity_trades)
                self._activity_trades = trades

    def _publish_counters(self, paused: bool, now: float) -> None:
        p, slot = self.pipeline, self.slot
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

    def _publish_activity(self, now: float, every: bool) -> None:
        """Copy the images of the symbols whose statistics changed since their last copy (`every`: all);
        an unchanged image is the bytes its slot holds already."""
        self.slot.set("activity_published_ms", now * 1000)
        slots, images = self.spec.symbol_slots, self._images
        for sym, act in self.pipeline.activity.items():
            index = slots.get(sym)
            if index is None:
                continue
            state = act.state()
            if every or images.get(sym) != state:
                self.block.publish_activity(index, self.owner, act.to_bytes())
                images[sym] = state

    def close(self) -> None:
        self.block.close()
