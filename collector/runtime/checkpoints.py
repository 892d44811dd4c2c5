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
| funding rate (`FundingRates`, OKX)    | last rate sent and its settlement time | the rate of a rate-less row    |
| liquidation holes (`Pipeline`)        | exchange time the streams were live to | which times are a `liquidations` gap |

A successor (after kill -9, a crash, a SIGHUP replacement or re-sharding) restores them per symbol,
whichever worker owned the symbol before. The last trade id and last closed kline are also where
gap and hole detection start from: `SymbolCheckpoint.last_trade_id` / `last_kline_open_ms`.

What may be resumed is what the writer acknowledged, as bytewax commits a snapshot together with the
output it produced: the worker flushes its batches, records the snapshot with the link's sequence
number, and publishes it only once the writer has acknowledged every batch up to that number
(`AckedCheckpoints`). Rows that died unacknowledged with the worker are therefore re-derived by the
successor (the ids after the checkpoint are a gap, re-filtered from the checkpoint's filter state, so
they come out the same; duplicates are dropped by the tables' keys).

A symbol's first position of a process is the other way round: when its first trade or closed kline
arrives with nothing to continue from (a fresh start), the position just before it is published at once
(`Checkpointer.started`), before any of its rows can reach the writer; the first acknowledged snapshot
only comes ~2 s later, and a successor killed in before it would have had no position, so the rows it
never received were lost without a gap. From that start a successor repairs them like any other gap.

One exception, the funding gate: resuming it from the acknowledged state would let a successor store a
second row for a minute whose batch the writer had committed but not yet acknowledged (kill -9 just
after a minute boundary). So the gate's state is published *before* each funding batch is handed to
the writer (`Checkpointer.before_send`): a successor never doubles a minute; it can only miss one, if
the process dies with that batch half written to the socket.

Another, the funding rate (venues that send it apart from the mark price, OKX): it decides no row's
existence, only what a row carries, and it is the newest knowledge rather than a position in a stream, so
it is written to the block the moment it changes (`Checkpointer.rate_changed`), and an acknowledged
snapshot never takes it back to an older one. Waiting for the acknowledgement would leave a successor
(kill -9 just after a push) with the previous rate for the rows until the venue's next push.

Where: a shared-memory block (`CheckpointBlock`) created by the supervisor with one 128-byte record per
symbol slot (the same slot numbers as the statistics block), so any process of this run finds a
symbol's checkpoint by symbol, whatever its shard. Shared memory rather than a file or a table because
it is written every SNAPSHOT_EVERY_S by every worker and read by a successor a second after a crash: no
I/O on the data path and no dependency of a worker on the database. The supervisor copies the block
into the `checkpoints` table every CHECKPOINT_SAVE_S and after the workers have drained at shutdown,
and loads it back at start, so a full restart (SIGTERM, then start) resumes too; a funding rate only while
it is current (`load`: up to RATE_STALE_MS past the settlement it was sent for, the rule every row's rate
follows, collector.pipeline.funding_rates), the period's rate being all it is good for.

Hand-over (SIGHUP replacement, re-sharding): the successor starts while its predecessor still collects
(the market is never unwatched), but holds every event it receives (`HandoverBuffer`) until the
predecessor has drained and exited; it then restores the predecessor's final checkpoint and replays
what it held, skipping trades the predecessor already processed. One process's decisions, no fork.

The block's layout: collector.runtime.checkpoint_block; the hand-over: collector.runtime.handover.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

from collector.pipeline.funding_rates import MAX_RATE_CHARS, is_stale

if TYPE_CHECKING:
    import psycopg

    from collector.feed.open_interest import PollPositions
    from collector.pipeline.batches import Batch
    from collector.pipeline.router import Pipeline
    from collector.runtime.checkpoint_block import CheckpointBlock
    from collector.runtime.shm import StatsBlock

log = logging.getLogger(__name__)

# "unknown" in the block and the table (an i64 no id or time can take)
NONE = -(2**63)
# How often a worker records a snapshot (flushing its batches first): the age of what a successor
# resumes is this plus the writer's acknowledgement (~0.3 s), so the REST repair after a crash covers
# about two seconds of trades, still one aggTrades request per symbol that traded. Not more often: in a
# running worker a snapshot of 62 symbols and its publication cost ~0.4 ms of CPU (its code and data are
# cold between rounds), at 0.5 s a tenth of a loaded worker's CPU at the real market's rate (bench/README).
SNAPSHOT_EVERY_S = 2.0
# Supervisor: how often the block is copied to the database (a full restart after a power cut resumes
# from at most this old a state; after SIGTERM the copy made once the workers have drained is exact).
CHECKPOINT_SAVE_S = 60.0
# After a full restart, trade ids and klines older than this are not resumed: the downtime would be one
# gap per symbol of hours of trades, more than the REST budget should be spent on; a start from live
# data (as on a first run) is the better trade. Funding, filter and poll positions are always resumed.
RESUME_IDS_MAX_AGE_MS = 3_600_000
# Snapshots waiting for acknowledgement at most: a minute of them. Beyond (the writer not acknowledging,
# e.g. a full spool) the newest is replaced instead of appended, which only delays what is published.
MAX_WAITING = 120



class SymbolCheckpoint(NamedTuple):
    """What one symbol's steps need to continue; None (nan for the price) = nothing to resume.

    A NamedTuple, not a frozen dataclass: every checkpoint round (every 2 s, each symbol of the worker) builds
    and compares these, and a tuple is built and compared in C. `c._replace(...)` makes a changed copy."""

    last_trade_id: int | None = None  # gap detection starts after it (collector.feed.backfill)
    last_kline_open_ms: int | None = None  # candle-hole detection starts after it
    funding_ms: int | None = None  # start of the funding gate's last accepted bucket
    filter_price: float = math.nan  # trade filter: last kept price ...
    filter_ts_ms: int | None = None  # ... and time
    oi_polled_ms: int | None = None  # open interest: when the last stored snapshot was polled
    updated_ms: int = 0
    # Last funding rate sent ("" = none; venues of collector.pipeline.funding_rates.RATE_APART) and the
    # settlement it is for; the `checkpoints` table keeps them too (schema version 7), for a full restart.
    funding_rate: str = ""
    next_funding_ms: int | None = None
    # The exchange time up to which the symbol's streams were received (and what they stored acknowledged):
    # a successor records liquidations from there to its own first event of the symbol as a hole
    # (collector.pipeline.liquidation_holes); the `checkpoints` table keeps it too (schema version 8).
    live_ms: int | None = None


# --- snapshot / restore of the pipeline's steps (pure) ---------------------------------------------------


def snapshot(pipeline: Pipeline, now_ms: int = 0) -> dict[str, SymbolCheckpoint]:
    """Every symbol's checkpoint as of now. Flush the pipeline's batches first (see module docstring)."""
    tf, gate = pipeline.trade_filter, pipeline.funding_gate
    rates = pipeline.funding_rates.known if pipeline.funding_rates is not None else {}
    out = {}
    stream_ms = pipeline.stream_ms()  # once, not per symbol: the same for all of them
    for sym in pipeline.symbols:
        price, ts = tf.symbol(sym).snapshot() if sym in tf else (math.nan, None)
        rate, next_ms = rates.get(sym, ("", None))
        out[sym] = SymbolCheckpoint(pipeline.last_trade_id.get(sym), pipeline.last_kline_open.get(sym),
                                    gate.last_accepted_ms(sym), price, ts, pipeline.last_oi_poll.get(sym), now_ms,
                                    rate, next_ms, pipeline.liquidations_live_ms(sym, stream_ms))
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
        if c.last_trade_id is not None and pipeline.id_rule:  # else ids without order: nothing to continue
            pipeline.last_trade_id[sym] = c.last_trade_id
        if c.last_kline_open_ms is not None:
            pipeline.last_kline_open[sym] = c.last_kline_open_ms
        if c.funding_ms is not None:
            pipeline.funding_gate.restore(sym, c.funding_ms)
        if c.filter_ts_ms is not None or not math.isnan(c.filter_price):
            pipeline.trade_filter.symbol(sym).restore(c.filter_price, c.filter_ts_ms)
        if c.funding_rate and c.next_funding_ms is not None and pipeline.funding_rates is not None:
            pipeline.funding_rates.restore(sym, c.funding_rate, c.next_funding_ms)
        if c.live_ms is not None:
            pipeline.resume_liquidations(sym, c.live_ms)
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


def resume_activity(block: StatsBlock, slots: Mapping[str, int], pipeline: Pipeline) -> int:
    """Take over the rolling statistics (the tiers' input) a predecessor, crashed or replaced, left in
    these symbol slots of the statistics block instead of restarting them from zero; returns how many
    symbols were resumed. Unlike the checkpoints above they decide nothing stored, only tiers later.

    Skipped (the symbol starts afresh): a slot never written, a stale one (its owner died mid-write), an
    image that is not one, and one kept over another window than the pipeline's (filters.trades.stats_window
    changed since the predecessor started): resuming that would keep the old window for good."""
    from collector.pipeline.activity import SymbolActivity
    from collector.runtime.seqlock import StaleSlot

    resumed = other_window = 0
    for sym, index in slots.items():
        mine = pipeline.activity.get(sym)
        if mine is None:
            continue
        try:
            r = block.read_activity(index)
        except StaleSlot:  # its owner died mid-write: start that symbol afresh
            continue
        if r is None:
            continue
        try:
            act = SymbolActivity.from_bytes(r.data)
        except ValueError:
            continue
        if not mine.same_layout(act):
            other_window += 1
            continue
        pipeline.activity[sym] = act
        resumed += 1
    if other_window:
        log.info("the statistics of %d symbols were not resumed: their predecessor kept them over another "
                 "filters.trades.stats_window; they start afresh", other_window)
    return resumed


# --- the record's values, shared by the block and the table ------------------------------------------------

Packed = tuple[int, int, int, float, int, int, int, int, int, bytes]


def pack(c: SymbolCheckpoint) -> Packed:
    # inline, not a helper per field: the checkpoint round packs every symbol of the worker every 2 s
    tid, kline, funding, price, ts, oi, updated, rate, next_ms, live = c
    # struct would cut a longer text to the field's width, another number: not carried instead
    text = rate.encode("ascii") if rate.isascii() and len(rate) <= MAX_RATE_CHARS else b""
    return (NONE if tid is None else tid, NONE if kline is None else kline, NONE if funding is None else funding,
            price, NONE if ts is None else ts, NONE if oi is None else oi, updated,
            NONE if next_ms is None else next_ms, NONE if live is None else live, text)


def unpack(values: Packed) -> SymbolCheckpoint:
    def v(x: int) -> int | None:
        return None if x == NONE else x
    tid, kline, funding, price, ts, oi, updated, next_ms, live, rate = values
    # struct pads a short bytes field with NULs: the rate is what precedes them
    return SymbolCheckpoint(v(tid), v(kline), v(funding), price, v(ts), v(oi), updated,
                            rate.rstrip(b"\0").decode("ascii"), v(next_ms), v(live))


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
        if pipeline.funding_rates is not None:
            pipeline.funding_rates.on_change = self.rate_changed
        pipeline.on_session_start = self.started

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
                changed[sym] = cur._replace(funding_ms=ms)
        self._write(changed)

    def rate_changed(self, sym: str) -> None:
        """A symbol's funding rate changed: published at once (module docstring)."""
        rates = self.pipeline.funding_rates
        if not self.active or rates is None or sym not in rates.known:
            return
        rate, next_ms = rates.known[sym]
        cur = self.published.get(sym, SymbolCheckpoint())
        self._write({sym: cur._replace(funding_rate=rate, next_funding_ms=next_ms)})

    def started(self, sym: str, last_trade_id: int | None, last_kline_open_ms: int | None) -> None:
        """A symbol's first trade or closed kline with no position to continue from: the position just before
        it, published at once (module docstring). Nothing of it can have reached the writer yet, so it is as
        acknowledged as a position can be; waiting for the first acknowledged snapshot would leave a window
        (~2 s after a fresh start) where a kill -9 lost the rows the successor never received, silently."""
        if not self.active:
            return
        cur = self.published.get(sym, SymbolCheckpoint())
        if last_trade_id is not None and cur.last_trade_id is None:
            cur = cur._replace(last_trade_id=last_trade_id)
        elif last_kline_open_ms is not None and cur.last_kline_open_ms is None:
            cur = cur._replace(last_kline_open_ms=last_kline_open_ms)
        else:
            return
        self._write({sym: cur._replace(updated_ms=int(self.clock() * 1000))})

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
                c = c._replace(funding_ms=prev.funding_ms)  # handed over already: never step back
            if prev is not None and prev.funding_rate:  # written when it changed: newer than the snapshot's
                c = c._replace(funding_rate=prev.funding_rate, next_funding_ms=prev.next_funding_ms)
            if prev is not None and c.last_trade_id is None and prev.last_trade_id is not None:
                c = c._replace(last_trade_id=prev.last_trade_id)  # a session's start (started), not taken back
            if prev is not None and c.last_kline_open_ms is None and prev.last_kline_open_ms is not None:
                c = c._replace(last_kline_open_ms=prev.last_kline_open_ms)
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
                     c._replace(last_trade_id=None, last_kline_open_ms=None) for s, c in found.items()}
        self.published = dict(found)
        return restore(self.pipeline, found, positions)


