"""Checkpoints: each step's snapshot/restore on its own, the pipeline's round trip, what is published when.

The pattern of every round-trip test: one process runs a whole event sequence; a second is stopped at a
point, its snapshot restored into a third, which runs the rest. The third must emit exactly what the
first emitted for the rest: a successor continues, it does not start again.
"""

from __future__ import annotations

import math
import random
import uuid

import psycopg
import pytest

from collector.db.schema import ensure_schema
from collector.feed.open_interest import PollPositions
from collector.feed.wire import AggTrade, Kline, KlineBody, MarkPrice, OpenInterest
from collector.pipeline.batches import Batch
from collector.pipeline.limits import MinInterval
from collector.pipeline.router import Pipeline
from collector.pipeline.tiers import TierAssignment
from collector.pipeline.trade_filter import FilterParams, SymbolFilter, TradeFilter
from collector.runtime import checkpoint_block, checkpoints, handover
from collector.runtime.checkpoint_block import CheckpointBlock
from collector.runtime.checkpoints import (
    SNAPSHOT_EVERY_S,
    AckedCheckpoints,
    Checkpointer,
    SymbolCheckpoint,
    restore,
    snapshot,
)
from collector.runtime.handover import HandoverBuffer
from collector.transport.link import WriterLink

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


# --- each step on its own ------------------------------------------------------------------------------------


def _sequence(seed: int, n: int = 3000) -> list[tuple[float, float, int]]:
    """(price, usd, ts) of a random walk with a trade every 0-4 s and occasional big trades."""
    rng = random.Random(seed)
    price, ts, out = 100.0, T0, []
    for _ in range(n):
        price *= 1 + rng.gauss(0, 0.001)
        ts += rng.randint(0, 4000)
        out.append((price, rng.lognormvariate(6, 1.5), ts))
    return out


def _filter() -> SymbolFilter:
    return SymbolFilter(1, 20_000.0, 60_000, 0.5)


@pytest.mark.parametrize("cut", [0, 1, 500, 2999])
def test_trade_filter_resumes_its_last_kept_price_and_time(cut: int) -> None:
    seq = _sequence(cut)
    whole = _filter()
    expected = [whole.decide(*t) for t in seq]
    first = _filter()
    for t in seq[:cut]:
        first.decide(*t)
    successor = _filter()
    successor.restore(*first.snapshot())
    assert [successor.decide(*t) for t in seq[cut:]] == expected[cut:]
    # without the restore, the successor keeps its first trade as a time sample: the fault being fixed
    assert _filter().decide(*seq[cut]) == "time_interval"


def test_trade_filter_snapshot_before_any_keep_is_empty() -> None:
    f = _filter()
    price, ts = f.snapshot()
    assert math.isnan(price) and ts is None
    g = _filter()
    g.restore(price, ts)
    assert g.decide(100.0, 1.0, T0) == "time_interval"


def test_funding_gate_resumes_its_last_minute() -> None:
    gate = MinInterval(60_000)
    assert gate.accept("X", T0 + 1_000)
    successor = MinInterval(60_000)
    successor.restore("X", gate.last_accepted_ms("X"))  # type: ignore[arg-type]
    assert not successor.accept("X", T0 + 19_000)  # same minute: the predecessor's row stands
    assert not successor.accept("X", T0 - 5_000)  # older
    assert successor.accept("X", T0 + 60_000)
    assert MinInterval(60_000).last_accepted_ms("X") is None


def test_funding_gate_restore_never_steps_back() -> None:
    gate = MinInterval(60_000)
    gate.accept("X", T0 + 120_000)
    gate.restore("X", T0)
    assert not gate.accept("X", T0 + 150_000)


def test_poll_positions_resume_each_symbols_schedule() -> None:
    syms = ["A", "B", "C", "D"]
    fresh = PollPositions(syms, 240_000, T0)
    assert [fresh.due_ms(s) for s in syms] == [T0, T0 + 60_000, T0 + 120_000, T0 + 180_000]
    successor = PollPositions(syms, 240_000, T0 + 500_000)
    successor.restore("D", T0 + 300_000)  # polled 200 s ago: due in 40 s
    successor.restore("C", T0 + 100_000)  # overdue: first
    successor.restore("B", T0 + 200_000)  # overdue, but less
    assert successor.next() == ("C", T0 + 340_000)
    successor.polled("C", T0 + 500_000)
    assert successor.next() == ("B", T0 + 440_000)
    successor.polled("B", T0 + 500_000)
    assert successor.next() == ("A", T0 + 500_000)  # never polled: its place in the spread
    successor.polled("A", T0 + 500_000)
    assert successor.next() == ("D", T0 + 540_000)


