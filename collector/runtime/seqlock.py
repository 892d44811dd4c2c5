"""The seqlock over a shared-memory record: one owner writes, any process reads, nobody waits for a lock.

Why a module of its own: the statistics block (collector.runtime.shm) and the checkpoint block
(collector.runtime.checkpoint_block, whose reader treats a stale record as absent) share this protocol
and the release of their mappings; the layout of each block is its own module's business.

Seqlock protocol (per slot): the owner makes `seq` odd, writes the slot, makes `seq` even again. A reader
copies `seq`, the slot, `seq` again, and accepts the copy only when both are equal and even. An owner that
dies between the two stores leaves `seq` odd forever: readers give up after STALE_AFTER_S and report the
slot as stale instead of spinning. The protocol relies on the 8-byte aligned seq stores being single
stores that are not reordered with the slot's body, which holds on x86-64 (TSO); the statistics block is a
same-machine diagnostic, so a torn read on weaker hardware would be detected on the next read at worst.
"""

from __future__ import annotations

import os
import time
from multiprocessing import shared_memory

# How long seq may stay odd at one value before a reader calls the slot stale. An owner holds it odd for
# one memcpy (~1 µs for a process slot, a few µs for an activity image); 50 ms also rides out the owner
# being preempted mid-write for a few scheduler time slices, yet a dead slot costs /health only 50 ms.
STALE_AFTER_S = 0.05
# A reader racing an owner that republishes back to back retries while seq moves, but not forever.
READ_GIVE_UP_S = 0.2


def close_shared(shm: shared_memory.SharedMemory, owner: bool, *views: memoryview) -> None:
    """Release a block's views and mapping; the creator (owner) also removes its name, which may be gone already.

    Shared by every block in shared memory (collector.runtime.shm, collector.runtime.checkpoint_block): a view
    still alive would make SharedMemory.close() raise BufferError.
    """
    for view in views:
        view.release()
    shm.close()
    if owner:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


class StaleSlot(Exception):
    """A slot's seq stayed odd for STALE_AFTER_S (its owner most likely died mid-write), or never settled."""


def read_consistent(buf: memoryview, words: memoryview, off: int, size: int) -> bytes | None:
    """A consistent copy of the `size` bytes at `off` of `buf`, a record whose first 8-byte word is its seq
    (`words`: buf cast to "Q"); None if never written (seq 0). Raises StaleSlot: seq stuck odd for
    STALE_AFTER_S (the owner died mid-write), or moving for READ_GIVE_UP_S."""
    end, w = off + size, off >> 3
    s1 = words[w]
    if s1 == 0:
        return None
    if not s1 & 1:  # the common case: no write in progress, one copy
        raw = bytes(buf[off:end])
        if words[w] == s1:
            return raw
    start = stuck_since = time.monotonic()
    last = s1
    while True:
        os.sched_yield()
        s1 = words[w]
        if not s1 & 1:
            raw = bytes(buf[off:end])
            if words[w] == s1:
                return raw
        now = time.monotonic()
        if s1 != last:  # the owner is making progress: busy, not dead
            last, stuck_since = s1, now
        elif s1 & 1 and now - stuck_since > STALE_AFTER_S:
            raise StaleSlot(f"seq at offset {off} stuck odd: the owner died mid-write")
        if now - start > READ_GIVE_UP_S:
            raise StaleSlot(f"seq at offset {off} never settled: the owner rewrites it back to back")
