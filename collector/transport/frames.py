"""The bytes on the wire between a worker and the writer, and in the writer's spool files.

One encoding for both, so a batch is the same bytes on the socket (collector.transport.link ->
collector.transport.server) and on disk (collector.writer.spool): pure functions and an incremental parser,
no I/O.

Frame (worker -> writer): HEADER then `length` bytes of COPY tuples. Ack (writer -> worker): ACK (seq).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator

from collector.pipeline.batches import Batch
from collector.pipeline.encode import COLUMNS

MAGIC = b"CLB1"
# magic, table index, sequence number, rows, first event ms, last event ms, created ms, payload length
HEADER = struct.Struct(">4sBQIqqqI")
ACK = struct.Struct(">Q")
TABLES = tuple(COLUMNS)
TABLE_INDEX = {t: i for i, t in enumerate(TABLES)}


def encode_frame(seq: int, b: Batch, table_index: dict[str, int] = TABLE_INDEX) -> bytes:
    """One frame; `table_index` maps table names to the header's table byte (the spool files bring their
    own, written into the file, so the in-code table order may change between releases)."""
    return HEADER.pack(MAGIC, table_index[b.table], seq, b.rows, b.first_event_ms, b.last_event_ms, b.created_ms,
                       len(b.data)) + b.data


class FrameError(ValueError):
    """A stream that is not this protocol (or is corrupt): the connection is dropped."""


class FrameReader:
    """Incremental parser: bytes in, (seq, Batch) out; `tables` names the header's table bytes."""

    def __init__(self, tables: tuple[str, ...] = TABLES) -> None:
        self.buf = bytearray()
        self.tables = tables

    def feed(self, data: bytes | memoryview) -> Iterator[tuple[int, Batch]]:
        """The batches `data` completes, in order. `data` is copied into the reader's buffer at the iteration's
        first step, so a caller that takes the batches may reuse it afterwards (the writer's kept read buffer)."""
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


# --- files from before a table gained a column -----------------------------------------------------------------

# Columns a release added to tables, with the value every tuple written before has in them: schema version 6
# gave every table `venue`, and every row collected before was collected from Binance.
ADDED_COLUMNS: dict[str, bytes] = {"venue": struct.pack(">i", 7) + b"binance"}


def upgrade_batches(batches: list[Batch], columns: dict[str, tuple[str, ...]],
                    target: dict[str, tuple[str, ...]] = COLUMNS) -> list[Batch]:
    """Batches whose tuples carry `columns` (a spool file's, or an older release's) rewritten to `target`'s
    columns: a column of ADDED_COLUMNS the file lacks is inserted with its constant, in target order.

    Pure. Raises SpoolFormatError for any other difference (a file is refused, never loaded into the wrong
    columns). Tuples are walked field by field (int16 count, then int32 length + bytes per field), so only
    a file written before the change pays for it.
    """
    out = []
    for b in batches:
        have, want = columns.get(b.table), target.get(b.table)
        if have == want:
            out.append(b)
            continue
        if have is None or want is None or [c for c in want if c not in ADDED_COLUMNS or c in have] != list(have):
            raise SpoolFormatError(f"{b.table}: the file's columns {have} are not this release's {want}")
        added = {i: ADDED_COLUMNS[c] for i, c in enumerate(want) if c not in have}
        out.append(dataclasses.replace(b, data=_insert_fields(b.data, b.rows, added, len(want))))
    return out


def _insert_fields(data: bytes, rows: int, added: dict[int, bytes], width: int) -> bytes:
    parts: list[bytes] = []
    pos = 0
    try:
        for _ in range(rows):
            (n,) = struct.unpack_from(">h", data, pos)
            pos += 2
            if n + len(added) != width:
                raise SpoolFormatError(f"a tuple of {n} fields, expected {width - len(added)}")
            parts.append(struct.pack(">h", width))
            for i in range(width):
                if i in added:
                    parts.append(added[i])
                    continue
                (size,) = struct.unpack_from(">i", data, pos)
                end = pos + 4 + max(size, 0)
                if end > len(data):
                    raise SpoolFormatError("truncated tuple")
                parts.append(data[pos:end])
                pos = end
    except struct.error as e:
        raise SpoolFormatError(f"truncated tuple: {e}") from None
    if pos != len(data):
        raise SpoolFormatError(f"{len(data) - pos} bytes after the last of {rows} tuples")
    return b"".join(parts)
