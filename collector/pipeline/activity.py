"""Per-symbol rolling trade statistics (volume, count, average, max, size quantile) over a window.

Why slots: a symbol's tier should follow what it did over the last day, so old activity has to
age out. A ring of a few fixed time slots does that at O(1) per trade; the price is that the
window is ragged: it covers the current (partial) slot plus the SLOTS-1 previous ones, i.e.
between (SLOTS-1)/SLOTS and all of the configured window.

Why this memory layout: one worker process owns each symbol's live state and publishes it as
fixed-size bytes in shared memory; the supervisor merges copies of the same symbol from several
processes (e.g. before and after the symbol moved between workers). Per symbol that is
    16 + SLOTS * (4 * 8 + sketch.NBYTES) bytes = 23,568 B with the default 8 slots,
i.e. ~11.8 MB for 500 symbols. 24 one-hour slots would be 70 KB/symbol (35 MB): three times the
memory for a window edge that is 1 h instead of 3 h sharp, which tiering recomputed from a 24 h
window does not need.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterator
from typing import Final, NamedTuple

from collector.pipeline import sketch
from collector.pipeline.sketch import MIN_VALUE, NBUCKETS, quantile_of_counts

DAY_MS = 86_400_000
# 8 slots of 3 h over 24 h: see the module docstring for the memory trade-off.
DEFAULT_SLOTS = 8
# Larger than any real epoch difference and still an int64: marks a slot never written.
_NEVER: Final = -(2**62)
_HEADER = struct.Struct("<qq")  # slot_ms, slots: lets a reader check the layout it was given
_ZERO_HIST = array(sketch.TYPECODE, bytes(sketch.NBYTES))

# Bound locally: add() below inlines SizeSketch.add so a trade costs one call, not two.
_log: Final = math.log
_INV: Final = sketch._INV_LOG_GAMMA
_SHIFT: Final = sketch._SHIFT
_LAST: Final = NBUCKETS - 1


class Summary(NamedTuple):
    """What tiering needs to know about one symbol over the window."""

    volume: float  # USD
    count: int  # type: ignore[assignment]  # a field named like tuple.count, on purpose: callers read .count
    avg: float  # USD per trade; 0 when count == 0
    max: float  # largest single trade, USD; 0 when count == 0
    size_quantile: float  # the requested size quantile (summary's `quantile`), USD; 0 when count == 0


EMPTY_SUMMARY = Summary(0.0, 0, 0.0, 0.0, 0.0)


def window_ms(seconds: float, slots: int = DEFAULT_SLOTS) -> int:
    """The configured window (filters.trades.stats_window) in whole ms that split into `slots` equal slots:
    rounded to the nearest such value, at least one ms per slot."""
    return max(slots, round(seconds * 1000 / slots) * slots)


def nbytes(slots: int = DEFAULT_SLOTS) -> int:
    """Size of one symbol's exported state: what a shared-memory slot must hold."""
    return _HEADER.size + slots * (4 * 8 + sketch.NBYTES)


