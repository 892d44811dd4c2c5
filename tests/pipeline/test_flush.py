"""collector.pipeline.flush: when a worker's pending rows go to the writer, with the time passed in."""

from __future__ import annotations

from collector.feed.wire import AggTrade
from collector.pipeline.batches import Batch
from collector.pipeline.flush import FlushPolicy
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter

T0 = 1_767_225_600_000


def test_a_quiet_table_goes_at_once_a_busy_one_once_per_hold() -> None:
    p = FlushPolicy(hold_ms=50)
    assert p.next_ms() is None and p.due(T0) == []
    p.started("trades", T0)
    assert p.due(T0) == ["trades"] and p.next_ms() == T0  # never sent: no reason to wait
    p.sent("trades", T0 + 1)
    assert p.next_ms() is None
    p.started("trades", T0 + 10)  # 9 ms after the last send: waits for the hold since that send
    p.started("trades", T0 + 30)  # later rows of the same batch change nothing
    assert p.due_at("trades") == T0 + 51
    assert p.due(T0 + 50) == [] and p.due(T0 + 51) == ["trades"]
    p.started("funding", T0 + 20)  # another table is spaced on its own
    assert p.next_ms() == T0 + 20 and p.due(T0 + 20) == ["funding"]
    p.sent("trades", T0 + 51)
    p.sent("funding", T0 + 52)
    p.started("trades", T0 + 200)  # a quiet stream: long after the hold, at once again
    assert p.due(T0 + 200) == ["trades"]


def test_a_row_waits_at_most_the_hold() -> None:
    """Whatever the timing of sends and rows, a batch may go by its first row's time + hold_ms."""
    p = FlushPolicy(hold_ms=50)
    for last_sent in range(0, 100, 7):
        for first_row in range(last_sent, last_sent + 120, 11):
            p.sent("trades", T0 + last_sent)
            p.started("trades", T0 + first_row)
            at = p.due_at("trades")
            assert at is not None and T0 + first_row <= at <= T0 + first_row + 50
            assert at == max(T0 + first_row, T0 + last_sent + 50)


def test_the_pipeline_sends_quiet_rows_at_once_and_spaces_busy_ones() -> None:
    now = [T0]
    out: list[Batch] = []
    pipe = Pipeline(["BTCUSDT"], ["trades"], TradeFilter(FilterParams(keep_all=True)), out.append, venue="binance",
                    batch_rows=3, flush_interval_ms=50, clock_ms=lambda: now[0])
    told: list[int | None] = []
    pipe.on_first_row = lambda: told.append(pipe.next_flush_ms())

    def trade(a: int) -> None:
        pipe.on_trade(AggTrade(E=T0, s="BTCUSDT", a=a, p="100", q="1", f=a, l=a, T=T0, m=False), T0 / 1000)

    trade(1)
    trade(2)
    assert told == [T0]  # told once per batch, with the deadline already known: now
    pipe.flush_due(T0)  # the timer, after the read that brought both rows
    assert [(b.rows, b.created_ms) for b in out] == [(2, T0)]
    now[0] = T0 + 10
    trade(3)
    assert told[-1] == T0 + 50  # sent 10 ms ago: held until 50 ms after that send
    pipe.flush_due(T0 + 49)
    assert len(out) == 1
    pipe.flush_due(T0 + 50)
    assert [b.rows for b in out] == [2, 1] and pipe.next_flush_ms() is None
    now[0] = T0 + 60
    for a in (4, 5, 6):  # batch_rows reached: sent at once, and spaces the next batch
        trade(a)
    assert [b.rows for b in out] == [2, 1, 3] and pipe.next_flush_ms() is None
    trade(7)
    assert pipe.next_flush_ms() == T0 + 110
    pipe.flush_interval_ms = 10  # SIGHUP
    assert pipe.next_flush_ms() == T0 + 70
