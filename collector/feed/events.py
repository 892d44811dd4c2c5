"""What the feed hands downstream: the EventSink contract, and the count of frames it could not hand over.

Why a module of its own: the lean frame handler (collector.feed.source), the hand-over buffer of a
successor (collector.runtime.checkpoints) and the pipeline all meet at this contract; none of them needs
the connections to know it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Protocol

from collector.feed.wire import AggTrade, ForceOrder, Kline, MarkPrice, OpenInterest

log = logging.getLogger(__name__)

# A frame is logged in full at most this many times per error kind: enough to diagnose, never a log flood.
LOGGED_SAMPLES_PER_KIND = 3
LOGGED_FRAME_CHARS = 500


class EventSink(Protocol):
    """Where decoded events go (the pipeline). Called on the event loop; must not block.

    Two trade kinds carry fields still to be made, for the ~1% of trades the pipeline keeps, so that a dropped
    trade costs nothing for them (collector.feed.wire): a UuidTrade's id (Bybit), and an OkxTrade's E, l and m
    (its agg()). A sink that reads those fields of every trade calls agg() / computes the id first."""

    def on_trade(self, t: AggTrade, receipt: float) -> None: ...
    def on_mark_price(self, m: MarkPrice, receipt: float) -> None: ...
    def on_liquidation(self, f: ForceOrder, receipt: float) -> None: ...
    def on_kline(self, k: Kline, receipt: float) -> None: ...
    def on_open_interest(self, oi: OpenInterest, receipt: float) -> None: ...
    def on_bad_frame(self, kind: str) -> None: ...
    # The connection carrying the liquidations ended while the feed runs (a drop, or a stall the watchdog
    # closed): nothing of it is received until it is subscribed again (collector.pipeline.liquidation_holes).
    def on_stream_lost(self) -> None: ...


class FrameErrors:
    """Counts frames that could not be handled, by kind, and logs a few samples of each kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, kind: str, frame: str | bytes, conn_id: str, exc: BaseException | None = None) -> None:
        self.counts[kind] += 1
        n = self.counts[kind]
        if n <= LOGGED_SAMPLES_PER_KIND:
            text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
            log.warning("%s: skipped a frame (%s, %d so far): %s%s", conn_id, kind, n,
                        text[:LOGGED_FRAME_CHARS], f" ({type(exc).__name__}: {exc})" if exc else "")
        elif n in (10, 100, 1000) or n % 10000 == 0:
            log.warning("%s: %d frames skipped as %s so far", conn_id, n, kind)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
