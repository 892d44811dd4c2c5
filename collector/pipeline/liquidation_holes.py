"""The times a symbol's liquidation stream was not being received: recorded, because they cannot be repaired.

Why: a liquidation sent while no worker was subscribed is gone. The collector has no liquidation history
to repair from (collector.feed.rest_history and collector.feed.venue_history page trades and candles only):
Binance's forceOrder and Bybit's allLiquidation streams have no REST history it could read, and OKX's
REST `public/liquidation-orders` (recent orders per underlying) is not used for repairs. So unlike a trade gap
such a hole is never filled. It is still recorded, as a `gaps` row of kind `liquidations`, state
`unfillable`, with a reason naming why (REASONS), from_id..to_id the exchange's event times in ms, so
that a user can tell a quiet market (no row, no hole) from a hole (no row, inside a gap row).

When a hole opens, and from when (`live_ms`):
- a successor of a worker (kill -9, a SIGHUP hand-over, a full restart) resumes each symbol's `live_ms`
  from the checkpoint (collector.runtime.checkpoints): the exchange time up to which the predecessor had
  received the symbol's streams and the writer had acknowledged what it stored of them. A fresh start has
  no checkpoint and opens nothing (nothing was being collected before it);
- a running worker whose connection carrying liquidations ended (a drop, or a stall the watchdog closed;
  collector.feed.events.EventSink.on_stream_lost): the newest event time its streams had delivered.

When it closes: at the symbol's first trade or liquidation after that (proof that its subscription
delivers again; not a mark price, which may come stamped with an older time, collector.pipeline.router
HOLE_ENDING_KINDS). The hole is live_ms - LATE_MS .. that event's time, or nothing when the successor was
already receiving before its predecessor stopped (a hand-over). Another loss before then keeps the one
hole (from the earlier live_ms); a symbol still open is carried by its worker's checkpoints at that
live_ms, so whoever owns it next records the whole hole. One row per symbol and hole, however many
reconnects happened in between. Pure bookkeeping, no I/O and no clock: the caller passes the times in.
"""

from __future__ import annotations

# The `reason` of a venue's liquidation hole: why it cannot be repaired.
REASONS = {
    "binance": "no liquidation history on Binance",
    "bybit": "no liquidation history on Bybit",
    "okx": "no liquidation history on OKX used for repairs (REST public/liquidation-orders is not read)",
}

# How far before `live_ms` a hole starts. Binance's forceOrder stream pushes at most one liquidation per
# symbol per second (the latest of that second), so a liquidation can reach us up to a second after
# events of later exchange time; one received after the checkpoint but dying unacknowledged with its
# worker, or due just after the last event before a drop, may therefore be up to this much older than
# live_ms. Liquidations the
# predecessor did store inside this margin are in the row's range too, which only widens it.
LATE_MS = 1_000


def hole(live_ms: int, first_ms: int, late_ms: int = LATE_MS) -> tuple[int, int] | None:
    """The exchange times (from, to), inclusive, in which a symbol's liquidations may have been missed, or
    None when nothing can have been: its stream was live up to `live_ms` (the predecessor's checkpoint)
    and again from `first_ms` (the successor's first event of it); first_ms <= live_ms means the two
    overlapped (a hand-over: the successor held events while its predecessor still collected)."""
    if first_ms <= live_ms:
        return None
    return live_ms - late_ms, first_ms


class LiquidationHoles:
    """The symbols whose liquidation stream is not known to be live again since a resume, and since when.

    `open` maps symbol -> the exchange ms up to which it was live (the checkpoint's live_ms). The pipeline
    tests `open` (a dict, empty almost always) before calling `seen`, so the cost on every trade is one
    truth test.
    """

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def resume(self, symbol: str, live_ms: int) -> None:
        """`symbol`'s stream was live up to `live_ms` and is not known to be since: a hole until its first
        event (an open one keeps the earlier start)."""
        prev = self.open.get(symbol)
        self.open[symbol] = live_ms if prev is None else min(prev, live_ms)

    def seen(self, symbol: str, event_ms: int) -> tuple[int, int] | None:
        """A stream event of `symbol` at exchange time `event_ms`: its hole, if one was open (then closed)."""
        live_ms = self.open.pop(symbol, None)
        if live_ms is None:
            return None
        return hole(live_ms, event_ms)

    def live_ms(self, symbol: str, stream_ms: int | None) -> int | None:
        """What a checkpoint says about `symbol` now: while its hole is open, still the predecessor's
        live_ms (so that a successor of this worker records the whole hole), else `stream_ms`, the newest
        event time the worker's streams delivered (None: none yet)."""
        return self.open.get(symbol, stream_ms)
