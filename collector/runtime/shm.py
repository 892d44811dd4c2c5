"""Statistics in shared memory: every process publishes its counters; the supervisor reads them at any time.

Why shared memory: /health and /metrics must answer without asking a busy worker anything (no pipe, no
lock, no message), and a wedged child must not wedge the reader. One block is created by the supervisor;
children attach by name. Each slot has exactly one writer (its owner) and any number of readers; a
seqlock makes a reader's copy consistent without ever blocking the owner.

The seqlock protocol (a reader's copy is consistent, or the slot is reported stale) is
collector.runtime.seqlock's; the owners' seq stores are inlined in publish_activity and ProcessSlot.publish.
A process restarted into the same slot resets it (values zeroed, pid and seq updated) before its first publish.

Layout (version 4, native byte order like the activity images, every offset from the start of the block; all regions 64-byte aligned):

    header, 64 bytes at 0
    | off | type    | field                                                         |
    |-----|---------|---------------------------------------------------------------|
    |   0 | 8 bytes | magic b"CLSTATS1"                                             |
    |   8 | u32     | layout version (LAYOUT_VERSION)                               |
    |  12 | u32     | header size (64)                                              |
    |  16 | u32     | number of process slots P (slot 0 = writer, 1..P-1 = workers) |
    |  20 | u32     | number of symbol slots S                                      |
    |  24 | u32     | process slot size (PROCESS_SLOT_SIZE)                         |
    |  28 | u32     | symbol slot size                                              |
    |  32 | u32     | float64 values per process slot (VALUES_CAPACITY)             |
    |  36 | u32     | activity image size A (= activity.nbytes(slots))              |
    |  40 | u64     | offset of process slot 0 (64)                                 |
    |  48 | u64     | offset of symbol slot 0 (64 + P * process slot size)          |
    |  56 | i64     | created_at, ms since the epoch                                |

    process slot i, PROCESS_SLOT_SIZE = 32 + 8 * VALUES_CAPACITY + 4 + TEXT_CAPACITY bytes at
    64 + i * PROCESS_SLOT_SIZE
    | off | type                 | field                                                      |
    |-----|----------------------|------------------------------------------------------------|
    |   0 | u64                  | seq: 0 = never written, odd = owner writing                |
    |   8 | i64                  | pid of the owner                                           |
    |  16 | i64                  | updated_at, ms since the epoch                             |
    |  24 | u32                  | role: 0 none, 1 writer, 2 worker                           |
    |  28 | u32                  | n: number of values in use (len of the role's field list)  |
    |  32 | f64[VALUES_CAPACITY] | values; value j is named FIELDS[role][j], the rest are 0.0 |
    |  T  | u32                  | text length in bytes (T = 32 + 8 * VALUES_CAPACITY)        |
    | T+4 | u8[TEXT_CAPACITY]    | text, UTF-8: the owner's last error, verbatim (the writer: |
    |     |                      | the database's message and its fix); empty = none          |

    symbol slot k, size 40 + A rounded up to 64 bytes, at the symbol area offset + k * size
    | off | type    | field                                                              |
    |-----|---------|--------------------------------------------------------------------|
    |   0 | u64     | seq (as above)                                                     |
    |   8 | i32     | owner: worker number (process slot) that writes this slot; -1 none |
    |  12 | u32     | length of the image in use (A once written)                        |
    |  16 | i64     | updated_at, ms since the epoch                                     |
    |  24 | i64     | unused, written as 0 (was the last aggTrade id; successors now      |
    |     |         | resume from collector.runtime.checkpoints)                                  |
    |  32 | i64     | unused likewise (was: newest closed 1m kline's open time); 0        |
    |  40 | A bytes | SymbolActivity.to_bytes()                                          |

The value lists (WRITER_FIELDS, WORKER_FIELDS) come from the metric catalogue
(collector.observability.catalogue), which also derives /stats and /metrics from them. Names are
"group.key" (one labelled family, e.g. "received.trades") or a bare scalar name; publishing a name the
catalogue does not declare raises. The supervisor and its children run the same build, so the lists
always agree between owner and reader; a change of the lists that moves values bumps LAYOUT_VERSION.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from collections.abc import Mapping
from multiprocessing import shared_memory
from typing import NamedTuple

from collector.observability.catalogue import WORKER_FIELDS, WRITER_FIELDS
from collector.pipeline.activity import DEFAULT_SLOTS, nbytes
from collector.runtime.seqlock import StaleSlot, close_shared, read_consistent

MAGIC = b"CLSTATS1"
# 4: the never-set queue_depth, queue_full and outbox_bytes left the value lists (values moved).
# 5: the venue decoders' skip kinds joined the worker's rejected group (values moved).
LAYOUT_VERSION = 5
# Room for the value lists to grow without a layout change: the catalogue's lists use ~45..60.
VALUES_CAPACITY = 128
# Workers the block can hold: well above any sensible worker count for one machine's cores.
MAX_PROCESS_SLOTS = 65  # writer + 64 workers
# Cache-line alignment: slots of different owners never share a line (no false sharing between processes).
_ALIGN = 64
ROLE_NONE, ROLE_WRITER, ROLE_WORKER = 0, 1, 2
WRITER_SLOT = 0

# The seq word is stored and loaded only through a memoryview cast to "Q" (one aligned 8-byte memcpy, i.e.
# a single store): struct.pack_into zeroes its target before packing, so writing seq with struct would
# briefly show 0 ("never written") or a torn value to a reader. The headers' other fields are packed with
# struct from offset 8 on, inside the odd-seq window. Native byte order, like the activity images.
_HEADER = struct.Struct("@8sIIIIIIIIQQq")
_PROC_HEAD = struct.Struct("@QqqII")  # for readers, unpacking a private copy
_PROC_META = struct.Struct("@qqII")  # pid, updated_at, role, n: packed at offset 8 by the owner
_SYM_HEAD = struct.Struct("@QiIqqq")
_SYM_META = struct.Struct("@iIqqq")  # owner, length, updated_at, last trade id, last kline: at offset 8
# Bytes of text per process slot: a server error message with its fix (dbsetup.MESSAGE_MAX_CHARS, 400
# characters) fits; longer text is cut at a character boundary. 476 makes a slot 1536 bytes, a whole number
# of cache lines, so slots of different owners never share one.
TEXT_CAPACITY = 476
_TEXT_LEN = struct.Struct("@I")
PROCESS_SLOT_SIZE = _PROC_HEAD.size + 8 * VALUES_CAPACITY + _TEXT_LEN.size + TEXT_CAPACITY

FIELDS: dict[int, tuple[str, ...]] = {ROLE_WRITER: WRITER_FIELDS, ROLE_WORKER: WORKER_FIELDS}
assert max(map(len, FIELDS.values())) <= VALUES_CAPACITY


def role_of_slot(slot: int) -> int:
    return ROLE_WRITER if slot == WRITER_SLOT else ROLE_WORKER


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class ProcessReading(NamedTuple):
    """One consistent copy of a process slot, or a stale marker (values empty) when its owner died mid-write."""

    pid: int
    role: int
    updated_ms: int
    values: dict[str, float]
    stale: bool = False
    text: str = ""  # the owner's last error (see the layout), "" when none


class ActivityReading(NamedTuple):
    owner: int
    updated_ms: int
    data: bytes
    last_trade_id: int = 0  # where a successor resumes gap detection (0 = unknown)
    last_kline_open_ms: int = 0


class UnknownField(LookupError):
    """A process published a field the metric catalogue does not declare for its role."""

    def __init__(self, name: str, role: int) -> None:
        super().__init__(f"{name!r} is not a {'writer' if role == ROLE_WRITER else 'worker'} field of the metric "
                         "catalogue (collector.observability.catalogue)")


class StatsBlock:
    """The shared-memory block: header, process slots, symbol slots (layout in the module docstring)."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self._shm = shm
        self._owner = owner
        if shm.buf is None:
            raise ValueError(f"{shm.name}: shared memory is closed")
        self.buf: memoryview = shm.buf
        (magic, version, header_size, process_slots, symbol_slots, proc_size, symbol_slot_size,
         values_cap, activity_nbytes, process_offset, symbol_offset, created_ms) = _HEADER.unpack_from(self.buf)
        self.process_slots: int = process_slots
        self.symbol_slots: int = symbol_slots
        self.symbol_slot_size: int = symbol_slot_size
        self.activity_nbytes: int = activity_nbytes
        self.process_offset: int = process_offset
        self.symbol_offset: int = symbol_offset
        self.created_ms: int = created_ms
        if magic != MAGIC or version != LAYOUT_VERSION:
            shm.close()
            raise ValueError(f"{shm.name}: not a stats block of layout {LAYOUT_VERSION} ({magic!r} v{version})")
        if proc_size != PROCESS_SLOT_SIZE or values_cap != VALUES_CAPACITY or header_size != _HEADER.size:
            shm.close()
            raise ValueError(f"{shm.name}: slot sizes differ from this build's layout")
        # 8-byte words over the whole block, for the seq stores and loads (see _HEADER's comment).
        self._words = self.buf[:len(self.buf) & ~7].cast("Q")

    @classmethod
    def create(cls, process_slots: int, symbol_slots: int, activity_slots: int = DEFAULT_SLOTS,
               name: str | None = None) -> StatsBlock:
        """A new zeroed block (the supervisor's; close() unlinks it). process_slots counts the writer's slot 0."""
        if not 1 <= process_slots <= MAX_PROCESS_SLOTS:
            raise ValueError(f"process_slots must be 1..{MAX_PROCESS_SLOTS}")
        if symbol_slots < 0:
            raise ValueError("symbol_slots must be >= 0")
        act = nbytes(activity_slots)
        sym_size = _aligned(_SYM_HEAD.size + act)
        proc_off = _aligned(_HEADER.size)
        sym_off = proc_off + _aligned(process_slots * PROCESS_SLOT_SIZE)
        size = sym_off + symbol_slots * sym_size
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        buf = shm.buf
        assert buf is not None  # open: just created
        if os.name != "posix":  # POSIX zero-fills a new shm object (ftruncate): writing zeros would make
            buf[:size] = bytes(size)  # every page resident, ~12 MB of listing room that may never be used
        _HEADER.pack_into(buf, 0, MAGIC, LAYOUT_VERSION, _HEADER.size, process_slots, symbol_slots,
                          PROCESS_SLOT_SIZE, sym_size, VALUES_CAPACITY, act, proc_off, sym_off, _now_ms())
        for k in range(symbol_slots):
            _SYM_HEAD.pack_into(buf, sym_off + k * sym_size, 0, -1, 0, 0, 0, 0)
        return cls(shm, owner=True)

    @classmethod
    def attach(cls, name: str) -> StatsBlock:
        """Open an existing block by name (a child, or a reader)."""
        shm = shared_memory.SharedMemory(name=name, create=False, track=False)
        return cls(shm, owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    @property
    def size(self) -> int:
        return self._shm.size

    def close(self) -> None:
        """Release this process's mapping; the creator also removes the block's name."""
        del self.buf  # no view of the mapping may outlive it (SharedMemory.close() would raise BufferError)
        close_shared(self._shm, self._owner, self._words)

    def __enter__(self) -> StatsBlock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- process slots ------------------------------------------------------------------------------------

    def _proc_off(self, slot: int) -> int:
        if not 0 <= slot < self.process_slots:
            raise IndexError(f"process slot {slot} out of range 0..{self.process_slots - 1}")
        return self.process_offset + slot * PROCESS_SLOT_SIZE

    def process_slot(self, slot: int, pid: int | None = None) -> ProcessSlot:
        """Take ownership of a process slot (resets it); only the owner may publish into it afterwards."""
        return ProcessSlot(self, slot, os.getpid() if pid is None else pid)

    def read(self, slot: int) -> ProcessReading | None:
        """A consistent copy of a process slot; None if never written; stale=True if its owner died mid-write."""
        off = self._proc_off(slot)
        try:
            raw = read_consistent(self.buf, self._words, off, PROCESS_SLOT_SIZE)
        except StaleSlot:
            _, pid, updated, role, _ = _PROC_HEAD.unpack_from(self.buf, off)
            return ProcessReading(pid, role, updated, {}, stale=True)
        if raw is None:
            return None
        _, pid, updated, role, n = _PROC_HEAD.unpack_from(raw)
        names = FIELDS.get(role, ())
        n = min(n, len(names))
        vals = struct.unpack_from(f"@{n}d", raw, _PROC_HEAD.size)
        text_at = _PROC_HEAD.size + 8 * VALUES_CAPACITY
        (length,) = _TEXT_LEN.unpack_from(raw, text_at)
        start = text_at + _TEXT_LEN.size
        text = raw[start:start + min(length, TEXT_CAPACITY)].decode("utf-8", "replace")
        return ProcessReading(pid, role, updated, dict(zip(names[:n], vals, strict=True)), text=text)

    # --- symbol slots -------------------------------------------------------------------------------------

    def _sym_off(self, index: int) -> int:
        if not 0 <= index < self.symbol_slots:
            raise IndexError(f"symbol slot {index} out of range 0..{self.symbol_slots - 1}")
        return self.symbol_offset + index * self.symbol_slot_size

    def publish_activity(self, index: int, owner: int, data: bytes | bytearray | memoryview,
                         now_ms: int | None = None, last_trade_id: int = 0, last_kline_open_ms: int = 0) -> None:
        """Write one symbol's SymbolActivity.to_bytes() into its slot; only the slot's owner calls this."""
        if len(data) != self.activity_nbytes:
            raise ValueError(f"activity image is {len(data)} bytes, the block holds {self.activity_nbytes}")
        off = self._sym_off(index)
        buf, words, w = self.buf, self._words, off >> 3
        seq = words[w]
        seq = seq + 1 if not seq & 1 else seq  # odd already: a previous owner died mid-write
        words[w] = seq
        body = off + _SYM_HEAD.size
        buf[body:body + len(data)] = data
        _SYM_META.pack_into(buf, off + 8, owner, len(data), _now_ms() if now_ms is None else now_ms,
                            last_trade_id, last_kline_open_ms)
        words[w] = seq + 1

    def release_symbol_pages(self, first: int, last: int) -> None:
        """Unmap symbol slots first..last (inclusive) from this process's view: whole pages inside them only;
        the block keeps the data, a later read maps it again. Linux only; elsewhere a no-op.

        Why: the supervisor reads every symbol slot once per tier computation (at the end of the warm-up,
        then daily); left mapped, those pages (~9 MB at 496 symbols) stay in its RSS, so the PSS of the
        workers that write them is split with an idle reader: a 4-5 MB step in the supervisor's PSS at
        the warm-up's end. madvise(MADV_DONTNEED) on a shared mapping drops this process's page table
        entries only, never the shared data. Only the slots read: the listing room's slot headers, which
        the supervisor wrote at create() and no worker maps, stay in its PSS where they are counted."""
        dontneed = getattr(mmap, "MADV_DONTNEED", None)
        if dontneed is None or not hasattr(os, "sysconf") or last < first:
            return
        page = os.sysconf("SC_PAGE_SIZE")
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))  # the temporary export ends here
        start = (base + self._sym_off(first) + page - 1) // page * page
        end = (base + self._sym_off(last) + self.symbol_slot_size) // page * page
        if end <= start:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.madvise(start, end - start, dontneed) != 0:
            raise OSError(ctypes.get_errno(), f"madvise of the stats block {self.name}")

    def read_activity(self, index: int) -> ActivityReading | None:
        """(owner, updated_ms, image) of a symbol slot, None if never written; raises StaleSlot."""
        off = self._sym_off(index)
        raw = read_consistent(self.buf, self._words, off, _SYM_HEAD.size + self.activity_nbytes)
        if raw is None:
            return None
        _, owner, length, updated, last_id, last_kline = _SYM_HEAD.unpack_from(raw)
        return ActivityReading(owner, updated, raw[_SYM_HEAD.size:_SYM_HEAD.size + length], last_id, last_kline)


