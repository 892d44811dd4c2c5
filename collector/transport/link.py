"""Batches from workers to the writer over a Unix socket, each one held by its worker until acknowledged.

Why not a multiprocessing.Queue: a process killed while it reads a Queue can leave the Queue's lock held
(`get(timeout)` waits while holding it), so a kill -9 of an idle writer would wedge every later writer,
and whatever sat in the Queue's pipe would be lost with it. Here each worker keeps every batch it sent
until the writer says the batch is committed (or spooled to disk); if the writer dies, the worker
reconnects to its successor and sends the unacknowledged batches again. A batch that had in fact been
committed is then loaded through the writer's ON CONFLICT DO NOTHING path, so replays are harmless.

Frame (worker -> writer): HEADER then `length` bytes of COPY tuples. Ack (writer -> worker): ACK (seq).
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

from collector.pipeline.encode import COLUMNS, Batch
from collector.runtime.stopping import sleep_unless_stopped

log = logging.getLogger(__name__)

MAGIC = b"CLB1"
# magic, table index, sequence number, rows, first event ms, last event ms, created ms, payload length
HEADER = struct.Struct(">4sBQIqqqI")
ACK = struct.Struct(">Q")
TABLES = tuple(COLUMNS)
TABLE_INDEX = {t: i for i, t in enumerate(TABLES)}
# Reconnect delay to a restarting writer: short, the writer comes back within a second or two.
RECONNECT_DELAY_S = 0.2
RECONNECT_DELAY_CAP_S = 2.0
# Socket reads per wake-up on the writer side: large enough to take a whole burst of batches at once.
READ_CHUNK = 1 << 20


def encode_frame(seq: int, b: Batch, table_index: dict[str, int] = TABLE_INDEX) -> bytes:
    """One frame; `table_index` maps table names to the header's table byte (the spool files bring their
    own, written into the file, so the in-code table order may change between releases)."""
    return HEADER.pack(MAGIC, table_index[b.table], seq, b.rows, b.first_event_ms, b.last_event_ms, b.created_ms,
                       len(b.data)) + b.data


class FrameError(ValueError):
    """A stream that is not this protocol (or is corrupt): the connection is dropped."""


# --- spool files: the same frames behind a self-describing header ------------------------------------------------
#
# A spool file holds batches the writer acknowledged while the database was down; it may be read by the next
# release (an upgrade during an outage), so its format is versioned and independent of in-code order:
#
#   SPOOL_HEADER: magic b"CLSPOOL\n", format version (u16), number of tables T (u16), number of frames (u32)
#   T times: table name (u8 length + ASCII), number of columns (u16), each column name (u8 length + ASCII)
#   the frames: HEADER + COPY tuples exactly as on the socket, the table byte indexing the list above
#
# Big-endian like the frames. The column lists say which columns the COPY tuples carry, so a release whose
# table gained a column still knows what an old file holds. A newer format version is refused, never guessed.
SPOOL_MAGIC = b"CLSPOOL\n"
SPOOL_VERSION = 1
SPOOL_HEADER = struct.Struct(">8sHHI")


class SpoolFormatError(ValueError):
    """Bytes that are not a spool file this release can read (wrong magic, newer version, truncated)."""


def _name_bytes(name: str) -> bytes:
    raw = name.encode("ascii")
    return bytes([len(raw)]) + raw


def encode_spool(batches: list[Batch], columns: dict[str, tuple[str, ...]] = COLUMNS) -> bytes:
    """A whole spool file's bytes (pure: the caller writes them durably)."""
    tables = list(dict.fromkeys(b.table for b in batches))
    index = {t: i for i, t in enumerate(tables)}
    parts = [SPOOL_HEADER.pack(SPOOL_MAGIC, SPOOL_VERSION, len(tables), len(batches))]
    for t in tables:
        parts.append(_name_bytes(t) + struct.pack(">H", len(columns[t])))
        parts.extend(_name_bytes(c) for c in columns[t])
    parts.extend(encode_frame(i, b, index) for i, b in enumerate(batches))
    return b"".join(parts)