class SymbolActivity:
    """Rolling statistics of one symbol. Event time in ms is passed in; nothing reads a clock."""

    __slots__ = ("slot_ms", "slots", "_epochs", "_volume", "_count", "_max", "_hist", "_epoch", "_k",
                 "_start", "_end", "_base", "_vol", "_n", "_mx", "_elsewhere", "late_dropped")

    def __init__(self, window_ms: int = DAY_MS, slots: int = DEFAULT_SLOTS) -> None:
        if slots < 1 or window_ms < slots or window_ms % slots:
            raise ValueError(f"window_ms={window_ms} must split into {slots} whole-ms slots")
        self.slot_ms = window_ms // slots
        self.slots = slots
        self._epochs = array("q", [_NEVER] * slots)
        self._volume = array("d", bytes(8 * slots))
        self._count = array("Q", bytes(8 * slots))
        self._max = array("d", bytes(8 * slots))
        self._hist = array(sketch.TYPECODE, bytes(sketch.NBYTES * slots))
        # The current (newest) slot: its epoch (ts_ms // slot_ms), index, time span and hist
        # offset, and its volume/count/max kept in attributes rather than the arrays because
        # attribute updates cost half as much; _flush() writes them back before any read.
        self._epoch = _NEVER
        self._k = 0
        self._start = self._end = _NEVER  # empty span: the first trade takes the slow path
        self._base = 0
        self._vol = 0.0
        self._n = 0
        self._mx = 0.0
        self._elsewhere = 0  # writes outside the current slot's attributes (state() says why)
        self.late_dropped = 0  # trades older than the window: visible, so a clock problem shows

    @property
    def window_ms(self) -> int:
        return self.slot_ms * self.slots

    def state(self) -> tuple[int, int, int]:
        """A value that changes whenever the statistics do, without reading them: the current slot, its
        trade count and the count of writes anywhere else (a trade for an older slot, a merge). The stats
        publisher copies a symbol's image only when this moved, so quiet symbols cost nothing there."""
        return self._epoch, self._n, self._elsewhere

    def add(self, ts_ms: int, usd: float) -> None:
        if ts_ms >= self._end or ts_ms < self._start:
            if self._other_slot(ts_ms, usd):
                return
        self._vol += usd
        self._n += 1
        if usd > self._mx:
            self._mx = usd
        # Inlined SizeSketch.add: this runs for every trade, and a call costs as much as the math.
        if usd > MIN_VALUE:
            i = int(_log(usd) * _INV + _SHIFT)
            if i > _LAST:
                i = _LAST
        else:
            i = 0
        self._hist[self._base + i] += 1

    def _other_slot(self, ts_ms: int, usd: float) -> bool:
        """Trade outside the current slot. True when handled here (late or dropped)."""
        e = ts_ms // self.slot_ms
        if e > self._epoch:  # time moved on: the new slot becomes current
            self._flush()
            k = e % self.slots
            self._reset(k, e)
            self._load(k)
            return False
        if e <= self._epoch - self.slots:
            self.late_dropped += 1
            return True
        k = e % self.slots
        held = self._epochs[k]
        if held > e:  # the slot already holds newer data: `e` is out of the window
            self.late_dropped += 1
            return True
        if held != e:
            self._reset(k, e)
        self._elsewhere += 1
        self._volume[k] += usd
        self._count[k] += 1
        if usd > self._max[k]:
            self._max[k] = usd
        self._hist[k * NBUCKETS + sketch.bucket_index(usd)] += 1
        return True

    def _flush(self) -> None:
        if self._epoch != _NEVER:
            k = self._k
            self._volume[k], self._count[k], self._max[k] = self._vol, self._n, self._mx

    def _load(self, k: int) -> None:
        """Make slot k current (after _flush of the previous one)."""
        e = self._epochs[k]
        self._epoch, self._k = e, k
        if e == _NEVER:
            self._start = self._end = _NEVER
        else:
            self._start, self._end = e * self.slot_ms, (e + 1) * self.slot_ms
        self._base = k * NBUCKETS
        self._vol, self._n, self._mx = self._volume[k], self._count[k], self._max[k]

    def _reset(self, k: int, e: int) -> None:
        self._epochs[k] = e
        self._volume[k] = 0.0
        self._count[k] = 0
        self._max[k] = 0.0
        self._hist[k * NBUCKETS:(k + 1) * NBUCKETS] = _ZERO_HIST

    def _live(self, now_ms: int) -> Iterator[int]:
        # Slots newer than now count too: exchange event time may run ahead of the caller's clock.
        oldest = now_ms // self.slot_ms - self.slots
        return (k for k in range(self.slots) if self._epochs[k] > oldest)

    def summary(self, now_ms: int, quantile: float = 0.9) -> Summary:
        self._flush()
        live = list(self._live(now_ms))
        count = sum(self._count[k] for k in live)
        if count == 0:
            return EMPTY_SUMMARY
        volume = math.fsum(self._volume[k] for k in live)
        hist = self._hist_of(live)
        return Summary(volume, count, volume / count, max(self._max[k] for k in live),
                       quantile_of_counts(hist, count, quantile))

    def count(self, now_ms: int) -> int:
        """Trades in the window, without the histogram walk summary() does."""
        self._flush()
        return sum(self._count[k] for k in self._live(now_ms))

    def sketch(self, now_ms: int) -> sketch.SizeSketch:
        """The window's size histogram, for quantiles other than the summary's."""
        self._flush()
        return sketch.SizeSketch(self._hist_of(list(self._live(now_ms))))

    def _hist_of(self, live: list[int]) -> array[int]:
        # The first live slot is copied, not added to zeros: during warm-up (one live slot) the provisional
        # thresholds read every busy symbol's histogram each second, and the element-wise add was most of that.
        if not live:
            return array(sketch.TYPECODE, _ZERO_HIST)
        hist = self._hist
        k = live[0]
        total = hist[k * NBUCKETS:(k + 1) * NBUCKETS]
        for k in live[1:]:
            total = array(sketch.TYPECODE, map(int.__add__, total, hist[k * NBUCKETS:(k + 1) * NBUCKETS]))
        return total

    def same_layout(self, other: SymbolActivity) -> bool:
        """Whether `other` keeps its slots over the same window as this one: only then can the two be
        merged, or one take the other's place (filters.trades.stats_window may have changed between them)."""
        return other.slot_ms == self.slot_ms and other.slots == self.slots

    def merge(self, other: SymbolActivity) -> None:
        """Fold in another process's view of the same symbol.

        Slot by slot: same epoch -> both saw part of that slot's trades, so counts add; different
        epochs -> the older one has aged out, so the newer wins. The result is what one process
        seeing both trade streams would hold.
        """
        if not self.same_layout(other):
            raise ValueError("cannot merge activity with a different slot layout")
        self._flush()
        other._flush()
        for k in range(self.slots):
            mine, theirs = self._epochs[k], other._epochs[k]
            if theirs < mine or theirs == _NEVER:
                continue
            if theirs > mine:
                self._reset(k, theirs)
            self._volume[k] += other._volume[k]
            self._count[k] += other._count[k]
            self._max[k] = max(self._max[k], other._max[k])
            a, b = k * NBUCKETS, (k + 1) * NBUCKETS
            self._hist[a:b] = array(sketch.TYPECODE, map(int.__add__, self._hist[a:b], other._hist[a:b]))
        self.late_dropped += other.late_dropped
        self._elsewhere += 1
        self._sync_current()

    def _sync_current(self) -> None:
        newest = max(self._epochs)
        self._load(self._epochs.index(newest))

    def to_bytes(self) -> bytes:
        """Fixed-size (nbytes(slots)) native-endian image, for a same-machine shared-memory slot.

        late_dropped is a local diagnostic and is not exported.
        """
        self._flush()
        return b"".join((_HEADER.pack(self.slot_ms, self.slots), self._epochs.tobytes(),
                         self._volume.tobytes(), self._count.tobytes(), self._max.tobytes(),
                         self._hist.tobytes()))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> SymbolActivity:
        data = memoryview(data).cast("B")
        slot_ms, slots = _HEADER.unpack_from(data)
        if slots < 1 or slot_ms < 1 or len(data) != nbytes(slots):
            raise ValueError(f"not an activity image: slots={slots}, slot_ms={slot_ms}, {len(data)} bytes")
        self = cls(slot_ms * slots, slots)
        pos = _HEADER.size
        for arr in (self._epochs, self._volume, self._count, self._max, self._hist):
            size = len(arr) * arr.itemsize
            arr[:] = array(arr.typecode, data[pos:pos + size].tobytes())
            pos += size
        self._sync_current()
        return self