def test_a_failed_poll_is_due_again_soon() -> None:
    p = PollPositions(["A"], 240_000, T0)
    p.polled("A", T0)
    p.failed("A", T0 + 100, 5_000)
    assert p.next() == ("A", T0 + 5_100)


# --- the pipeline ----------------------------------------------------------------------------------------------


def _pipeline(out: list[Batch]) -> Pipeline:
    f = TradeFilter(FilterParams(price_change_pct=0.5, tier_intervals_s=(60, 60, 60, 60)))
    f.set_tiers({s: TierAssignment(0, 50_000.0, 5_000.0, 1.0) for s in SYMBOLS})
    return Pipeline(SYMBOLS, ["trades", "funding", "candles_1m", "open_interest"], f, out.append, venue="binance")


def _events(seed: int) -> list[tuple[str, object]]:
    """A few minutes of trades, mark prices, closed klines and open interest for both symbols."""
    rng = random.Random(seed)
    price = {s: 100.0 for s in SYMBOLS}
    ids = {s: 1000 for s in SYMBOLS}
    out: list[tuple[str, object]] = []
    for sec in range(300):
        t = T0 + sec * 1000
        for s in SYMBOLS:
            for _ in range(rng.randint(0, 3)):
                price[s] *= 1 + rng.gauss(0, 0.0015)
                ids[s] += 1
                out.append(("on_trade", AggTrade(E=t, s=s, a=ids[s], p=f"{price[s]:.4f}",
                                                 q=f"{rng.lognormvariate(1, 1.5):.3f}", f=1, l=1, T=t, m=False)))
            out.append(("on_mark_price", MarkPrice(E=t + 7, s=s, p="100", i="100", r="0.0001", T=T0 + 8 * 3600_000)))
            if sec % 60 == 0 and sec:
                body = KlineBody(t=t - 60_000, T=t - 1, s=s, i="1m", o="1", c="1", h="1", l="1", v="1", n=1, q="1",
                                 V="1", Q="1", x=True)
                out.append(("on_kline", Kline(E=t, s=s, k=body)))
            if sec % 45 == 3:
                out.append(("on_open_interest", OpenInterest(symbol=s, openInterest="5", time=t)))
    return out


def _rows(batches: list[Batch]) -> dict[str, bytes]:
    by: dict[str, bytes] = {}
    for b in batches:
        by[b.table] = by.get(b.table, b"") + b.data
    return by


