"""The writer process's loop: batches from the workers' sockets into the Writer, each acknowledged back to
the worker that sent it once it is safe.

Why apart from collector.writer.service: the Writer decides what is written when and what counts as safe,
driven by add() / tick() / close() and tested without sockets; this loop owns the sockets
(collector.transport.server), remembers which connection and sequence number each batch came with, and
stops reading while the Writer's backlog is full, so back-pressure reaches the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from collector.pipeline.batches import Batch
from collector.transport.server import BatchServer
from collector.writer.service import Writer
from collector.writer.stats import WriterStats

log = logging.getLogger("collector.writer.service")  # its lines keep the name they had before the split

# Longest wait in select() before the loop looks at the stop event again: how late a stop is noticed
# (the workers drain first, so this adds at most a second to a stop).
STOP_POLL_S = 1.0


class _Event(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def serve(socket_path: str | Path, stop_event: _Event, dsn: str, *, shutdown_deadline_s: float = 10.0,
          on_tick: Callable[[WriterStats], None] | None = None, on_booted: Callable[[], None] | None = None,
          **writer_kw: Any) -> WriterStats:
    """The writer process's loop: batches from the workers' sockets -> Writer, until stop_event is set.

    `on_booted` is called once the socket listens and the spool is ready, before the database is tried:
    what fails before that is a boot error (collector.runtime.exitcodes), an unreachable database never is.

    Each batch is acknowledged to its worker once committed (or spooled); until then the worker keeps
    it and sends it again to a restarted writer. Waits in select() between deadlines (no busy wait);
    while backlogged it stops reading the sockets, so back-pressure reaches the workers.
    """
    server = BatchServer(socket_path)
    origin: dict[int, tuple[int, int]] = {}  # id(batch) -> (connection, seq) until acknowledged

    def acknowledge(batches: list[Batch]) -> None:
        acks: dict[int, list[int]] = {}
        for b in batches:
            o = origin.pop(id(b), None)
            if o is not None:
                acks.setdefault(o[0], []).append(o[1])
        for cid, seqs in acks.items():
            server.ack(cid, seqs)

    writer = Writer(dsn, on_committed=acknowledge, **writer_kw)
    if on_booted is not None:
        on_booted()

    def take(items: list[tuple[int, int, Batch]]) -> None:
        for cid, seq, batch in items:
            origin[id(batch)] = (cid, seq)
            if not writer.add(batch):
                acknowledge([batch])  # nothing to write: the worker may forget it

    try:
        writer.try_connect()  # database down at start: keep accepting, flush() retries with backoff
        while not stop_event.is_set():
            timeout = min(writer.next_wakeup(), STOP_POLL_S)
            if writer.accepting():
                take(server.poll(timeout))
            else:
                stop_event.wait(timeout)
            writer.tick()
            if on_tick is not None:
                on_tick(writer.stats)
        # shutdown: the workers have stopped and handed everything over; take what is still in flight
        while True:
            items = server.poll(0.0)
            if not items:
                break
            take(items)
        left = writer.close(shutdown_deadline_s)
        if on_tick is not None:
            on_tick(writer.stats)
        if left:  # not acknowledged: a worker still running would resend them to the next writer
            log.error("writer stopped with %d batches neither written nor spooled (%s)", len(left),
                      "spool full" if writer.spool_dir else "no spool_dir")
    finally:
        server.close()
    return writer.stats
