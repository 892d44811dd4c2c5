"""The pipeline's entry points for what the stream missed, answered over REST: trade-id gaps and candle
minutes repaired by collector.feed.backfill, and a resumed symbol's tail checked after its checkpoint.

Why apart from collector.pipeline.router: the router decides about live events in arrival order; these
answers come later, for ids and minutes before the live ones, and must neither move the live id sequence
nor touch the live filter state (a gap's trades are filtered from the state it was detected in). They are
plain functions of a Pipeline, called by its methods of the same names (Pipeline.on_backfill_trade, ...), so
the backfill still talks to one object (collector.feed.backfill_plan.BackfillSink). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from collector.feed.wire import AggTrade
from collector.pipeline.tails import tail_gap
from collector.pipeline.validation import MAX_EVENT_SKEW_MS, check_trade

if TYPE_CHECKING:
    from collector.pipeline.router import GapToFill, Pipeline


def tail_open(pipeline: Pipeline, symbol: str, after_id: int) -> bool:
    """Whether a tail check from `after_id` can still find anything (no live trade of `symbol` since)."""
    return pipeline.last_trade_id.get(symbol) == after_id


def on_tail(pipeline: Pipeline, symbol: str, after_id: int, trades: Iterable[tuple[int, int]],
            receipt: float) -> None:
    """The exchange's (id, trade time) of a resumed symbol's trades after its checkpoint: those traded
    before the stream's newest event are a gap (repaired like the stream's), and the live ids continue
    after it."""
    seen = max(pipeline.last_event_ms.values(), default=None)
    span = tail_gap(pipeline.last_trade_id.get(symbol), after_id, trades, seen)
    if span is not None:
        pipeline._gap(symbol, span[0], span[1], int(receipt * 1000))
        pipeline.last_trade_id[symbol] = span[1]


def on_backfill_trade(pipeline: Pipeline, t: AggTrade, gap: GapToFill, receipt: float) -> bool:
    """A trade of `gap` fetched over REST: validated and filtered like a live one; True if kept.

    Separate from on_trade because the live id sequence must stay as it is (these ids are older
    than the last live one, which on_trade would reject as duplicates) and because the filter state
    to decide with is the gap's (see collector.pipeline.router.Gap). Rows are stored with the filter's save_reason, like live
    ones; the gaps table says which id ranges came from REST.
    """
    sym = t.s
    if sym not in pipeline.symbols:
        pipeline._reject("unknown_symbol", t)
        return False
    if not gap.from_id <= t.a <= gap.to_id or sym != gap.symbol:
        pipeline._reject("duplicate_or_old_id", t)
        return False
    checked = check_trade(t, receipt)
    if isinstance(checked, str):
        pipeline._reject(checked, t)
        return False
    price, qty = checked
    ts = t.T
    pipeline.backfilled["trades"] += 1
    usd = price * qty
    pipeline.activity[sym].add(ts, usd)
    state = gap.filter_state if gap.filter_state is not None else pipeline.trade_filter.symbol(sym)
    reason = state.decide(price, usd, ts)
    if reason is None:
        return False
    pipeline._keep_trade(t, usd, reason)
    return True


def on_backfill_kline(pipeline: Pipeline, symbol: str, row: list[Any], receipt: float) -> bool:
    """A closed 1m kline from REST /fapi/v1/klines (a list: open time, o, h, l, c, v, close time, quote
    volume, trades, taker buy volume, taker buy quote volume, ...); True if stored.

    Only minutes before a closed kline the stream already delivered are asked for, so every row is
    closed; the exchange's clock, not ours, says so (ours may differ, and does on the simulator)."""
    if symbol not in pipeline.symbols:
        pipeline._reject("unknown_symbol", row)
        return False
    try:
        t, o, h, low, c, v, close_t, qv, n, tv, tqv = row[:11]
        if not (isinstance(t, int) and isinstance(close_t, int) and isinstance(n, int)):
            raise ValueError("kline times and trade count must be integers")
        if abs(t - receipt * 1000.0) > MAX_EVENT_SKEW_MS:
            pipeline._reject("absurd_timestamp", row)
            return False
        encoded = pipeline.encoder.candle(t, symbol, close_t, o, h, low, c, v, qv, n, tv, tqv)
    except (ValueError, TypeError):
        pipeline._reject("bad_number", row)
        return False
    pipeline.backfilled["candles"] += 1
    if pipeline._store_candles:
        pipeline._add("candles_1m", encoded, t)
    return True


def record_gap(pipeline: Pipeline, kind: str, symbol: str, from_id: int, to_id: int, detected_ms: int,
               state: str, reason: str, updated_ms: int, filled_ms: int | None = None) -> None:
    """Store one version of a gap's row (collector.feed.backfill: detected, filling, filled, unfillable).

    Sent like any row; the writer keeps the most advanced version per gap (collector.db.gaps_repo.upsert_gaps_sql).
    """
    if kind == "trades" and state in ("filled", "unfillable"):
        pipeline.backfilled["gaps_filled" if state == "filled" else "gaps_unfilled"] += 1
    pipeline._add("gaps", pipeline.encoder.gap(symbol, from_id, to_id, detected_ms, filled_ms, kind=kind,
                                               state=state, reason=reason, updated_at_ms=updated_ms), detected_ms)
