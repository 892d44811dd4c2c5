"""The tiers' input: every symbol's activity, merged from the workers' symbol slots in shared memory.

Why here and not in collector.pipeline.tiers: tiers is pure (summaries in, tiers out); reading the
slots is shared-memory I/O against collector.runtime.shm, which the supervisor's tier computation does
once per recomputation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from collector.pipeline.activity import EMPTY_SUMMARY, Summary, SymbolActivity
from collector.runtime.seqlock import StaleSlot
from collector.runtime.shm import StatsBlock

log = logging.getLogger(__name__)


def merge_activity(block: StatsBlock, symbol_slots: Mapping[str, int | Sequence[int]], now_ms: int,
                   quantile: float = 0.9) -> dict[str, Summary]:
    """{symbol: Summary} over the window ending at now_ms, the input of tiers.compute_tiers.

    A symbol may map to several slots (e.g. its old and new owner's while it moves between workers): their
    images are merged with SymbolActivity.merge, which equals one process having seen both streams. Slots
    never written or stale (owner died mid-write) are skipped, as are an image that is not one (logged) and
    an image over another window than the symbol's newest one (filters.trades.stats_window changed
    meanwhile); a symbol without any readable slot gets EMPTY_SUMMARY, which compute_tiers ranks as
    trade-less. The written slots' pages are unmapped from this process's view afterwards
    (StatsBlock.release_symbol_pages).
    """
    out: dict[str, Summary] = {}
    read: list[int] = []
    for symbol, slots in symbol_slots.items():
        readings = []
        for index in _as_indices(slots):
            try:
                reading = block.read_activity(index)
            except StaleSlot:
                log.warning("activity slot %d (%s) is stale: its owner died mid-write", index, symbol)
                continue
            if reading is None:
                continue
            read.append(index)
            readings.append(reading)
        merged: SymbolActivity | None = None
        # newest first: after a change of filters.trades.stats_window the newest image has the window now
        # configured, and an older owner's image over the old window cannot be merged into it
        for reading in sorted(readings, key=lambda r: r.updated_ms, reverse=True):
            try:
                act = SymbolActivity.from_bytes(reading.data)
            except ValueError as e:  # not an image of this build: one symbol's input, not the tier computation
                log.warning("activity of %s: an image that is not one left out (%s)", symbol, e)
                continue
            if merged is None:
                merged = act
            elif not merged.same_layout(act):
                log.warning("activity of %s: an image over another window (%d ms slots, not %d) left out",
                            symbol, act.slot_ms, merged.slot_ms)
            else:
                merged.merge(act)
        out[symbol] = EMPTY_SUMMARY if merged is None else merged.summary(now_ms, quantile)
    if read:  # read once a day: not worth keeping mapped (StatsBlock.release_symbol_pages says why)
        block.release_symbol_pages(min(read), max(read))
    return out


def _as_indices(slots: int | Sequence[int]) -> Iterable[int]:
    return (slots,) if isinstance(slots, int) else slots
