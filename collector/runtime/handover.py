"""The hand-over: a successor holds what it receives until its predecessor has drained and exited.

Why (SIGHUP replacement, re-sharding): the successor starts while its predecessor still collects, so the
market is never unwatched, but two processes must not both decide what is stored. The successor holds
every event (`HandoverBuffer`) until the supervisor says the predecessor is gone, restores the
predecessor's final checkpoint (collector.runtime.checkpoints) and replays what it held, skipping trades
the predecessor already processed. One process's decisions, no fork.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collector.feed.wire import AggTrade, ForceOrder, Kline, MarkPrice, OpenInterest
    from collector.pipeline.router import Pipeline

# A successor holding events for its predecessor's hand-over stops holding (and resumes from whatever
# checkpoint is there, as after a crash) past this many events or seconds: memory stays bounded even if
# the predecessor takes long to drain. 200,000 events are ~40 MB; 60 s is far beyond a normal drain.
HANDOVER_MAX_EVENTS = 200_000
HANDOVER_MAX_S = 60.0
# A holding successor is ready (its predecessor may stop) once every one of its symbols has sent an
# event (mark prices come every 1-3 s for all of them), or this long after its first event, whichever
# comes first: a symbol that is silent for that long has nothing to hand over.
HANDOVER_SETTLE_S = 5.0


class HandoverBuffer:
    """A successor's event sink while its predecessor still collects: holds everything, in order.

    `release(pipeline)` replays the held events into the pipeline once it has been restored from the
    predecessor's final checkpoint; trades at or below the restored last id were processed by the
    predecessor and are skipped (not counted as rejected: nothing was wrong with them).
    """

    def __init__(self, symbols: Iterable[str] = (), clock: Callable[[], float] = time.monotonic) -> None:
        self.events: list[tuple[str, Any, float]] = []
        self.clock = clock
        self.started = clock()
        self.unseen = set(symbols)  # symbols that have not sent an event yet
        self.first_event: float | None = None

    def _seen(self, symbol: str) -> None:
        self.unseen.discard(symbol)
        if self.first_event is None:
            self.first_event = self.clock()

    def on_trade(self, t: AggTrade, receipt: float) -> None:
        self.events.append(("on_trade", t, receipt))
        self._seen(t.s)

    def on_mark_price(self, m: MarkPrice, receipt: float) -> None:
        self.events.append(("on_mark_price", m, receipt))
        self._seen(m.s)

    def on_liquidation(self, f: ForceOrder, receipt: float) -> None:
        self.events.append(("on_liquidation", f, receipt))

    def on_kline(self, k: Kline, receipt: float) -> None:
        self.events.append(("on_kline", k, receipt))
        self._seen(k.s)

    def on_open_interest(self, oi: OpenInterest, receipt: float) -> None:
        self.events.append(("on_open_interest", oi, receipt))

    def on_bad_frame(self, kind: str) -> None:
        self.events.append(("on_bad_frame", kind, 0.0))

    def on_stream_lost(self) -> None:
        self.events.append(("on_stream_lost", None, 0.0))  # in order: the hole starts where it happened

    def ready(self) -> bool:
        """Receiving everything the predecessor does: it can stop now (see HANDOVER_SETTLE_S)."""
        return self.first_event is not None and (
            not self.unseen or self.clock() - self.first_event >= HANDOVER_SETTLE_S)

    def overflowing(self) -> bool:
        """Held too much or too long: stop waiting for the predecessor."""
        return len(self.events) > HANDOVER_MAX_EVENTS or self.clock() - self.started > HANDOVER_MAX_S

    def release(self, pipeline: Pipeline) -> int:
        """Replay into `pipeline`; returns how many trades were skipped as already processed."""
        skipped = 0
        last_ids = pipeline.last_trade_id
        for name, ev, receipt in self.events:
            if name == "on_trade":
                last = last_ids.get(ev.s)
                if last is not None and ev.a <= last:
                    skipped += 1
                    pipeline.stream_live(ev.s, ev.T)  # received while the predecessor still was: no hole
                    continue
            if name == "on_bad_frame":
                pipeline.on_bad_frame(ev)
            elif name == "on_stream_lost":
                pipeline.on_stream_lost()
            else:
                getattr(pipeline, name)(ev, receipt)
        self.events.clear()
        return skipped
