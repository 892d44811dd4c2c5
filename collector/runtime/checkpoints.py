"""Checkpoints: the per-symbol state a worker's successor needs to continue exactly where it left off.

Every stateful step that decides what is stored can say what it needs to continue (its snapshot) and
take it back (restore):

| step                                  | state                                  | decides                        |
|---------------------------------------|----------------------------------------|--------------------------------|
| gap detection (`Pipeline`)            | last aggTrade id                       | which ids are a gap to repair  |
| candle-hole detection (`Pipeline`)    | open time of the last closed 1m kline  | which minutes are a hole       |
| funding gate (`MinInterval`)          | start of the last accepted minute      | at most one row per minute     |
| trade filter (`SymbolFilter`)         | last kept price and time               | price_change / time_interval   |
| open-interest poller (`PollPositions`)| time of the last poll                  | when the symbol is due again   |

A successor (after kill -9, a crash, a SIGHUP replacement or re-sharding) restores them per symbol,
whichever worker owned the symbol before. The last trade id and last closed kline are also where
gap and hole detection start from: `SymbolCheckpoint.last_trade_id` / `last_kline_open_ms`.

What may be resumed is what the writer acknowledged, as bytewax commits a snapshot together with the
output it produced: the worker flushes its batches, records the snapshot with the link's sequence
number, and publishes it only once the writer has acknowledged every batch up to that number
(`AckedCheckpoints`). Rows that died unacknowledged with the worker are therefore re-derived by the
successor (the ids after the checkpoint are a gap, re-filtered from the checkpoint's filter state, so
they come out the same; duplicates are dropped by the tables' keys).

One exception, the funding gate: resuming it from the acknowledged state would let a successor store a
second row for a minute whose batch the writer had committed but not yet acknowledged (kill -9 just
after a minute boundary). So the gate's state is published *before* each funding batch is handed to
the writer (`Checkpointer.before_send`): a successor never doubles a minute; it can only miss one, if
the process dies with that batch half written to the socket.

Where: a shared-memory block (`CheckpointBlock`) created by the supervisor with one 64-byte record per
symbol slot (the same slot numbers as the statistics block), so any process of this run finds a
symbol's checkpoint by symbol, whatever its shard. Shared memory rather than a file or a table because
it is written every half second by every worker and read by a successor a second after a crash: no
I/O on the data path and no dependency of a worker on the database. The supervisor copies the block
into the `checkpoints` table every CHECKPOINT_SAVE_S and after the workers have drained at shutdown,
and loads it back at start, so a full restart (SIGTERM, then start) resumes too.

Hand-over (SIGHUP replacement, re-sharding): the successor starts while its predecessor still collects
(the market is never unwatched), but holds every event it receives (`HandoverBuffer`) until the
predecessor has drained and exited; it then restores the predecessor's final checkpoint and replays
what it held, skipping trades the predecessor already processed. One process's decisions, no fork.

Block: a 64-byte header (magic, record count, record size), one word per worker (the hand-over
readiness, HandoverBuffer.ready), then the records. Record layout (native byte order, 64 bytes, seqlock as in collector.runtime.shm: seq odd while writing):
    seq u64 | last trade id i64 | last kline open ms i64 | funding ms i64 | filter price f64 |
    filter time ms i64 | open interest poll ms i64 | updated ms i64       (NONE = -2**63 for "unknown")
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import psycopg

    from collector.feed.open_interest import PollPositions
    from collector.feed.wire import AggTrade, ForceOrder, Kline, MarkPrice, OpenInterest
    from collector.pipeline.encode import Batch
    from collector.pipeline.router import Pipeline

log = logging.getLogger(__name__)

MAGIC = b"CLCKPT01"
_HEADER = struct.Struct("@8sII")  # magic, records, record size
# Then one word per worker: when that worker, holding for a hand-over, saw every one of its symbols
# (ms; 0 = not holding or not ready), so the supervisor can retire the predecessor at once.
MAX_WORKERS = 64
_READY_OFF = 64
# words for workers 1..MAX_WORKERS (0 unused), rounded up so the records stay 64-byte (cache-line) aligned
_HEADER_SIZE = -(-(_READY_OFF + 8 * (MAX_WORKERS + 1)) // 64) * 64
_RECORD = struct.Struct("@qqqdqqq")  # after the seq word
RECORD_SIZE = 8 + _RECORD.size
assert RECORD_SIZE == 64
NONE = -(2**63)
# How often a worker records a snapshot (flushing its batches first): the age of what a successor
# resumes is this plus the writer's acknowledgement (~0.3 s), so the REST repair after a crash covers
# about a second of trades. A snapshot of 62 symbols costs ~50 µs.
SNAPSHOT_EVERY_S = 0.5
# Supervisor: how often the block is copied to the database (a full restart after a power cut resumes
# from at most this old a state; after SIGTERM the copy made once the workers have drained is exact).
CHECKPOINT_SAVE_S = 60.0
# After a full restart, trade ids and klines older than this are not resumed: the downtime would be one
# gap per symbol of hours of trades, more than the REST budget should be spent on; a start from live
# data (as on a first run) is the better trade. Funding, filter and poll positions are always resumed.
RESUME_IDS_MAX_AGE_MS = 3_600_000
# A successor holding events for its predecessor's hand-over stops holding (and resumes from whatever
# checkpoint is there, as after a crash) past this many events or seconds: memory stays bounded even if
# the predecessor takes long to drain. 200,000 events are ~40 MB; 60 s is far beyond a normal drain.
HANDOVER_MAX_EVENTS = 200_000
HANDOVER_MAX_S = 60.0
# A holding successor is ready (its predecessor may stop) once every one of its symbols has sent an
# event (mark prices come every 1-3 s for all of them), or this long after its first event, whichever
# comes first: a symbol that is silent for that long has nothing to hand over.
HANDOVER_SETTLE_S = 5.0
# Snapshots waiting for acknowledgement at most: a minute of them. Beyond (the writer not acknowledging,
# e.g. a full spool) the newest is replaced instead of appended, which only delays what is published.
MAX_WAITING = 120
# A seqlock reader gives up on a record whose seq stays odd this long (its writer died mid-write).
STALE_AFTER_S = 0.05


@dataclass(frozen=True, slots=True)
class SymbolCheckpoint:
    """What one symbol's steps need to continue; None (nan for the price) = nothing to resume."""

    last_trade_id: int | None = None  # gap detection starts after it (collector.feed.backfill)
    last_kline_open_ms: int | None = None  # candle-hole detection starts after it
    funding_ms: int | None = None  # start of the funding gate's last accepted bucket
    filter_price: float = math.nan  # trade filter: last kept price ...
    filter_ts_ms: int | None = None  # ... and time
    oi_polled_ms: int | None = None  # open interest: when the last stored snapshot was polled
    updated_ms: int = 0