class ProcessSlot:
    """The owner's handle on one process slot: a local value array plus precomputed offsets.

    Counters are set in `values` (by index, or by name via set()/update()) at whatever rate the owner
    likes; publish() copies the whole array into shared memory in one memcpy between two seq stores,
    so a publish costs the same few µs whatever the number of fields.
    """

    __slots__ = ("block", "slot", "pid", "role", "fields", "index", "values", "_off", "_body", "_seq", "_pack",
                 "_text", "_text_dirty")

    def __init__(self, block: StatsBlock, slot: int, pid: int, reset: bool = True) -> None:
        self.block = block
        self.slot = slot
        self.pid = pid
        self.role = role_of_slot(slot)
        self.fields = FIELDS[self.role]
        self.index = {f: i for i, f in enumerate(self.fields)}
        self.values = [0.0] * len(self.fields)
        self._pack = struct.Struct(f"@{len(self.fields)}d")
        self._off = block._proc_off(slot)
        self._body = self._off + _PROC_HEAD.size
        seq = block._words[self._off >> 3]
        self._seq = seq + 1 if seq & 1 else seq  # even: resume after a predecessor, even one that died mid-write
        self._text = b""
        self._text_dirty = reset  # a reset clears a predecessor's text too
        if reset:  # a restarted process must not show its predecessor's counters as its own
            self.publish()

    def set(self, name: str, value: float) -> None:
        """Set one field; a name the catalogue does not declare for this role raises UnknownField."""
        i = self.index.get(name)
        if i is None:
            raise UnknownField(name, self.role)
        self.values[i] = value

    def set_text(self, text: str) -> None:
        """The slot's text (published with the values): cut to TEXT_CAPACITY bytes at a character boundary."""
        raw = text.encode("utf-8")[:TEXT_CAPACITY]
        raw = raw.decode("utf-8", "ignore").encode("utf-8")
        if raw != self._text:
            self._text, self._text_dirty = raw, True

    def update(self, values: Mapping[str, float], prefix: str = "") -> None:
        """Set prefix+name for every item; a name the catalogue does not declare raises UnknownField (a counter
        that is not in the catalogue would otherwise vanish from /stats and /metrics without a trace)."""
        index, vals = self.index, self.values
        for k, v in values.items():
            i = index.get(prefix + k)
            if i is None:
                raise UnknownField(prefix + k, self.role)
            vals[i] = v

    def publish(self, now_ms: int | None = None) -> None:
        """Copy the local values into the slot (seqlock-protected, lock-free, never blocks)."""
        block = self.block
        buf, words, w = block.buf, block._words, self._off >> 3
        seq = self._seq + 1
        words[w] = seq
        self._pack.pack_into(buf, self._body, *self.values)
        if self._text_dirty:  # rare (a new error): the text is copied only when it changed
            at = self._body + 8 * VALUES_CAPACITY
            _TEXT_LEN.pack_into(buf, at, len(self._text))
            buf[at + _TEXT_LEN.size:at + _TEXT_LEN.size + len(self._text)] = self._text
            self._text_dirty = False
        _PROC_META.pack_into(buf, self._off + 8, self.pid, _now_ms() if now_ms is None else now_ms, self.role,
                             len(self.values))
        self._seq = seq = seq + 1
        words[w] = seq
