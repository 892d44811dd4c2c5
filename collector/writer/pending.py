"""The batches waiting for their table's next COPY, with running row and byte totals.

Pure bookkeeping, no I/O: the writer (collector.writer.service) adds what arrives and takes what it flushed or
spooled. The totals are updated on every change rather than summed over the backlog: during an outage the
backlog holds up to max_pending_bytes of batches, and summing it on every arriving batch made each add cost
as much as the whole backlog.
"""

from __future__ import annotations

from collections.abc import Iterable

from collector.pipeline.batches import Batch


class Pending:
    """Per-table lists of batches in arrival order, when each table's oldest was created, and totals.

    A table keeps its place once seen (its list is emptied, not removed, when flushed), so tables are
    flushed and spooled in the order they first appeared.
    """

    def __init__(self) -> None:
        self._batches: dict[str, list[Batch]] = {}
        self._since: dict[str, float] = {}  # table -> clock() when its oldest pending batch was created
        self._table_rows: dict[str, int] = {}
        self._table_bytes: dict[str, int] = {}
        self.rows = 0  # every pending batch's rows
        self.nbytes = 0  # every pending batch's payload bytes

    def __bool__(self) -> bool:
        return any(self._batches.values())

    def add(self, batch: Batch, born: float) -> None:
        """Queue `batch` behind its table's others. `born` is when the batch's age starts, on the writer's
        clock (its creation by the worker, see Writer.add): the table is as old as its oldest batch, which
        need not be the first to arrive when several workers send."""
        batches = self._batches.setdefault(batch.table, [])
        if not batches or born < self._since[batch.table]:
            self._since[batch.table] = born
        batches.append(batch)
        self._count(batch.table, batch.rows, len(batch.data))

    def tables(self) -> list[str]:
        """Tables with batches waiting, in first-seen order."""
        return [t for t, bs in self._batches.items() if bs]

    def batches(self, table: str) -> list[Batch]:
        """The table's waiting batches, oldest first (a copy)."""
        return list(self._batches.get(table, ()))

    def all(self) -> list[Batch]:
        """Every waiting batch, table by table."""
        return [b for bs in self._batches.values() for b in bs]

    def since(self, table: str) -> float:
        """clock() when the table's oldest waiting batch was created (KeyError when none waits)."""
        return self._since[table]

    def oldest(self, default: float) -> float:
        """The earliest of the tables' since() values; `default` when nothing waits."""
        return min(self._since.values(), default=default)

    def due(self, now: float, max_rows: int, max_bytes: int, max_age_s: float) -> list[str]:
        """Tables whose backlog is old enough or large enough to flush now."""
        return [t for t in self.tables()
                if self._table_rows[t] >= max_rows or self._table_bytes[t] >= max_bytes
                or now - self._since[t] >= max_age_s]

    def take(self, table: str) -> list[Batch]:
        """Remove and return every waiting batch of `table` (it keeps its place in the order)."""
        batches = self._batches.get(table, [])
        self._batches[table] = []
        self._since.pop(table, None)
        self._count(table, -self._table_rows.get(table, 0), -self._table_bytes.get(table, 0))
        return batches

    def drop(self, table: str) -> list[Batch]:
        """Remove `table` altogether (a table the back-end turned out not to take); returns its batches."""
        batches = self.take(table)
        del self._batches[table]
        return batches

    def forget(self, gone: Iterable[Batch]) -> None:
        """Remove these batches (by identity) wherever they wait; a table's age is kept while others remain."""
        ids = {id(b) for b in gone}
        for table, batches in self._batches.items():
            kept = [b for b in batches if id(b) not in ids]
            if len(kept) == len(batches):
                continue
            for b in batches:
                if id(b) in ids:
                    self._count(table, -b.rows, -len(b.data))
            self._batches[table] = kept
            if not kept:
                self._since.pop(table, None)

    def _count(self, table: str, rows: int, nbytes: int) -> None:
        self._table_rows[table] = self._table_rows.get(table, 0) + rows
        self._table_bytes[table] = self._table_bytes.get(table, 0) + nbytes
        self.rows += rows
        self.nbytes += nbytes
