"""Encoded tuples -> picklable per-table batches, and batches -> one COPY stream. Pure: no I/O.

Why apart from collector.pipeline.encode: encoding is per row and per column type, done once in the
worker; a Batch is what is handed on from there, whatever its rows (the pipeline emits it, the transport
frames and spools it, the writer holds and COPYs it), so those modules need these few lines, not the encoders.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from collector.pipeline.encode import COLUMNS, COPY_HEADER, COPY_TRAILER

# An empty builder's earliest and latest event time: after and before any real one (in ms, 2**63 - 1 is ~292
# million years from 1970), so the first add() replaces both.
_EMPTY_FIRST: Final = 2**63 - 1
_EMPTY_LAST: Final = -(2**63)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Batch:
    """Encoded tuples of one table, ready to be concatenated into a COPY stream. Picklable.

    first_event_ms / last_event_ms are the earliest / latest event time of the rows (not arrival order):
    the writer uses them to create missing partitions and to report event-to-commit lag.
    """

    table: str
    rows: int
    data: bytes
    first_event_ms: int
    last_event_ms: int
    created_ms: int

    def __reduce__(self) -> tuple[type[Batch], tuple[str, int, bytes, int, int, int]]:
        """Pickled as its constructor's arguments: one form whether this module runs compiled (collector.native:
        a compiled frozen dataclass is not rebuilt attribute by attribute) or as Python."""
        return Batch, (self.table, self.rows, self.data, self.first_event_ms, self.last_event_ms, self.created_ms)


@dataclass(slots=True)
class BatchBuilder:
    """Accumulates encoded tuples for one table; `take()` hands them over as one Batch and starts afresh."""

    table: str
    _parts: list[bytes] = field(default_factory=list)
    # Earliest / latest event time added; _EMPTY_FIRST / _EMPTY_LAST while empty, so add() compares ints
    # without a None test per row.
    _first: int = field(default=_EMPTY_FIRST)
    _last: int = field(default=_EMPTY_LAST)

    def __post_init__(self) -> None:
        if self.table not in COLUMNS:
            raise ValueError(f"unknown table {self.table!r}")

    def add(self, row: bytes, event_ms: int) -> int:
        """Append one tuple; returns the number of rows now held (saves the caller a len() per row)."""
        parts = self._parts
        parts.append(row)
        if event_ms < self._first:
            self._first = event_ms
        if event_ms > self._last:
            self._last = event_ms
        return len(parts)

    def __len__(self) -> int:
        return len(self._parts)

    @property
    def nbytes(self) -> int:
        """Bytes of the tuples held (summed when asked: nothing in the hot path reads it)."""
        return sum(map(len, self._parts))

    def take(self, now_ms: int | None = None) -> Batch | None:
        """The rows added so far as a Batch (None when empty); the builder is empty afterwards."""
        if not self._parts:
            return None
        batch = Batch(self.table, len(self._parts), b"".join(self._parts), self._first, self._last,
                      _now_ms() if now_ms is None else now_ms)
        self._parts = []
        self._first, self._last = _EMPTY_FIRST, _EMPTY_LAST
        return batch


def copy_payload(batches: Iterable[Batch]) -> bytes:
    """A complete binary COPY stream (header, every batch's tuples, trailer)."""
    return b"".join((COPY_HEADER, *(b.data for b in batches), COPY_TRAILER))