def _run(p: Pipeline, events: list[tuple[str, object]]) -> None:
    for name, ev in events:
        getattr(p, name)(ev, T0 / 1000)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pipeline_round_trip_continues_exactly(seed: int) -> None:
    events = _events(seed)
    cut = random.Random(seed).randrange(len(events) // 4, 3 * len(events) // 4)
    whole_out: list[Batch] = []
    whole = _pipeline(whole_out)
    _run(whole, events[:cut])
    whole.flush_all()
    before = len(whole_out)
    _run(whole, events[cut:])
    whole.flush_all()

    first_out: list[Batch] = []
    first = _pipeline(first_out)
    _run(first, events[:cut])
    first.flush_all()
    snap = snapshot(first, T0)
    succ_out: list[Batch] = []
    successor = _pipeline(succ_out)
    positions = PollPositions(SYMBOLS, 240_000, T0)
    assert restore(successor, snap, positions) == len(SYMBOLS)
    _run(successor, events[cut:])
    successor.flush_all()
    assert _rows(succ_out) == _rows(whole_out[before:])
    assert not successor.gaps
    for s in SYMBOLS:
        if s in first.last_oi_poll:
            assert positions.last[s] == first.last_oi_poll[s]


def test_restore_takes_only_the_pipelines_symbols() -> None:
    p = _pipeline([])
    n = restore(p, {"XRPUSDT": SymbolCheckpoint(last_trade_id=5), "BTCUSDT": SymbolCheckpoint(last_trade_id=7)})
    assert n == 1 and p.last_trade_id == {"BTCUSDT": 7}


# --- what is published, and when -----------------------------------------------------------------------------


def test_acked_checkpoints_promote_only_acknowledged_snapshots() -> None:
    a = AckedCheckpoints()
    s1, s2 = {"X": SymbolCheckpoint(last_trade_id=1)}, {"X": SymbolCheckpoint(last_trade_id=2)}
    a.record(3, s1)
    a.record(5, s2)
    assert not a.promote(2) and a.durable == {}
    assert a.promote(4) and a.durable == s1
    assert not a.promote(4)
    assert a.promote(9) and a.durable == s2


def test_waiting_snapshots_stay_bounded_when_nothing_is_acknowledged() -> None:
    a = AckedCheckpoints()
    for i in range(1000):
        a.record(i // 3, {"X": SymbolCheckpoint(last_trade_id=i)})  # three snapshots per batch
    assert len(a) == checkpoints.MAX_WAITING
    assert a.promote(100) and a.durable["X"].last_trade_id == 302  # the newest of batch 100: no later
    assert a.promote(10_000) and a.durable["X"].last_trade_id == 999


def test_block_round_trip_and_a_writer_that_died_mid_write() -> None:
    block = CheckpointBlock.create(4)
    try:
        c = SymbolCheckpoint(123, T0, T0 + 60_000, 101.5, T0 + 5, T0 + 7, T0 + 9)
        block.write(2, c)
        assert block.read(2) == c and block.read(0) is None
        empty = SymbolCheckpoint(updated_ms=1)
        block.write(1, empty)
        got = block.read(1)
        assert got is not None and got.last_trade_id is None and math.isnan(got.filter_price)
        other = CheckpointBlock.attach(block.name)
        assert other.read_all({"A": 2, "B": 3}) == {"A": c}
        other.close()
        block._words[block._off(2) >> 3] += 1  # seq left odd: the writer died between its two stores
        assert block.read(2) is None
        block.write(2, c)  # the next owner repairs it
        assert block.read(2) == c
    finally:
        block.close()


@pytest.fixture
def wired() -> tuple[Checkpointer, Pipeline, WriterLink, CheckpointBlock]:
    block = CheckpointBlock.create(4)
    link = WriterLink("/nonexistent")
    holder: list[Checkpointer] = []

    def emit(batch: Batch) -> None:
        holder[0].before_send(batch)
        link.send(batch)

    f = TradeFilter(FilterParams(tier_intervals_s=(60, 60, 60, 60)))
    p = Pipeline(SYMBOLS, ["trades", "funding"], f, emit, venue="binance")
    clock = [T0 / 1000]
    holder.append(Checkpointer(block, {"BTCUSDT": 0, "ETHUSDT": 1}, p, link, clock=lambda: clock[0]))
    yield holder[0], p, link, block
    block.close()


def _trade(a: int, t: int = T0, s: str = "BTCUSDT", p: str = "100") -> AggTrade:
    return AggTrade(E=t, s=s, a=a, p=p, q="1", f=1, l=1, T=t, m=False)


def test_only_what_the_writer_acknowledged_is_published(wired) -> None:  # noqa: ANN001
    ck, p, link, block = wired
    p.on_trade(_trade(10), T0 / 1000)
    ck.tick(T0 / 1000)  # snapshot at seq 1 (the trade's batch), not acknowledged
    got = block.read(0)  # only the session's start (test_a_symbols_first_trade_publishes_where_it_started)
    assert got is not None and got.last_trade_id == 9 and got.filter_ts_ms is None
    p.on_trade(_trade(11, T0 + 1, p="101"), T0 / 1000)  # kept (price_change): a second batch
    ck.tick(T0 / 1000 + SNAPSHOT_EVERY_S)  # snapshot at seq 2
    link._ack(1)
    ck.tick(T0 / 1000 + SNAPSHOT_EVERY_S + 0.1)
    got = block.read(0)
    assert got is not None and got.last_trade_id == 10 and got.filter_ts_ms == T0
    link._ack(2)
    ck.tick(T0 / 1000 + SNAPSHOT_EVERY_S + 0.2)
    assert block.read(0).last_trade_id == 11  # type: ignore[union-attr]


def test_funding_minutes_are_published_before_the_writer_gets_them(wired) -> None:  # noqa: ANN001
    ck, p, link, block = wired
    p.on_mark_price(MarkPrice(E=T0 + 1000, s="BTCUSDT", p="1", r="0.0001"), T0 / 1000)
    p.flush_all()  # the funding batch goes out: the gate's minute is in shared memory already
    assert link.last_seq == 1 and link.acked_through == 0
    got = block.read(0)
    assert got is not None and got.funding_ms == T0
    # a later acknowledged snapshot from before that minute does not step it back
    ck.acked.record(0, {"BTCUSDT": SymbolCheckpoint(last_trade_id=3, updated_ms=1)})
    ck.tick(T0 / 1000 + 5)
    assert block.read(0).funding_ms == T0  # type: ignore[union-attr]


def test_final_checkpoint_is_the_exact_state(wired) -> None:  # noqa: ANN001
    ck, p, link, block = wired
    for a in range(1, 6):
        p.on_trade(_trade(a, T0 + a), T0 / 1000)
    p.flush_all()
    for s in range(1, link.last_seq + 1):
        link._ack(s)
    ck.final()
    assert block.read(0).last_trade_id == 5  # type: ignore[union-attr]


def test_handover_replays_what_was_held_skipping_what_the_predecessor_did() -> None:
    events = _events(7)
    whole_out: list[Batch] = []
    whole = _pipeline(whole_out)
    _run(whole, events)
    whole.flush_all()
    # the predecessor processed up to `stop`; the successor connected at `joined` and held from there
    joined, stop = len(events) // 3, len(events) // 2
    pred_out: list[Batch] = []
    pred = _pipeline(pred_out)
    _run(pred, events[:stop])
    pred.flush_all()
    held = HandoverBuffer()
    _run(held, events[joined:])  # type: ignore[arg-type]
    succ_out: list[Batch] = []
    succ = _pipeline(succ_out)
    restore(succ, snapshot(pred, T0))
    skipped = held.release(succ)
    succ.flush_all()
    assert skipped == sum(1 for n, _ in events[joined:stop] if n == "on_trade")
    assert _rows(pred_out + succ_out)["trades"] == _rows(whole_out)["trades"]
    assert _rows(pred_out + succ_out)["funding"] == _rows(whole_out)["funding"]
    assert succ.rejected["duplicate_or_old_id"] == 0 and not succ.gaps


def test_handover_buffer_stops_holding_when_too_much_or_too_long() -> None:
    now = [0.0]
    h = HandoverBuffer(clock=lambda: now[0])
    assert not h.overflowing()
    now[0] = handover.HANDOVER_MAX_S + 1
    assert h.overflowing()


def test_handover_is_ready_once_every_symbol_sent_something_or_after_settling() -> None:
    now = [0.0]
    h = HandoverBuffer(SYMBOLS, clock=lambda: now[0])
    assert not h.ready()
    h.on_trade(_trade(1), 0.0)
    assert not h.ready()  # ETHUSDT not heard from yet
    h.on_mark_price(MarkPrice(E=T0, s="ETHUSDT", p="1"), 0.0)
    assert h.ready()
    quiet = HandoverBuffer(SYMBOLS, clock=lambda: now[0])
    quiet.on_trade(_trade(1), 0.0)
    now[0] = handover.HANDOVER_SETTLE_S
    assert quiet.ready()  # a symbol silent this long has nothing to hand over


def test_ready_words_are_per_worker() -> None:
    block = CheckpointBlock.create(2)
    try:
        block.set_ready(3, T0)
        block.write(0, SymbolCheckpoint(7, updated_ms=1))
        assert (block.ready_ms(3), block.ready_ms(2), block.ready_ms(checkpoint_block.MAX_WORKERS)) == (T0, 0, 0)
        assert block.read(0).last_trade_id == 7  # type: ignore[union-attr]
    finally:
        block.close()


def test_database_copy_round_trip(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres")
        a = SymbolCheckpoint(5, T0, T0 + 60_000, 1.5, T0 + 1, T0 + 2, T0 + 3)
        b = SymbolCheckpoint(updated_ms=T0)
        assert checkpoints.save(conn, {"AUSDT": a, "BUSDT": b, "CUSDT": SymbolCheckpoint()}, venue="binance") == 2
        older = SymbolCheckpoint(1, updated_ms=T0 - 1)
        checkpoints.save(conn, {"AUSDT": older}, venue="binance")  # an older copy never overwrites a newer one
        got = checkpoints.load(conn, venue="binance")
        assert got["AUSDT"] == a and set(got) == {"AUSDT", "BUSDT"}
        assert math.isnan(got["BUSDT"].filter_price) and got["BUSDT"].last_trade_id is None
        assert set(checkpoints.load(conn, ["BUSDT", uuid.uuid4().hex], venue="binance")) == {"BUSDT"}


def test_a_successor_resumes_ids_only_from_a_recent_checkpoint(wired) -> None:  # noqa: ANN001
    ck, p, _, block = wired
    old = T0 - checkpoints.RESUME_IDS_MAX_AGE_MS - 1  # the clock of `wired` stands at T0
    block.write(0, SymbolCheckpoint(5, T0 - 60_000, T0 - 120_000, 100.0, T0 - 1, updated_ms=old))
    block.write(1, SymbolCheckpoint(9, updated_ms=T0 - 1000))
    assert ck.resume(max_ids_age_ms=checkpoints.RESUME_IDS_MAX_AGE_MS) == 2
    # an hour-old position would make the downtime one huge gap; the rest still holds
    assert p.last_trade_id == {"ETHUSDT": 9} and p.last_kline_open == {}
    assert p.funding_gate.last_accepted_ms("BTCUSDT") == T0 - 120_000
    assert p.trade_filter.symbol("BTCUSDT").snapshot() == (100.0, T0 - 1)


def _kline(open_ms: int, s: str = "BTCUSDT") -> Kline:
    body = KlineBody(t=open_ms, T=open_ms + 59_999, s=s, i="1m", o="1", c="1", h="1", l="1", v="1", n=1, x=True,
                     q="1", V="1", Q="1")
    return Kline(E=open_ms + 60_000, s=s, k=body)


def test_a_symbols_first_trade_publishes_where_it_started(wired) -> None:  # noqa: ANN001
    """Fresh start: the first trade's position is in shared memory before any batch left (a kill -9 before the
    first acknowledged snapshot must not leave a successor without a position), and no later snapshot taken
    before that trade takes it back."""
    ck, p, link, block = wired
    p.on_trade(_trade(10), T0 / 1000)
    assert link.last_seq == 0  # nothing handed to the writer yet
    got = block.read(0)
    assert got is not None and got.last_trade_id == 9 and got.updated_ms == T0
    assert block.read(1) is None  # ETHUSDT: nothing received, nothing published
    # an acknowledged snapshot from before that trade (no id for BTCUSDT) does not take the start back
    ck.acked.record(0, {"BTCUSDT": SymbolCheckpoint(updated_ms=1)})
    ck.tick(T0 / 1000 + 0.1)
    assert block.read(0).last_trade_id == 9  # type: ignore[union-attr]
    p.on_trade(_trade(11, T0 + 1), T0 / 1000)  # the second trade: no new start
    assert block.read(0).last_trade_id == 9  # type: ignore[union-attr]


def test_a_successor_repairs_from_the_first_trade_its_predecessor_saw(wired) -> None:  # noqa: ANN001
    ck, p, link, block = wired
    p.on_trade(_trade(10), T0 / 1000)  # ... then kill -9 before any acknowledgement
    gaps: list[tuple[str, int, int]] = []
    f = TradeFilter(FilterParams(tier_intervals_s=(60, 60, 60, 60)))
    successor = Pipeline(SYMBOLS, ["trades", "funding"], f, lambda b: None, venue="binance",
                         on_gap=lambda g: gaps.append((g.symbol, g.from_id, g.to_id)))
    restore(successor, block.read_all({"BTCUSDT": 0, "ETHUSDT": 1}))
    successor.on_trade(_trade(15, T0 + 5), T0 / 1000)
    assert gaps == [("BTCUSDT", 10, 14)]


def test_a_symbols_first_closed_kline_publishes_the_minute_before_it() -> None:
    block = CheckpointBlock.create(4)
    try:
        link = WriterLink("/nonexistent")
        f = TradeFilter(FilterParams(tier_intervals_s=(60, 60, 60, 60)))
        p = Pipeline(SYMBOLS, ["candles_1m"], f, link.send, venue="binance")
        Checkpointer(block, {"BTCUSDT": 0, "ETHUSDT": 1}, p, link, clock=lambda: T0 / 1000)
        p.on_kline(_kline(T0 - 60_000), T0 / 1000)
        got = block.read(0)
        assert got is not None and got.last_kline_open_ms == T0 - 120_000 and got.last_trade_id is None
        holes: list[tuple[str, int, int]] = []
        successor = Pipeline(SYMBOLS, ["candles_1m"], f, lambda b: None, venue="binance",
                             on_candle_gap=lambda s, a, b: holes.append((s, a, b)))
        restore(successor, block.read_all({"BTCUSDT": 0, "ETHUSDT": 1}))
        successor.on_kline(_kline(T0 + 60_000), T0 / 1000 + 60)
        assert holes == [("BTCUSDT", T0 - 60_000, T0)]
    finally:
        block.close()
