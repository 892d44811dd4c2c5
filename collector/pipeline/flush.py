"""When a worker sends a table's pending rows to the writer: the flush decision, as pure bookkeeping.

Event-to-commit latency is the sum of two holds (this worker's, then the writer's, collector.writer.pending)
plus the COPY. The worker's hold exists only to send fewer, larger batches; it is measured from the moment
the first row of a batch was added (the clock is read once per batch, never per row), so a row never waits
longer than `hold_ms` here, however the worker's other timers fall. No I/O and no clock of its own: the
caller passes the time in, tests move it by hand.
"""

from __future__ import annotations


class FlushPolicy:
    """Per table: when its pending batch started; a table is due `hold_ms` after its first row.

    The size trigger (batch_rows) is the pipeline's, checked as rows are added; `sent` forgets a table
    whichever trigger emitted it.
    """

    __slots__ = ("hold_ms", "_started")

    def __init__(self, hold_ms: int) -> None:
        self.hold_ms = hold_ms
        self._started: dict[str, int] = {}  # table -> ms when its pending batch got its first row

    def started(self, table: str, now_ms: int) -> None:
        """The table's batch got its first row at `now_ms` (a second call before `sent` changes nothing)."""
        self._started.setdefault(table, now_ms)

    def sent(self, table: str) -> None:
        """The table's batch went to the writer: nothing of it is pending any more."""
        self._started.pop(table, None)

    def due(self, now_ms: int) -> list[str]:
        """Tables whose first pending row is at least `hold_ms` old at `now_ms`."""
        return [t for t, since in self._started.items() if now_ms - since >= self.hold_ms]

    def next_ms(self) -> int | None:
        """When the next table becomes due (None: nothing is pending)."""
        return min(self._started.values()) + self.hold_ms if self._started else None
