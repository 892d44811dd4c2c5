"""When a worker sends a table's pending rows to the writer: the flush decision, as pure bookkeeping.

Event-to-commit latency is the sum of two holds (this worker's, then the writer's, collector.writer.pending)
plus the COPY. A fixed age (wait `hold_ms` from the first row) makes every row of a quiet stream wait the
whole hold for rows that never come. Instead a table's rows go as soon as the worker is done with what it
read (the caller runs the flush from a timer, which the event loop fires only after the current read's
callbacks), unless the table was sent less than `hold_ms` ago: then at `hold_ms` after that send. So a
quiet stream's rows leave at once, and a busy one still sends at most one batch per table per `hold_ms`,
each row waiting at most `hold_ms`. No I/O and no clock of its own: the caller passes the time in (read
once per batch, never per row), tests move it by hand.
"""

from __future__ import annotations


class FlushPolicy:
    """Per table: when its pending batch got its first row, and when the table was last sent.

    The size trigger (batch_rows) is the pipeline's, checked as rows are added; `sent` is told whichever
    trigger emitted the batch, and its time spaces the next one.
    """

    __slots__ = ("hold_ms", "_started", "_last_sent")

    def __init__(self, hold_ms: int) -> None:
        self.hold_ms = hold_ms
        self._started: dict[str, int] = {}  # table -> ms when its pending batch got its first row
        self._last_sent: dict[str, int] = {}  # table -> ms when a batch of it last went to the writer

    def started(self, table: str, now_ms: int) -> None:
        """The table's batch got its first row at `now_ms` (a second call before `sent` changes nothing)."""
        self._started.setdefault(table, now_ms)

    def sent(self, table: str, now_ms: int) -> None:
        """The table's batch went to the writer at `now_ms`: nothing of it is pending any more."""
        self._started.pop(table, None)
        self._last_sent[table] = now_ms

    def due_at(self, table: str) -> int | None:
        """When the table's pending batch may go (None: nothing pending): at once, or `hold_ms` after the
        previous send of the table, whichever is later. That send came before the batch's first row, so a
        row never waits more than `hold_ms`."""
        started = self._started.get(table)
        if started is None:
            return None
        last = self._last_sent.get(table)
        return started if last is None else max(started, last + self.hold_ms)

    def pending(self) -> list[str]:
        """Tables with a pending batch, due or not."""
        return list(self._started)

    def due(self, now_ms: int) -> list[str]:
        """Tables whose pending batch may go at `now_ms`."""
        return [t for t in self._started if (at := self.due_at(t)) is not None and at <= now_ms]

    def next_ms(self) -> int | None:
        """When the next table may go (None: nothing is pending)."""
        times = [at for t in self._started if (at := self.due_at(t)) is not None]
        return min(times) if times else None