# --- snapshot / restore of the pipeline's steps (pure) ---------------------------------------------------


def snapshot(pipeline: Pipeline, now_ms: int = 0) -> dict[str, SymbolCheckpoint]:
    """Every symbol's checkpoint as of now. Flush the pipeline's batches first (see module docstring)."""
    tf, gate = pipeline.trade_filter, pipeline.funding_gate
    out = {}
    for sym in pipeline.symbols:
        price, ts = tf.symbol(sym).snapshot() if sym in tf else (math.nan, None)
        out[sym] = SymbolCheckpoint(pipeline.last_trade_id.get(sym), pipeline.last_kline_open.get(sym),
                                    gate.last_accepted_ms(sym), price, ts, pipeline.last_oi_poll.get(sym), now_ms)
    return out


def restore(pipeline: Pipeline, checkpoints: Mapping[str, SymbolCheckpoint],
            positions: PollPositions | None = None) -> int:
    """Put checkpoints back into the pipeline's steps (and the poll schedule); returns symbols restored.

    Only the pipeline's own symbols are taken (after re-sharding a checkpoint may belong to a symbol
    this worker no longer has).
    """
    n = 0
    for sym, c in checkpoints.items():
        if sym not in pipeline.symbols:
            continue
        if c.last_trade_id is not None:
            pipeline.last_trade_id[sym] = c.last_trade_id
        if c.last_kline_open_ms is not None:
            pipeline.last_kline_open[sym] = c.last_kline_open_ms
        if c.funding_ms is not None:
            pipeline.funding_gate.restore(sym, c.funding_ms)
        if c.filter_ts_ms is not None or not math.isnan(c.filter_price):
            pipeline.trade_filter.symbol(sym).restore(c.filter_price, c.filter_ts_ms)
        if c.oi_polled_ms is not None:
            pipeline.last_oi_poll[sym] = c.oi_polled_ms
            if positions is not None:
                positions.restore(sym, c.oi_polled_ms)
        n += 1
    return n


