"""The worker's end of the transport: batches to the writer over a Unix socket, each held until acknowledged.

Why a socket and not a multiprocessing.Queue (the transport this replaced): a process killed while it reads a
Queue can leave the Queue's lock held (`get(timeout)` waits while holding it), so a kill -9 of an idle writer
would wedge every later writer, and whatever sat in the Queue's pipe would be lost with it. Here each worker
keeps every batch it sent until the writer says the batch is committed (or spooled to disk); if the writer
dies, the worker reconnects to its successor and sends the unacknowledged batches again. A batch that had in
fact been committed is then loaded through the writer's ON CONFLICT DO NOTHING path, so replays are harmless.
The writer's end is collector.transport.server; the bytes are collector.transport.frames.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from collector.pipeline.batches import Batch
from collector.runtime.stopping import sleep_unless_stopped
from collector.transport.frames import ACK, encode_frame

log = logging.getLogger(__name__)

# Reconnect delay to a restarting writer: short, the writer comes back within a second or two; doubling up
# to the cap while it stays away.
RECONNECT_DELAY_S = 0.2
RECONNECT_DELAY_CAP_S = 2.0


class WriterLink:
    """A worker's end: send() never blocks and never drops; run() keeps the connection up."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.unacked: dict[int, Batch] = {}  # insertion order = send order, for replays
        self.unacked_bytes = 0
        self.sent_batches = 0
        self.acked_batches = 0
        self.acked_rows = 0
        self.reconnects = 0
        self._seq = 0
        self._writer: asyncio.StreamWriter | None = None
        self._all_acked = asyncio.Event()
        self._all_acked.set()

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest batch sent (0 before the first)."""
        return self._seq

    @property
    def acked_through(self) -> int:
        """Every batch with a sequence number up to this one has been acknowledged."""
        return next(iter(self.unacked)) - 1 if self.unacked else self._seq

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def send(self, batch: Batch) -> None:
        self._seq += 1
        self.unacked[self._seq] = batch
        self.unacked_bytes += len(batch.data)
        self._all_acked.clear()
        self.sent_batches += 1
        w = self._writer
        if w is not None and not w.is_closing():
            try:
                w.write(encode_frame(self._seq, batch))
            except (RuntimeError, OSError):  # the writer went away mid-write (uvloop raises on a closed
                self._writer = None          # transport): the batch stays unacknowledged and is resent

    def _ack(self, seq: int) -> None:
        b = self.unacked.pop(seq, None)
        if b is not None:
            self.unacked_bytes -= len(b.data)
            self.acked_batches += 1
            self.acked_rows += b.rows
        if not self.unacked:
            self._all_acked.set()

    async def run(self, stop: asyncio.Event) -> None:
        delay = RECONNECT_DELAY_S
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
            except OSError:
                if await _wait(stop, delay):
                    return
                delay = min(delay * 2, RECONNECT_DELAY_CAP_S)
                continue
            delay = RECONNECT_DELAY_S
            self._writer = writer
            if self.unacked:  # the previous writer may not have committed these: send them again, in order
                log.info("writer connection (re)established: resending %d unacknowledged batches", len(self.unacked))
                writer.write(b"".join(encode_frame(s, b) for s, b in self.unacked.items()))
            acks = asyncio.create_task(self._read_acks(reader))
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({acks, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (acks, stopping):
                    t.cancel()
                await asyncio.gather(acks, stopping, return_exceptions=True)
                self._writer = None
                writer.close()
            if not stop.is_set() or self.unacked:
                self.reconnects += 1
                log.warning("lost the writer connection (%d batches unacknowledged): reconnecting", len(self.unacked))
            if stop.is_set() and not self.unacked:
                return

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.readexactly(ACK.size)
                self._ack(ACK.unpack(data)[0])
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return

    async def wait_acked(self, timeout: float) -> bool:
        """At shutdown: True once the writer has acknowledged everything sent."""
        try:
            await asyncio.wait_for(self._all_acked.wait(), timeout)
            return True
        except TimeoutError:
            return not self.unacked


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    return await sleep_unless_stopped(stop, seconds)

