"""The checkpoint block: one shared-memory record per symbol slot, found by any process of the run.

Why shared memory (collector.runtime.checkpoints says what a checkpoint is): a record is written every
half second by every worker and read by a successor a second after a crash, with no I/O on the data
path and no dependency of a worker on the database. The supervisor creates the block with the same slot
numbers as the statistics block (collector.runtime.shm) and copies it to the `checkpoints` table.

Layout: a 64-byte header (magic, record count, record size), one word per worker (the hand-over
readiness, collector.runtime.handover.HandoverBuffer.ready), then the records. Record layout (native byte
order, 128 bytes = two cache lines, seqlock as in collector.runtime.seqlock: seq odd while writing):
    seq u64 | last trade id i64 | last kline open ms i64 | funding ms i64 | filter price f64 |
    filter time ms i64 | open interest poll ms i64 | updated ms i64 |
    next funding ms i64 | live ms i64 | funding rate: ASCII text, NUL-padded, MAX_RATE_CHARS bytes | padding
                                                                          (NONE = -2**63 for "unknown")
The magic names the layout: a block of another layout is refused, not misread.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Mapping
from multiprocessing import shared_memory

from collector.pipeline.funding_rates import MAX_RATE_CHARS
from collector.runtime.checkpoints import SymbolCheckpoint, pack, unpack
from collector.runtime.seqlock import close_shared

log = logging.getLogger(__name__)

MAGIC = b"CLCKPT03"  # 01: the 64-byte record without the funding rate; 02: without live ms
_HEADER = struct.Struct("@8sII")  # magic, records, record size
# Then one word per worker: when that worker, holding for a hand-over, saw every one of its symbols
# (ms; 0 = not holding or not ready), so the supervisor can retire the predecessor at once.
MAX_WORKERS = 64
_READY_OFF = 64
# words for workers 1..MAX_WORKERS (0 unused), rounded up so the records stay 64-byte (cache-line) aligned
_HEADER_SIZE = -(-(_READY_OFF + 8 * (MAX_WORKERS + 1)) // 64) * 64
_RECORD = struct.Struct(f"@qqqdqqqqq{MAX_RATE_CHARS}s")  # after the seq word
RECORD_SIZE = -(-(8 + _RECORD.size) // 64) * 64  # whole cache lines: a record never shares one
assert RECORD_SIZE == 128
# A seqlock reader gives up on a record whose seq stays odd this long (its writer died mid-write).
STALE_AFTER_S = 0.05


def _buffer(shm: shared_memory.SharedMemory) -> memoryview:
    buf = shm.buf
    if buf is None:  # only after close()
        raise ValueError(f"{shm.name}: shared memory already closed")
    return buf


class CheckpointBlock:
    """One record per symbol slot in shared memory. The supervisor creates it (and unlinks it on close);
    workers attach by name. A record has one writer at a time: the symbol's current owner."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self._shm, self._owner = shm, owner
        self._buf = _buffer(shm)
        magic, self.records, size = _HEADER.unpack_from(self._buf)
        if magic != MAGIC or size != RECORD_SIZE:
            shm.close()
            raise ValueError(f"{shm.name}: not a checkpoint block of this build ({magic!r})")
        self._words = self._buf[:_HEADER_SIZE + self.records * RECORD_SIZE].cast("Q")

    @classmethod
    def create(cls, records: int, name: str | None = None) -> CheckpointBlock:
        size = _HEADER_SIZE + max(records, 1) * RECORD_SIZE
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        _buffer(shm)[:size] = bytes(size)
        _HEADER.pack_into(_buffer(shm), 0, MAGIC, records, RECORD_SIZE)
        return cls(shm, owner=True)

    @classmethod
    def attach(cls, name: str) -> CheckpointBlock:
        return cls(shared_memory.SharedMemory(name=name, create=False, track=False), owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    def set_ready(self, worker: int, ms: int) -> None:
        """Worker `worker` (1-based) holds for a hand-over and receives everything (ms), or 0: not holding."""
        self._words[(_READY_OFF >> 3) + worker] = ms

    def ready_ms(self, worker: int) -> int:
        return self._words[(_READY_OFF >> 3) + worker] if 0 < worker <= MAX_WORKERS else 0

    def _off(self, index: int) -> int:
        if not 0 <= index < self.records:
            raise IndexError(f"checkpoint record {index} out of range 0..{self.records - 1}")
        return _HEADER_SIZE + index * RECORD_SIZE

    def write(self, index: int, c: SymbolCheckpoint) -> None:
        off = self._off(index)
        w = off >> 3
        seq = self._words[w]
        seq = seq + 1 if not seq & 1 else seq  # odd already: a previous writer died mid-write
        self._words[w] = seq
        _RECORD.pack_into(self._buf, off + 8, *pack(c))
        self._words[w] = seq + 1

    def read(self, index: int) -> SymbolCheckpoint | None:
        """The record, None if never written or stale (its writer died mid-write: start that symbol afresh)."""
        off = self._off(index)
        w, buf = off >> 3, self._buf
        deadline = time.monotonic() + STALE_AFTER_S
        while True:
            s1 = self._words[w]
            if s1 == 0:
                return None
            if not s1 & 1:
                values = _RECORD.unpack_from(buf, off + 8)
                if self._words[w] == s1:
                    return unpack(values)
            if time.monotonic() > deadline:
                log.warning("checkpoint record %d is stale (its writer died mid-write): not resumed", index)
                return None
            os.sched_yield()

    def read_all(self, slots: Mapping[str, int]) -> dict[str, SymbolCheckpoint]:
        out = {}
        for sym, index in slots.items():
            c = self.read(index)
            if c is not None:
                out[sym] = c
        return out

    def close(self) -> None:
        close_shared(self._shm, self._owner, self._words)
