"""A worker's pipeline: decoded events in, encoded COPY batches out, nothing else.

No I/O: events arrive from the feed (collector.feed.source), kept rows are encoded once here, and full or
old-enough batches are handed to `emit` (the worker puts them on the writer's queue). Everything that
decides what is kept lives in the filter modules beside it (trade_filter, limits, thresholds); this module wires those rules to the event types,
validates what the exchange sent, and counts every decision so the numbers can be published. What the
stream missed, answered over REST, enters through collector.pipeline.repairs, bound as methods here.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from collector.feed.wire import (
    AggTrade,
    ForceOrder,
    Kline,
    MarkPrice,
    OkxTrade,
    OpenInterest,
    UuidTrade,
    uuid_trade_id,
)
from collector.pipeline import repairs
from collector.pipeline.activity import DAY_MS, SymbolActivity
from collector.pipeline.batches import Batch, BatchBuilder
from collector.pipeline.encode import RowEncoder, numeric_cache_size
from collector.pipeline.flush import FlushPolicy
from collector.pipeline.funding_rates import RATE_APART, FundingRates
from collector.pipeline.limits import MinInterval
from collector.pipeline.liquidation_holes import REASONS, LiquidationHoles
from collector.pipeline.tails import TailChecks
from collector.pipeline.trade_filter import SymbolFilter, TradeFilter
from collector.pipeline.validation import MAX_EVENT_SKEW_MS

log = logging.getLogger(__name__)

# Logged samples per bad-input kind; after that only a count line at these totals (and every
# LOG_EVERY), so a flood of garbage is visible in the log without flooding it.
LOGGED_SAMPLES = 3
LOG_AT_COUNTS = (10, 100, 1000)
LOG_EVERY = 10_000
MINUTE_MS = 60_000
# Gaps kept in memory (Pipeline.gaps): a few days of reconnects; older ones are in the gaps table.
RECENT_GAPS = 1000
_INF: Final = math.inf
# How a venue's trade ids run per symbol; gap detection and the duplicate check follow it.
# 1: Binance's aggTrade id `a` goes up by one per event.
# 2: OKX pushes the LAST fill id of `count` aggregated fills (the decoder sets f = tradeId - count + 1), and
#    fill ids go up by one: a push's first fill follows the previous push's last.
# 0: Bybit's trades carry a UUID and the matching engine's cross sequence, which one taker's fills share
#    and book events advance: no order to check, so neither gaps nor repeats are told from ids.
TRADE_ID_RULES = {"binance": 1, "okx": 2, "bybit": 0}
ID_WORDS = {1: "aggTrade ids", 2: "fill ids", 0: "trade ids"}  # how a gap's ids are named in the log
# The event types whose newest time says up to when a worker's streams were received (a checkpoint's
# live_ms, collector.pipeline.liquidation_holes): those pushed on the connection that carries liquidations.
# Not klines (OKX sends them on another socket) nor open interest (Binance polls it over REST).
STREAM_KINDS = ("trades", "funding", "liquidations")
# Those that also end a symbol's liquidation hole: only events sent as they happen (trades, liquidations).
# A mark price or ticker may come on subscription stamped with when it last changed (OKX pushes an unchanged
# mark price every 10 s), which could end a hole before the subscription delivered: a liquidation between
# would be lost outside every row. The price: a symbol that neither trades nor liquidates for a while after
# a resume keeps its hole open that long (the row covers more than was missed, never less).
HOLE_ENDING_KINDS = ("trades", "liquidations")


class Gap:
    """A jump in a symbol's aggregate trade ids: ids from_id..to_id were never received.

    `detected_ms` is the local wall clock when the jump arrived (the gaps table's detected_at, comparable
    with filled_at). `filter_state` is a copy of the symbol's trade filter as it was just before the
    trade that revealed the gap: the missing trades happened before that trade, so backfilled ones are
    filtered from this state, in id order, as if they had arrived live; the live filter is not touched.
    """

    __slots__ = ("symbol", "from_id", "to_id", "detected_ms", "filter_state")

    def __init__(self, symbol: str, from_id: int, to_id: int, detected_ms: int,
                 filter_state: SymbolFilter | None = None) -> None:
        self.symbol, self.from_id, self.to_id, self.detected_ms = symbol, from_id, to_id, detected_ms
        self.filter_state = filter_state

    def __repr__(self) -> str:
        return f"Gap({self.symbol}, {self.from_id}..{self.to_id})"


class GapToFill(Protocol):
    """What a trade fetched over REST is checked and filtered against (Pipeline.on_backfill_trade): a Gap, or
    a trade gap the backfill read back from the table after a restart (collector.feed.backfill_plan's
    TakenOverGap), whose filter_state is None, so the live filter decides. A protocol, not Gap: a class
    compiled by mypyc (bench/compiled_tree.py) checks an argument's declared class at run time."""

    @property
    def symbol(self) -> str: ...
    @property
    def from_id(self) -> int: ...
    @property
    def to_id(self) -> int: ...
    @property
    def filter_state(self) -> SymbolFilter | None: ...


