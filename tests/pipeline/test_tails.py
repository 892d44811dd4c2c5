"""A resumed symbol's tail: the ids it traded while no worker was subscribed are a gap even when the symbol
never trades again (collector.pipeline.tails), and the live sequence continues after them."""

from __future__ import annotations

from collector.feed.wire import AggTrade, MarkPrice
from collector.pipeline.batches import Batch
from collector.pipeline.router import Gap, Pipeline
from collector.pipeline.tails import CHECK_AFTER_MS, TailChecks, tail_gap
from collector.pipeline.trade_filter import FilterParams, TradeFilter

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
RECEIPT = T0 / 1000


def trade(a: int, s: str = "BTCUSDT", t: int = T0) -> AggTrade:
    return AggTrade(E=t + 5, s=s, a=a, p="100.0", q="1", f=2 * a, l=2 * a, T=t, m=False)


def rest(ids: range, t0: int = T0 - 10_000) -> list[tuple[int, int]]:
    """The exchange's (id, trade time) of `ids`, 100 ms apart from t0."""
    return [(a, t0 + 100 * i) for i, a in enumerate(ids)]


def test_tail_gap_is_the_ids_traded_before_the_newest_event_seen() -> None:
    assert tail_gap(100, 100, rest(range(101, 116)), T0) == (101, 115)
    # ids traded at or after the newest event the stream delivered are still on their way
    assert tail_gap(100, 100, rest(range(101, 116)), T0 - 10_000 + 500) == (101, 105)
    assert tail_gap(100, 100, [], T0) is None  # nothing traded meanwhile
    assert tail_gap(107, 100, rest(range(101, 116)), T0) is None  # a live trade came first: its own gap
    assert tail_gap(100, 100, rest(range(101, 116)), None) is None  # the stream has delivered nothing yet
    assert tail_gap(100, 100, [(101, T0 - 5), (103, T0 - 4)], T0) == (101, 101)  # consecutive ids only


def test_tails_are_due_once_after_the_delay_and_a_first_event() -> None:
    checks = TailChecks()
    checks.expect({}, T0)
    assert checks.due_ms is None
    checks.expect({"BTCUSDT": 10, "ETHUSDT": 20}, T0)
    assert checks.take_due(T0 + CHECK_AFTER_MS - 1, True) == {}
    assert checks.take_due(T0 + CHECK_AFTER_MS, False) == {}  # no stream yet: nothing to compare with
    assert checks.take_due(T0 + CHECK_AFTER_MS + 5000, True) == {"BTCUSDT": 10, "ETHUSDT": 20}
    assert checks.take_due(T0 + CHECK_AFTER_MS + 6000, True) == {} and checks.due_ms is None


class Resumed:
    """A keep_all pipeline resumed at BTCUSDT id 100 and ETHUSDT id 200, recording gaps."""

    def __init__(self) -> None:
        self.out: list[Batch] = []
        self.gaps: list[Gap] = []
        self.pipe = Pipeline(["BTCUSDT", "ETHUSDT"], ["trades", "funding"], TradeFilter(FilterParams(keep_all=True)),
                             self.out.append, venue="binance", on_gap=self.gaps.append)
        self.pipe.last_trade_id.update({"BTCUSDT": 100, "ETHUSDT": 200})  # what a checkpoint restores
        self.pipe.tails.expect(self.pipe.last_trade_id, T0)


def test_a_quiet_resumed_symbol_gets_its_missed_ids_as_a_gap_without_another_trade() -> None:
    r = Resumed()
    r.pipe.on_mark_price(MarkPrice(E=T0, s="ETHUSDT", p="100"), RECEIPT)  # the stream runs; BTCUSDT is quiet
    assert r.pipe.tail_open("BTCUSDT", 100)
    r.pipe.on_tail("BTCUSDT", 100, rest(range(101, 116)), RECEIPT)
    assert [(g.symbol, g.from_id, g.to_id, g.detected_ms) for g in r.gaps] == [("BTCUSDT", 101, 115, T0)]
    assert not r.pipe.tail_open("BTCUSDT", 100)
    # live trades continue after the tail: the gap's ids are not taken twice, the next one is no new gap
    r.pipe.on_trade(trade(115), RECEIPT)
    r.pipe.on_trade(trade(116), RECEIPT)
    assert r.pipe.rejected["duplicate_or_old_id"] == 1 and len(r.gaps) == 1


def test_a_live_trade_first_leaves_the_tail_to_the_stream() -> None:
    r = Resumed()
    r.pipe.on_trade(trade(205, "ETHUSDT"), RECEIPT)  # the stream's own gap 201..204
    assert not r.pipe.tail_open("ETHUSDT", 200)
    r.pipe.on_tail("ETHUSDT", 200, rest(range(201, 211)), RECEIPT)  # an answer racing the live trade
    assert [(g.from_id, g.to_id) for g in r.gaps] == [(201, 204)]
    assert r.pipe.last_trade_id["ETHUSDT"] == 205