def decode_spool(data: bytes) -> tuple[list[Batch], dict[str, tuple[str, ...]]]:
    """(batches in file order, {table: columns its tuples carry}); raises SpoolFormatError."""
    if len(data) < SPOOL_HEADER.size:
        raise SpoolFormatError(f"{len(data)} bytes: shorter than a spool header")
    magic, version, ntables, nframes = SPOOL_HEADER.unpack_from(data)
    if magic != SPOOL_MAGIC:
        raise SpoolFormatError(f"not a spool file (magic {magic!r})")
    if version != SPOOL_VERSION:
        raise SpoolFormatError(f"spool format {version}, this release reads format {SPOOL_VERSION}")
    pos = SPOOL_HEADER.size

    def name() -> str:
        nonlocal pos
        n = data[pos]
        pos += 1 + n
        return data[pos - n:pos].decode("ascii")

    columns: dict[str, tuple[str, ...]] = {}
    try:
        for _ in range(ntables):
            table = name()
            (ncols,) = struct.unpack_from(">H", data, pos)
            pos += 2
            columns[table] = tuple(name() for _ in range(ncols))
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise SpoolFormatError(f"truncated or corrupt table list: {e}") from None
    reader = FrameReader(tuple(columns))
    try:
        batches = [b for _, b in reader.feed(data[pos:])]
    except FrameError as e:
        raise SpoolFormatError(str(e)) from None
    if reader.buf or len(batches) != nframes:
        raise SpoolFormatError(f"truncated: {len(batches)} of {nframes} frames, {len(reader.buf)} bytes left over")
    return batches, columns


class FrameReader:
    """Incremental parser: bytes in, (seq, Batch) out; `tables` names the header's table bytes."""

    def __init__(self, tables: tuple[str, ...] = TABLES) -> None:
        self.buf = bytearray()
        self.tables = tables

    def feed(self, data: bytes) -> Iterator[tuple[int, Batch]]:
        tables = self.tables
        self.buf += data
        while len(self.buf) >= HEADER.size:
            magic, ti, seq, rows, first, last, created, n = HEADER.unpack_from(self.buf)
            if magic != MAGIC or ti >= len(tables):
                raise FrameError(f"bad frame header {bytes(self.buf[:HEADER.size])!r}")
            end = HEADER.size + n
            if len(self.buf) < end:
                return
            data = bytes(self.buf[HEADER.size:end])
            del self.buf[:end]
            yield seq, Batch(tables[ti], rows, data, first, last, created)


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


class BatchServer:
    """The writer's end: a non-blocking Unix socket server driven by poll() from the writer's loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if os.path.exists(self.path):
            os.unlink(self.path)  # a previous writer's socket: it is dead (we are its replacement)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.conns: dict[int, tuple[socket.socket, FrameReader]] = {}
        self._next_id = 0
        self.frame_errors = 0

    def poll(self, timeout: float, max_batches: int = 10_000) -> list[tuple[int, int, Batch]]:
        """Wait up to `timeout` for input; returns (connection id, seq, batch) in arrival order."""
        out: list[tuple[int, int, Batch]] = []
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self._accept()
                continue
            cid = key.data
            sock, reader = self.conns[cid]
            try:
                data = sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self._close(cid)
                continue
            try:
                out.extend((cid, seq, b) for seq, b in reader.feed(data))
            except FrameError as e:
                self.frame_errors += 1
                log.error("dropping a connection that sent a bad frame: %s", e)
                self._close(cid)
            if len(out) >= max_batches:
                break
        return out

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self._next_id += 1
        self.conns[self._next_id] = (sock, FrameReader())
        self.sel.register(sock, selectors.EVENT_READ, self._next_id)

    def ack(self, cid: int, seqs: list[int]) -> None:
        """Tell a worker these batches are safe. A worker gone meanwhile simply misses its acks."""
        entry = self.conns.get(cid)
        if entry is None or not seqs:
            return
        sock = entry[0]
        payload = b"".join(ACK.pack(s) for s in seqs)
        try:
            sock.setblocking(True)  # acks are tiny; a worker always reads them
            sock.settimeout(5.0)
            sock.sendall(payload)
        except OSError:
            self._close(cid)
            return
        finally:
            if cid in self.conns:
                sock.setblocking(False)

    def _close(self, cid: int) -> None:
        sock, _ = self.conns.pop(cid)
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def close(self) -> None:
        for cid in list(self.conns):
            self._close(cid)
        self.sel.close()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