class Pipeline:
    """Filters and encodes one worker's events into per-table batches.

    `symbols` is the worker's share of the universe: frames for anything else are counted as
    `unknown_symbol` and skipped (a misrouted or injected frame must not create rows). `venue` is the one
    exchange the worker collects (binance, okx, bybit): every row it encodes carries it, and there is no
    default so that no row can be filed under the wrong venue by omission.
    """

    def __init__(self, symbols: list[str], data_types: list[str], trade_filter: TradeFilter,
                 emit: Callable[[Batch], None], *, venue: str, funding_interval_ms: int = 60_000,
                 batch_rows: int = 20_000, flush_interval_ms: int = 50,
                 activity: dict[str, SymbolActivity] | None = None, stats_window_ms: int = DAY_MS,
                 on_gap: Callable[[Gap], None] | None = None,
                 on_candle_gap: Callable[[str, int, int], None] | None = None,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.symbols = set(symbols)
        self.venue = venue
        # keep_all encodes every trade: a cache big enough to matter, full in seconds at those rates
        self.encoder = RowEncoder(venue, numeric_cache_size(trade_filter.params.keep_all))
        self.data_types = set(data_types)
        self.trade_filter = trade_filter
        self._filter_states = trade_filter.states
        self.emit = emit
        self.funding_gate = MinInterval(funding_interval_ms)
        # The last funding rate per symbol where the venue sends it apart from the mark price (OKX): a
        # checkpointed state, so a restarted worker's first rows carry the rate (collector.pipeline.funding_rates)
        self.funding_rates = FundingRates() if venue in RATE_APART else None
        self.batch_rows = batch_rows
        self.flush_policy = FlushPolicy(flush_interval_ms)
        # Read once per batch (its first row), never per row: when the batch starts its hold.
        self.clock_ms = clock_ms
        # Per-symbol rolling statistics the tiers are computed from (published by the worker), over the last
        # `stats_window_ms` of event time (filters.trades.stats_window).
        self.activity = activity if activity is not None else {
            s: SymbolActivity(window_ms=stats_window_ms) for s in symbols}
        self.on_gap = on_gap
        # Called with (symbol, first missing open ms, last missing open ms) when closed 1m klines jump.
        self.on_candle_gap = on_candle_gap
        # Resumed symbols whose ids the worker checks over REST (collector.pipeline.tails), answered by on_tail.
        self.tails = TailChecks()
        self.builders: dict[str, BatchBuilder] = {}
        # The trades builder, held apart from `builders` lookups: _keep_trade adds to it for every kept trade.
        self._trades = self.builders["trades"] = BatchBuilder("trades")
        # Called when a builder gets its first row (after the batch's hold has started): the worker arms
        # its flush timer for next_flush_ms().
        self.on_first_row: Callable[[], None] | None = None
        # Called with (symbol, last trade id, last closed kline open ms), one of the two None, when a symbol's
        # first trade or closed kline of this process arrives with no position to continue from (a fresh start,
        # or a symbol no checkpoint covered): the position just before it. The worker publishes it at once
        # (collector.runtime.checkpoints.Checkpointer.started), so a successor killed in before the first
        # acknowledged checkpoint still repairs from here instead of losing what it missed silently.
        self.on_session_start: Callable[[str, int | None, int | None], None] | None = None
        # Events received, by type (`received`): trades, which every trade passes, as a plain int.
        self.trades_received = 0
        self._received: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()  # trades kept, by save_reason
        self._rows_emitted: Counter[str] = Counter()  # rows handed to `emit`, by table (`rows` adds the pending)
        self.rejected: Counter[str] = Counter()  # bad input by kind
        self.last_event_ms: dict[str, int] = {}  # newest event time received, by type
        self.last_trade_id: dict[str, int] = {}  # empty where the venue's ids have no order (TRADE_ID_RULES)
        self.id_rule = TRADE_ID_RULES[venue]
        self.last_kline_open: dict[str, int] = {}  # newest closed 1m kline's open time, by symbol
        self.last_oi_poll: dict[str, int] = {}  # receipt ms of the newest open-interest row, by symbol
        # The most recent gaps, for inspection and tests; bounded so months of running cannot grow it.
        self.gaps: deque[Gap] = deque(maxlen=RECENT_GAPS)
        self.backfilled: Counter[str] = Counter()  # trades/candles repaired over REST, gaps resolved
        self._store_trades = "trades" in self.data_types
        self._store_funding = "funding" in self.data_types
        self._store_liquidations = "liquidations" in self.data_types
        self._store_candles = "candles_1m" in self.data_types
        # Symbols whose liquidations were not being received since a resume (collector.pipeline.liquidation_holes);
        # `_liq_open` is its dict, tested on every event (empty but for the first seconds after a resume).
        self.liquidation_holes = LiquidationHoles()
        self._liq_open = self.liquidation_holes.open

    # --- the events -------------------------------------------------------------------------------------

    def on_trade(self, t: AggTrade, receipt: float) -> None:
        # Every trade passes here (~99% to be dropped): validation.check_trade is inlined (same checks, same
        # kinds, same order) because a call per trade costs as much as the checks.
        self.trades_received += 1
        sym = t.s
        if sym not in self.symbols:
            return self._reject("unknown_symbol", t)
        try:
            price = float(t.p)
            qty = float(t.q)
        except ValueError:
            return self._reject("bad_number", t)
        if not (0.0 < price < _INF and 0.0 < qty < _INF):
            return self._reject("non_positive_or_infinite", t)
        ts = t.T
        if abs(ts - receipt * 1000.0) > MAX_EVENT_SKEW_MS:
            return self._reject("absurd_timestamp", t)
        self.last_event_ms["trades"] = ts
        if self._liq_open:
            self._stream_live(sym, ts)
        if rule := self.id_rule:
            a = t.a
            last_ids = self.last_trade_id
            last = last_ids.get(sym)
            if last is not None:
                if a <= last:
                    return self._reject("duplicate_or_old_id", t)
                first = a if rule == 1 else t.f
                if first != last + 1:
                    self._gap(sym, last + 1, first - 1, int(receipt * 1000))
            elif (started := self.on_session_start) is not None:
                started(sym, (a if rule == 1 else t.f) - 1, None)
            last_ids[sym] = a
        usd = price * qty
        self.activity[sym].add(ts, usd)
        f = self._filter_states.get(sym)  # TradeFilter.decide inlined: a call per trade saved
        reason = (f if f is not None else self.trade_filter.symbol(sym)).decide(price, usd, ts)
        if reason is not None:
            self._keep_trade(t, usd, reason)
        return None

    def _keep_trade(self, t: AggTrade, usd: float, reason: str) -> None:
        """A trade the filter kept (live or backfilled): counted, and stored when trades are collected.

        A UuidTrade's id is computed here, for kept trades only (collector.feed.wire.UuidTrade): a malformed
        UUID is a bad_number skip, not counted as kept. An OkxTrade's E, l and m are made here too (its agg())."""
        if type(t) is not AggTrade:  # one test for Binance's trades, the others' own fields resolved here
            if type(t) is OkxTrade:
                t = t.agg()
            elif type(t) is UuidTrade:
                try:
                    a = uuid_trade_id(t.u)
                except ValueError:
                    return self._reject("bad_number", t)
                t = AggTrade(t.E, t.s, a, t.p, t.q, a, a, t.T, t.m)
        self.kept[reason] += 1
        if self._store_trades:  # _add inlined for the one table a kept trade goes to
            ts = t.T
            b = self._trades
            n = b.add(self.encoder.trade(ts, t.s, t.a, t.p, t.q, usd, "sell" if t.m else "buy", reason, t.f, t.l),
                      ts)
            if n == 1:
                self._first_row("trades")
            if n >= self.batch_rows:
                self._emit(b)
        return None

    def on_mark_price(self, m: MarkPrice, receipt: float) -> None:
        if not self._admit("funding", m.s, m.E, receipt, m):
            return None
        rate, next_ms = m.r, m.T
        if self.funding_rates is not None:  # every event, gated or not: the rate it carries is the newest
            rate, next_ms = self.funding_rates.rate_of(m.s, rate, next_ms, m.E)
        if not self._store_funding or not self.funding_gate.accept(m.s, m.E):
            return None
        try:
            row = self.encoder.funding(m.E, m.s, m.p, m.i or None, rate or None, next_ms or None)
        except ValueError:
            return self._reject("bad_number", m)
        self._add("funding", row, m.E)
        return None

    def on_liquidation(self, f: ForceOrder, receipt: float) -> None:
        o = f.o
        if not self._admit("liquidations", o.s, o.T, receipt, f):
            return None
        if not self._store_liquidations:
            return None
        try:
            price, qty = float(o.ap or o.p), float(o.z or o.q)
            if not (float(o.p) > 0.0 and float(o.q) > 0.0):
                return self._reject("non_positive_or_infinite", f)
            row = self.encoder.liquidation(o.T, o.s, o.S.lower(), o.o, o.p, o.ap, o.q, o.z, o.X, price * qty)
        except ValueError:
            return self._reject("bad_number", f)
        self._add("liquidations", row, o.T)
        return None

    def on_kline(self, k: Kline, receipt: float) -> None:
        self._received["klines"] += 1
        b = k.k
        self.last_event_ms["klines"] = k.E
        if not b.x:
            return None
        if k.s not in self.symbols:
            return self._reject("unknown_symbol", k)
        if b.i != "1m":
            return self._reject("unexpected_interval", k)
        if abs(b.t - receipt * 1000.0) > MAX_EVENT_SKEW_MS:
            return self._reject("absurd_timestamp", k)
        if not self._store_candles:
            return None
        try:
            row = self.encoder.candle(b.t, k.s, b.T, b.o, b.h, b.l, b.c, b.v, b.q, b.n, b.V, b.Q)
        except ValueError:
            return self._reject("bad_number", k)
        self._check_candle_gap(k.s, b.t)  # first: a first kline's position is published before its row can be sent
        self._add("candles_1m", row, b.t)
        return None

    def _check_candle_gap(self, symbol: str, open_ms: int) -> None:
        """Closed 1m klines come once a minute per symbol; a jump means minutes were missed (reconnect)."""
        last = self.last_kline_open.get(symbol)
        if last is not None and open_ms <= last:
            return
        if last is None and self.on_session_start is not None:
            self.on_session_start(symbol, None, open_ms - MINUTE_MS)
        self.last_kline_open[symbol] = open_ms
        if last is not None and open_ms > last + MINUTE_MS and self.on_candle_gap is not None:
            self.on_candle_gap(symbol, last + MINUTE_MS, open_ms - MINUTE_MS)

    def on_open_interest(self, oi: OpenInterest, receipt: float) -> None:
        if not self._admit("open_interest", oi.symbol, oi.time, receipt, oi):
            return None
        try:
            if float(oi.openInterest) < 0:
                return self._reject("non_positive_or_infinite", oi)
            row = self.encoder.open_interest(oi.time, oi.symbol, oi.openInterest)
        except ValueError:
            return self._reject("bad_number", oi)
        self._add("open_interest", row, oi.time)
        self.last_oi_poll[oi.symbol] = int(receipt * 1000)
        return None

    def _admit(self, kind: str, symbol: str, event_ms: int, receipt: float, event: object) -> bool:
        """Count an event and apply the checks every type shares: one of our symbols, a sane event time.

        (on_trade inlines the same checks: it runs for every trade, the others a few times a second.)
        """
        self._received[kind] += 1
        if symbol not in self.symbols:
            self._reject("unknown_symbol", event)
            return False
        if abs(event_ms - receipt * 1000.0) > MAX_EVENT_SKEW_MS:
            self._reject("absurd_timestamp", event)
            return False
        self.last_event_ms[kind] = event_ms
        if self._liq_open and kind in HOLE_ENDING_KINDS:  # trades: on_trade
            self._stream_live(symbol, event_ms)
        return True

    def on_bad_frame(self, kind: str) -> None:
        self.rejected[kind] += 1

    # --- liquidation holes (collector.pipeline.liquidation_holes) ---------------------------------------

    def on_stream_lost(self) -> None:
        """The connection carrying this worker's liquidations ended (collector.feed.events.EventSink): from the
        newest event its streams delivered to each symbol's first trade or liquidation after the reconnect, a
        hole. Another drop before that keeps the one hole (LiquidationHoles.resume)."""
        live = self.stream_ms()
        if live is not None:
            for sym in self.symbols:
                self.resume_liquidations(sym, live)

    def resume_liquidations(self, symbol: str, live_ms: int) -> None:
        """`symbol`'s streams were received up to `live_ms` (exchange time; by a predecessor, or here before a
        connection was lost): until its first trade or liquidation, a hole (nothing when liquidations are not
        collected: there is nothing to miss)."""
        if self._store_liquidations and symbol in self.symbols:
            self.liquidation_holes.resume(symbol, live_ms)

    def stream_ms(self) -> int | None:
        """The newest exchange time the streams delivered (trades, mark prices, liquidations), or None."""
        seen = self.last_event_ms
        return max((seen[k] for k in STREAM_KINDS if k in seen), default=None)

    def liquidations_live_ms(self, symbol: str, stream_ms: int | None = None) -> int | None:
        """Up to when `symbol`'s liquidations were received, for its checkpoint (LiquidationHoles.live_ms).
        `stream_ms`: this pipeline's stream_ms(), passed by a caller asking for every symbol at once (None:
        computed here)."""
        if not self._store_liquidations:
            return None
        return self.liquidation_holes.live_ms(symbol, self.stream_ms() if stream_ms is None else stream_ms)

    def stream_live(self, symbol: str, event_ms: int) -> None:
        """A stream event of `symbol` that is not processed here (a hand-over's trade the predecessor already
        processed, collector.runtime.handover): it still proves the symbol's stream was being received."""
        if self._liq_open:
            self._stream_live(symbol, event_ms)

    def _stream_live(self, symbol: str, event_ms: int) -> None:
        span = self.liquidation_holes.seen(symbol, event_ms)
        if span is None:
            return
        now = self.clock_ms()
        log.warning("%s: liquidations %d..%d (exchange ms, %.1f s) were not received and cannot be repaired: "
                    "recorded as a gap", symbol, span[0], span[1], (span[1] - span[0]) / 1000)
        self.record_gap("liquidations", symbol, span[0], span[1], now, "unfillable",
                        REASONS.get(self.venue, f"no liquidation history on {self.venue}"), now)

    # --- REST answers for what the stream missed (collector.pipeline.repairs) --------------------------
    # Methods that call repairs' functions, not the functions assigned as class attributes: a class compiled
    # by mypyc (bench/compiled_tree.py) does not bind such attributes as methods.

    def tail_open(self, symbol: str, after_id: int) -> bool:
        """collector.pipeline.repairs.tail_open."""
        return repairs.tail_open(self, symbol, after_id)

    def on_tail(self, symbol: str, after_id: int, trades: Iterable[tuple[int, int]], receipt: float) -> None:
        """collector.pipeline.repairs.on_tail."""
        repairs.on_tail(self, symbol, after_id, trades, receipt)

    def on_backfill_trade(self, t: AggTrade, gap: GapToFill, receipt: float) -> bool:
        """collector.pipeline.repairs.on_backfill_trade."""
        return repairs.on_backfill_trade(self, t, gap, receipt)

    def on_backfill_kline(self, symbol: str, row: list[Any], receipt: float) -> bool:
        """collector.pipeline.repairs.on_backfill_kline."""
        return repairs.on_backfill_kline(self, symbol, row, receipt)

    def record_gap(self, kind: str, symbol: str, from_id: int, to_id: int, detected_ms: int, state: str,
                   reason: str, updated_ms: int, filled_ms: int | None = None) -> None:
        """collector.pipeline.repairs.record_gap."""
        repairs.record_gap(self, kind, symbol, from_id, to_id, detected_ms, state, reason, updated_ms, filled_ms)

    # --- batching ---------------------------------------------------------------------------------------

    def _add(self, table: str, row: bytes, event_ms: int) -> None:
        b = self.builders.get(table)
        if b is None:
            b = self.builders[table] = BatchBuilder(table)
        n = b.add(row, event_ms)
        if n == 1:
            self._first_row(table)
        if n >= self.batch_rows:
            self._emit(b)

    def _first_row(self, table: str) -> None:
        """`table`'s builder got its first row: its hold starts now, and the worker arms its flush timer."""
        self.flush_policy.started(table, self.clock_ms())
        if self.on_first_row is not None:
            self.on_first_row()

    @property
    def received(self) -> Counter[str]:
        """Events received, by type (trades counted apart: `trades_received`, one int add per trade)."""
        received = self._received.copy()
        if self.trades_received:
            received["trades"] = self.trades_received
        return received

    @property
    def rows(self) -> Counter[str]:
        """Rows encoded for the writer, by table: those emitted and those still in a builder. Counted per batch,
        not per row (the stats publisher reads it about once a second; rows are added up to ~25k/s)."""
        rows = self._rows_emitted.copy()
        for table, b in self.builders.items():
            if len(b):
                rows[table] += len(b)
        return rows

    def set_stats_window(self, window_ms: int) -> int:
        """Start afresh, over `window_ms`, the statistics of every symbol kept over another window; returns
        how many. Why afresh: filters.trades.stats_window changed (SIGHUP), and the old window's slots
        neither split into nor add up to the new one's, while statistics over a mix of two windows would
        rank symbols on neither."""
        changed = 0
        for sym, act in self.activity.items():
            if act.window_ms != window_ms:
                self.activity[sym] = SymbolActivity(window_ms=window_ms)
                changed += 1
        return changed

    @property
    def trades_added(self) -> int:
        """Trades given to the symbols' statistics (`activity`) so far, live and backfilled, plus live ones
        rejected before them: it grows whenever any statistics change, so an unchanged count means none did
        (the warm-up refresh and the stats publisher skip their work on it)."""
        return self.trades_received + self.backfilled.get("trades", 0)

    @property
    def flush_interval_ms(self) -> int:
        """The least time between two batches of one table, and so the longest a row waits here."""
        return self.flush_policy.hold_ms

    @flush_interval_ms.setter
    def flush_interval_ms(self, ms: int) -> None:  # SIGHUP (collector.runtime.worker_control)
        self.flush_policy.hold_ms = ms

    def _emit(self, builder: BatchBuilder, now_ms: int | None = None) -> None:
        now_ms = self.clock_ms() if now_ms is None else now_ms
        self.flush_policy.sent(builder.table, now_ms)
        batch = builder.take(now_ms)
        if batch is not None:
            self._rows_emitted[batch.table] += batch.rows
            self.emit(batch)

    def flush_due(self, now_ms: int) -> None:
        """Emit every batch the flush policy lets go now (collector.pipeline.flush): at once when its table
        was not sent in the last `flush_interval_ms`, else that long after the previous send.

        Called by the worker's flush timer, armed for next_flush_ms() when a builder gets its first row: the
        event loop runs it once the current socket read has been processed, so rows read together leave
        together.
        """
        for table in self.flush_policy.due(now_ms):
            self._emit(self.builders[table], now_ms)

    def next_flush_ms(self) -> int | None:
        """When flush_due() next has something to emit (None: no batch is pending)."""
        return self.flush_policy.next_ms()

    def flush_pending(self) -> None:
        """Emit every batch that has rows, whatever flush_interval_ms says: the worker is about to rest
        (collector.feed.pacing), which spaces its batches by itself, and a row must not wait the rest out here."""
        pending = self.flush_policy.pending()
        if pending:
            now_ms = self.clock_ms()
            for table in pending:
                self._emit(self.builders[table], now_ms)

    def flush_all(self, now_ms: int | None = None) -> None:
        """Emit everything pending (shutdown)."""
        for b in self.builders.values():
            self._emit(b, now_ms)

    # --- bad input --------------------------------------------------------------------------------------

    def _gap(self, symbol: str, from_id: int, to_id: int, ts: int) -> None:
        gap = Gap(symbol, from_id, to_id, ts, self.trade_filter.symbol(symbol).copy())
        self.gaps.append(gap)
        self.rejected["gap"] += 1
        log.warning("%s: %s %d..%d missing (%d)", symbol, ID_WORDS[self.id_rule], from_id, to_id,
                    to_id - from_id + 1)
        if self.on_gap is not None:
            self.on_gap(gap)

    def _reject(self, kind: str, event: object) -> None:
        self.rejected[kind] += 1
        n = self.rejected[kind]
        if n <= LOGGED_SAMPLES:
            log.warning("skipped an event (%s, %d so far): %r", kind, n, event)
        elif n in LOG_AT_COUNTS or n % LOG_EVERY == 0:
            log.warning("%d events skipped as %s so far", n, kind)
        return None