# --- the database copy (full restarts) ---------------------------------------------------------------------


def _table_values(c: SymbolCheckpoint) -> tuple[int | float | str | None, ...]:
    """The record's values as table columns: NULL for unknown, the rate as text (NULL: none)."""
    *numbers, rate = pack(c)  # the block's own checks: a rate the record would not carry is not stored either
    return (*(None if v == NONE else v for v in numbers), rate.decode("ascii") or None)


def save(conn: psycopg.Connection, checkpoints: Mapping[str, SymbolCheckpoint], *, venue: str) -> int:
    """Upsert every symbol's checkpoint of `venue` into the `checkpoints` table (collector.db.schema,
    version 3; keyed by venue and symbol since version 6; the funding rate since version 7, live_ms since 8)."""
    rows = [(venue, s, *_table_values(c)) for s, c in checkpoints.items() if c.updated_ms]
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO checkpoints (venue, symbol, last_trade_id, last_kline_open_ms, funding_ms, filter_price,
                                        filter_ts_ms, oi_polled_ms, updated_ms, next_funding_ms, live_ms,
                                        funding_rate)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (venue, symbol) DO UPDATE SET last_trade_id = EXCLUDED.last_trade_id,
                   last_kline_open_ms = EXCLUDED.last_kline_open_ms, funding_ms = EXCLUDED.funding_ms,
                   filter_price = EXCLUDED.filter_price, filter_ts_ms = EXCLUDED.filter_ts_ms,
                   oi_polled_ms = EXCLUDED.oi_polled_ms, updated_ms = EXCLUDED.updated_ms,
                   next_funding_ms = EXCLUDED.next_funding_ms, funding_rate = EXCLUDED.funding_rate,
                   live_ms = EXCLUDED.live_ms
               WHERE checkpoints.updated_ms <= EXCLUDED.updated_ms""", rows)
    return len(rows)


def current_rate(c: SymbolCheckpoint, now_ms: int) -> SymbolCheckpoint:
    """`c` without its funding rate once it is more than RATE_STALE_MS past the settlement it was sent for
    (then it is a past period's rate: a successor's rows carry none until the venue's next push rather than
    that one)."""
    if c.funding_rate and (c.next_funding_ms is None or is_stale(c.next_funding_ms, now_ms)):
        return c._replace(funding_rate="", next_funding_ms=None)
    return c


def load(conn: psycopg.Connection, symbols: Iterable[str] | None = None, *, venue: str,
         now_ms: int | None = None) -> dict[str, SymbolCheckpoint]:
    """The stored checkpoints of `venue` (of `symbols`, or all), each funding rate only while it is current
    at `now_ms` (default: the wall clock; `current_rate`)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    rows = conn.execute("""SELECT symbol, last_trade_id, last_kline_open_ms, funding_ms, filter_price,
                                  filter_ts_ms, oi_polled_ms, updated_ms, funding_rate, next_funding_ms, live_ms
                           FROM checkpoints WHERE venue = %s""", (venue,)).fetchall()
    wanted = None if symbols is None else set(symbols)
    return {r[0]: current_rate(SymbolCheckpoint(r[1], r[2], r[3], math.nan if r[4] is None else r[4], r[5], r[6],
                                                 r[7], r[8] or "", r[9], r[10]), now_ms)
            for r in rows if wanted is None or r[0] in wanted}