def funding_handed(pipeline: Pipeline) -> dict[str, int]:
    """The funding gate as of now: with the builders just emitted, exactly the minutes handed over."""
    gate = pipeline.funding_gate
    return {s: ms for s in pipeline.symbols if (ms := gate.last_accepted_ms(s)) is not None}


class AckedCheckpoints:
    """Snapshots waiting for the writer's acknowledgement; `durable` is the newest acknowledged one.

    record(seq, snap) after emitting every batch up to `seq`; promote(acked_through) with the link's
    longest acknowledged prefix (collector.transport.link.WriterLink.acked_through).
    """

    def __init__(self) -> None:
        self._waiting: deque[tuple[int, dict[str, SymbolCheckpoint]]] = deque()
        self.durable: dict[str, SymbolCheckpoint] = {}

    def record(self, seq: int, snap: dict[str, SymbolCheckpoint]) -> None:
        """A snapshot covering the batches up to `seq`. Replacing the newest waiting one (same seq: no
        batch since; or too many waiting) is safe: its replacement becomes durable no earlier."""
        if self._waiting and (self._waiting[-1][0] == seq or len(self._waiting) >= MAX_WAITING):
            self._waiting[-1] = (seq, snap)
        else:
            self._waiting.append((seq, snap))

    def __len__(self) -> int:
        return len(self._waiting)

    def promote(self, acked_through: int) -> bool:
        """True when `durable` moved on."""
        newest = None
        while self._waiting and self._waiting[0][0] <= acked_through:
            newest = self._waiting.popleft()[1]
        if newest is None:
            return False
        self.durable = newest
        return True


# --- the shared-memory block ---------------------------------------------------------------------------------


def _pack(c: SymbolCheckpoint) -> tuple:
    def v(x: int | None) -> int:
        return NONE if x is None else x
    return (v(c.last_trade_id), v(c.last_kline_open_ms), v(c.funding_ms), c.filter_price, v(c.filter_ts_ms),
            v(c.oi_polled_ms), c.updated_ms)


def _unpack(values: tuple) -> SymbolCheckpoint:
    def v(x: int) -> int | None:
        return None if x == NONE else x
    tid, kline, funding, price, ts, oi, updated = values
    return SymbolCheckpoint(v(tid), v(kline), v(funding), price, v(ts), v(oi), updated)


