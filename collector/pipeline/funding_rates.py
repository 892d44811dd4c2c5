"""The funding rate each symbol was sent last, for venues whose mark-price events can come without it.

Why: OKX sends the funding rate (`funding-rate`, every 30-90 s) apart from the mark price (`mark-price`,
every second), and its decoder merges the two (collector.feed.venues.okx), so a decoder that has not been
sent a rate yet emits mark prices without one. After a worker restart (kill -9, a SIGHUP successor) that
was every row until the venue's next `funding-rate` push: the mark price and a NULL rate, although the
predecessor knew the rate. So the pipeline remembers the last rate per symbol, the worker's checkpoint
carries it (collector.runtime.checkpoints; written the moment it changes, not half a second later; the
`checkpoints` table too, for a full restart), the successor restores it here, and a rate-less event takes
it, as the predecessor's decoder would have merged it.

One rule for both, so a row does not depend on which worker stored it: a row carries the rate sent last
while the row is at most RATE_STALE_MS past that rate's settlement (its next funding time), and none after.
A worker that keeps receiving is never that far behind (OKX pushes the next period's rate within 30-90 s);
a rate that old is a past period's, restored after an outage (a full restart hours later) or left by a
decoder whose pushes stopped. The earlier rule (a restored rate only before its settlement, a merged one
always) made a successor's row at or just after a settlement rate-less where its predecessor's would have
carried the rate: a kill -9 across 08:00 UTC failed the OKX fault test in CI (2026-12-03).

Binance's markPrice and Bybit's tickers carry the rate in every event (Bybit's decoder emits no funding
event before a tickers snapshot gave it one, and Bybit sends that snapshot on every subscribe), so they
have nothing to carry: RATE_APART names the venues that do.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# Venues whose mark-price events may come without the funding rate (the rate is sent on its own channel).
RATE_APART = frozenset({"okx"})
# How far past a rate's settlement a row still carries it: above OKX's longest push interval (90 s) so that
# a worker that receives never drops it, well under a funding period (8 h) so that a past one is not reused.
RATE_STALE_MS = 120_000
# The longest rate text carried: the checkpoint record's field (collector.runtime.checkpoint_block) is this
# wide. Venues send ~10-20 characters ("0.0001234567"); a longer text is used but not remembered.
MAX_RATE_CHARS = 40


def is_stale(next_ms: int, at_ms: int) -> bool:
    """Whether a rate for the settlement at `next_ms` is a past period's at `at_ms` (RATE_STALE_MS past it):
    the one rule for a rate received, restored from a worker's checkpoint, or loaded at a fresh start."""
    return at_ms > next_ms + RATE_STALE_MS


def _usable(rate: str) -> bool:
    """A rate worth remembering: a finite number that fits the checkpoint record (a bad one is the
    encoder's to reject, on the event that carried it, not to be copied into later rows)."""
    if len(rate) > MAX_RATE_CHARS or not rate.isascii():
        return False
    try:
        return math.isfinite(float(rate))
    except ValueError:
        return False


class FundingRates:
    """Last (rate, next funding ms) per symbol; `on_change(symbol)` is called when a symbol's changes."""

    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        self.known: dict[str, tuple[str, int]] = {}
        self.on_change = on_change

    def rate_of(self, symbol: str, rate: str, next_ms: int, event_ms: int) -> tuple[str, int]:
        """(rate, next funding ms) to store with this event: its own if it has a rate (then remembered, when
        it comes with its settlement), else the one known; either only while `event_ms` is at most
        RATE_STALE_MS past that rate's settlement, else no rate ("", 0)."""
        known = self.known.get(symbol)
        if rate and not next_ms:
            # Sent without its settlement: stored as sent, but a rate that can never be judged stale is not
            # carried into later rows, and it supersedes the one before it (a successor restoring a rate
            # drops one without a settlement too: checkpoints.current_rate).
            if self.known.pop(symbol, None) is not None and self.on_change is not None:
                self.on_change(symbol)
            return rate, next_ms
        if rate:
            if (known is None or known[0] != rate or known[1] != next_ms) and _usable(rate):
                self.known[symbol] = (rate, next_ms)
                if self.on_change is not None:
                    self.on_change(symbol)
        elif known is not None:
            rate, next_ms = known
        else:
            return rate, next_ms
        if is_stale(next_ms, event_ms):
            return "", 0
        return rate, next_ms

    def restore(self, symbol: str, rate: str, next_ms: int) -> None:
        """A predecessor's last rate (from its checkpoint); a rate this pipeline was sent itself wins. One
        without its settlement is not taken (rate_of does not carry such a rate either)."""
        if symbol not in self.known and next_ms and _usable(rate):
            self.known[symbol] = (rate, next_ms)
