"""collector.pipeline.flush: when a worker's pending rows go to the writer, with the time passed in."""

from __future__ import annotations

from collector.feed.wire import AggTrade
from collector.pipeline.encode import Batch
from collector.pipeline.flush import FlushPolicy
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter

T0 = 1_767_225_600_000


def test_a_table_is_due_its_hold_after_its_first_row() -> None:
    p = FlushPolicy(hold_ms=50)
    assert p.next_ms() is None and p.due(T0) == []
    p.started("trades", T0)
    p.started("trades", T0 + 30)  # later rows of the same batch do not restart the hold
    p.started("funding", T0 + 20)
    assert p.next_ms() == T0 + 50
    assert p.due(T0 + 49) == []
    assert p.due(T0 + 50) == ["trades"]
    p.sent("trades")
    assert p.next_ms() == T0 + 70 and p.due(T0 + 69) == [] and p.due(T0 + 70) == ["funding"]
    p.sent("funding")
    p.sent("funding")  # a size-triggered send and a timer may both report it
    assert p.next_ms() is None
    p.started("trades", T0 + 100)  # a new batch starts a new hold
    assert p.next_ms() == T0 + 150


def test_the_pipeline_holds_rows_from_the_first_not_from_a_later_tick() -> None:
    """The hold starts when the first row is added (clock read once per batch), so a timer firing late
    or a tick that happens to come later cannot stretch it: the old rule started it at the first tick."""
    now = [T0]
    out: list[Batch] = []
    pipe = Pipeline(["BTCUSDT"], ["trades"], TradeFilter(FilterParams(keep_all=True)), out.append,
                    batch_rows=3, flush_interval_ms=50, clock_ms=lambda: now[0])
    first: list[int | None] = []
    pipe.on_first_row = lambda: first.append(pipe.next_flush_ms())

    def trade(a: int) -> AggTrade:
        return AggTrade(E=T0, s="BTCUSDT", a=a, p="100", q="1", f=a, l=a, T=T0, m=False)

    pipe.on_trade(trade(1), T0 / 1000)
    now[0] = T0 + 40
    pipe.on_trade(trade(2), T0 / 1000)
    assert first == [T0 + 50]  # told once, with the deadline already known
    pipe.flush_due(T0 + 49)
    assert out == []
    pipe.flush_due(T0 + 50)
    assert [(b.rows, b.created_ms) for b in out] == [(2, T0 + 50)]
    assert pipe.next_flush_ms() is None
    now[0] = T0 + 60
    for a in (3, 4, 5):  # batch_rows reached: sent at once, and its hold forgotten
        pipe.on_trade(trade(a), T0 / 1000)
    assert [b.rows for b in out] == [2, 3] and pipe.next_flush_ms() is None
    pipe.flush_interval_ms = 10  # SIGHUP
    pipe.on_trade(trade(6), T0 / 1000)
    assert pipe.next_flush_ms() == T0 + 70