class CheckpointBlock:
    """One record per symbol slot in shared memory. The supervisor creates it (and unlinks it on close);
    workers attach by name. A record has one writer at a time: the symbol's current owner."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self._shm, self._owner = shm, owner
        magic, self.records, size = _HEADER.unpack_from(shm.buf)
        if magic != MAGIC or size != RECORD_SIZE:
            shm.close()
            raise ValueError(f"{shm.name}: not a checkpoint block of this build ({magic!r})")
        self._words = shm.buf[:_HEADER_SIZE + self.records * RECORD_SIZE].cast("Q")

    @classmethod
    def create(cls, records: int, name: str | None = None) -> CheckpointBlock:
        size = _HEADER_SIZE + max(records, 1) * RECORD_SIZE
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        shm.buf[:size] = bytes(size)
        _HEADER.pack_into(shm.buf, 0, MAGIC, records, RECORD_SIZE)
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
        _RECORD.pack_into(self._shm.buf, off + 8, *_pack(c))
        self._words[w] = seq + 1

    def read(self, index: int) -> SymbolCheckpoint | None:
        """The record, None if never written or stale (its writer died mid-write: start that symbol afresh)."""
        off = self._off(index)
        w, buf = off >> 3, self._shm.buf
        deadline = time.monotonic() + STALE_AFTER_S
        while True:
            s1 = self._words[w]
            if s1 == 0:
                return None
            if not s1 & 1:
                values = _RECORD.unpack_from(buf, off + 8)
                if self._words[w] == s1:
                    return _unpack(values)
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
        self._words.release()
        self._shm.close()
        if self._owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass


# --- the worker's side ---------------------------------------------------------------------------------------


class _Link(Protocol):
    @property
    def last_seq(self) -> int: ...
    @property
    def acked_through(self) -> int: ...


class Checkpointer:
    """A worker's checkpoints: recorded every SNAPSHOT_EVERY_S, published once acknowledged.

    `tick(now)` from the worker's housekeeping timer; `before_send(batch)` from the pipeline's emit,
    before the batch reaches the link; `final()` once the writer has acknowledged everything at exit.
    """

    def __init__(self, block: CheckpointBlock, slots: Mapping[str, int], pipeline: Pipeline, link: _Link,
                 clock: Callable[[], float] = time.time) -> None:
        self.block, self.slots, self.pipeline, self.link, self.clock = block, dict(slots), pipeline, link, clock
        self.acked = AckedCheckpoints()
        self.published: dict[str, SymbolCheckpoint] = {}
        self.active = True  # False while a successor holds for the hand-over (it must not write yet)
        self._next = 0.0

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if not self.active:
            return
        if now >= self._next:
            self._next = now + SNAPSHOT_EVERY_S
            self.pipeline.flush_all()
            self.acked.record(self.link.last_seq, snapshot(self.pipeline, int(now * 1000)))
        if self.acked.promote(self.link.acked_through):
            self._publish(self.acked.durable)

    @property
    def next_due(self) -> float:
        """When tick() next has work (the clock's epoch seconds): the worker's housekeeping sleeps until then."""
        return self._next if self.active else float("inf")

    def before_send(self, batch: Batch) -> None:
        """Publish the funding minutes in `batch` before the writer can commit them (module docstring)."""
        if batch.table != "funding" or not self.active:
            return
        handed = funding_handed(self.pipeline)
        changed = {}
        for sym, ms in handed.items():
            cur = self.published.get(sym, SymbolCheckpoint())
            if cur.funding_ms is None or ms > cur.funding_ms:
                changed[sym] = replace(cur, funding_ms=ms)
        self._write(changed)

    def final(self) -> None:
        """At exit, with everything acknowledged: the exact state, for a successor or the next start."""
        if not self.active:
            return
        self.pipeline.flush_all()
        if self.link.acked_through == self.link.last_seq:
            self.acked.record(self.link.last_seq, snapshot(self.pipeline, int(self.clock() * 1000)))
        if self.acked.promote(self.link.acked_through):
            self._publish(self.acked.durable)

    def _publish(self, snap: Mapping[str, SymbolCheckpoint]) -> None:
        out = {}
        for sym, c in snap.items():
            prev = self.published.get(sym)
            if prev is not None and prev.funding_ms is not None and (c.funding_ms is None or
                                                                   prev.funding_ms > c.funding_ms):
                c = replace(c, funding_ms=prev.funding_ms)  # handed over already: never step back
            out[sym] = c
        self._write(out)

    def _write(self, records: Mapping[str, SymbolCheckpoint]) -> None:
        for sym, c in records.items():
            index = self.slots.get(sym)
            if index is not None:
                self.block.write(index, c)
            self.published[sym] = c

    def resume(self, positions: PollPositions | None = None, max_ids_age_ms: int | None = None) -> int:
        """Restore what the block holds for this worker's symbols; returns how many were resumed.

        `max_ids_age_ms`: trade ids and klines of records older than this are left out (a full restart
        after a long stop, see RESUME_IDS_MAX_AGE_MS).
        """
        found = self.block.read_all(self.slots)
        if max_ids_age_ms is not None:
            now_ms = int(self.clock() * 1000)
            found = {s: c if now_ms - c.updated_ms <= max_ids_age_ms else
                     replace(c, last_trade_id=None, last_kline_open_ms=None) for s, c in found.items()}
        self.published = dict(found)
        return restore(self.pipeline, found, positions)


# --- the hand-over -------------------------------------------------------------------------------------------


class HandoverBuffer:
    """A successor's event sink while its predecessor still collects: holds everything, in order.

    `release(pipeline)` replays the held events into the pipeline once it has been restored from the
    predecessor's final checkpoint; trades at or below the restored last id were processed by the
    predecessor and are skipped (not counted as rejected: nothing was wrong with them).
    """

    def __init__(self, symbols: Iterable[str] = (), clock: Callable[[], float] = time.monotonic) -> None:
        self.events: list[tuple[str, Any, float]] = []
        self.clock = clock
        self.started = clock()
        self.unseen = set(symbols)  # symbols that have not sent an event yet
        self.first_event: float | None = None

    def _seen(self, symbol: str) -> None:
        self.unseen.discard(symbol)
        if self.first_event is None:
            self.first_event = self.clock()

    def on_trade(self, t: AggTrade, receipt: float) -> None:
        self.events.append(("on_trade", t, receipt))
        self._seen(t.s)

    def on_mark_price(self, m: MarkPrice, receipt: float) -> None:
        self.events.append(("on_mark_price", m, receipt))
        self._seen(m.s)

    def on_liquidation(self, f: ForceOrder, receipt: float) -> None:
        self.events.append(("on_liquidation", f, receipt))

    def on_kline(self, k: Kline, receipt: float) -> None:
        self.events.append(("on_kline", k, receipt))
        self._seen(k.s)

    def on_open_interest(self, oi: OpenInterest, receipt: float) -> None:
        self.events.append(("on_open_interest", oi, receipt))

    def on_bad_frame(self, kind: str) -> None:
        self.events.append(("on_bad_frame", kind, 0.0))

    def ready(self) -> bool:
        """Receiving everything the predecessor does: it can stop now (see HANDOVER_SETTLE_S)."""
        return self.first_event is not None and (
            not self.unseen or self.clock() - self.first_event >= HANDOVER_SETTLE_S)

    def overflowing(self) -> bool:
        """Held too much or too long: stop waiting for the predecessor."""
        return len(self.events) > HANDOVER_MAX_EVENTS or self.clock() - self.started > HANDOVER_MAX_S

    def release(self, pipeline: Pipeline) -> int:
        """Replay into `pipeline`; returns how many trades were skipped as already processed."""
        skipped = 0
        last_ids = pipeline.last_trade_id
        for name, ev, receipt in self.events:
            if name == "on_trade":
                last = last_ids.get(ev.s)
                if last is not None and ev.a <= last:
                    skipped += 1
                    continue
            if name == "on_bad_frame":
                pipeline.on_bad_frame(ev)
            else:
                getattr(pipeline, name)(ev, receipt)
        self.events.clear()
        return skipped


# --- the database copy (full restarts) ---------------------------------------------------------------------


def save(conn: psycopg.Connection, checkpoints: Mapping[str, SymbolCheckpoint]) -> int:
    """Upsert every symbol's checkpoint into the `checkpoints` table (collector.db.schema, version 2)."""
    rows = [(s, *_pack(c)) for s, c in checkpoints.items() if c.updated_ms]
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO checkpoints (symbol, last_trade_id, last_kline_open_ms, funding_ms, filter_price,
                                        filter_ts_ms, oi_polled_ms, updated_ms)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (symbol) DO UPDATE SET last_trade_id = EXCLUDED.last_trade_id,
                   last_kline_open_ms = EXCLUDED.last_kline_open_ms, funding_ms = EXCLUDED.funding_ms,
                   filter_price = EXCLUDED.filter_price, filter_ts_ms = EXCLUDED.filter_ts_ms,
                   oi_polled_ms = EXCLUDED.oi_polled_ms, updated_ms = EXCLUDED.updated_ms
               WHERE checkpoints.updated_ms <= EXCLUDED.updated_ms""",
            [tuple(None if v == NONE else v for v in r) for r in rows])
    return len(rows)


def load(conn: psycopg.Connection, symbols: Iterable[str] | None = None) -> dict[str, SymbolCheckpoint]:
    """The stored checkpoints (of `symbols`, or all)."""
    rows = conn.execute("""SELECT symbol, last_trade_id, last_kline_open_ms, funding_ms, filter_price,
                                  filter_ts_ms, oi_polled_ms, updated_ms FROM checkpoints""").fetchall()
    wanted = None if symbols is None else set(symbols)
    return {r[0]: SymbolCheckpoint(r[1], r[2], r[3], math.nan if r[4] is None else r[4], r[5], r[6], r[7])
            for r in rows if wanted is None or r[0] in wanted}
