"""The times a symbol's liquidations were not received (collector.pipeline.liquidation_holes): the range a
hole covers, one row per symbol and hole, none for a fresh start or a hand-over, and what a checkpoint says
while a hole is open."""

from __future__ import annotations

import math

from collector.feed.wire import (
    AggTrade,
    ForceOrder,
    Kline,
    KlineBody,
    LiquidationOrder,
    MarkPrice,
    OpenInterest,
)
from collector.pipeline.batches import Batch
from collector.pipeline.liquidation_holes import LATE_MS, LiquidationHoles, hole
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter
from collector.runtime.checkpoints import SymbolCheckpoint, restore, snapshot
from collector.runtime.handover import HandoverBuffer

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, the exchange's clock
NOW = T0 + 123  # the local clock the pipeline stamps detected_at/updated_at with
RECEIPT = T0 / 1000


def test_a_hole_runs_from_the_checkpoint_less_the_late_margin_to_the_first_event() -> None:
    assert hole(T0, T0 + 40_000) == (T0 - LATE_MS, T0 + 40_000)
    assert hole(T0, T0 + 1) == (T0 - LATE_MS, T0 + 1)
    # the successor received before its predecessor stopped (a hand-over): nothing was missed
    assert hole(T0, T0) is None
    assert hole(T0, T0 - 5_000) is None
    assert hole(T0, T0 + 10, late_ms=0) == (T0, T0 + 10)


def test_holes_close_once_per_symbol_and_checkpoints_keep_an_open_one() -> None:
    h = LiquidationHoles()
    assert h.seen("BTCUSDT", T0) is None  # nothing resumed: a fresh start records nothing
    h.resume("BTCUSDT", T0)
    h.resume("ETHUSDT", T0 + 500)
    h.resume("ETHUSDT", T0 + 900)  # two records of one symbol: the hole starts at the older
    # while open, a checkpoint still says the predecessor's time, whatever the stream delivered since
    assert h.live_ms("BTCUSDT", T0 + 60_000) == T0
    assert h.seen("BTCUSDT", T0 + 30_000) == (T0 - LATE_MS, T0 + 30_000)
    assert h.seen("BTCUSDT", T0 + 31_000) is None  # one row per hole, not per event
    assert h.live_ms("BTCUSDT", T0 + 60_000) == T0 + 60_000
    assert h.live_ms("XRPUSDT", None) is None
    assert h.open == {"ETHUSDT": T0 + 500}


def kline(s: str, t: int) -> Kline:
    return Kline(E=t + 60_000, s=s, k=KlineBody(t=t, T=t + 59_999, s=s, i="1m", o="1", c="1", h="1", l="1", v="1",
                                                n=1, x=True, q="1", V="1", Q="1"))


def liquidation(s: str, t: int) -> ForceOrder:
    return ForceOrder(E=t + 3, o=LiquidationOrder(s, "SELL", "LIMIT", "IOC", "2", "100", "99", "FILLED", "2", "2", t))


class Resumed:
    """A pipeline given a predecessor's checkpoints, as a successor's Checkpointer.resume does."""

    def __init__(self, data_types: tuple[str, ...] = ("trades", "funding", "liquidations", "candles_1m"),
                 live: dict[str, int | None] | None = None) -> None:
        self.out: list[Batch] = []
        self.pipe = Pipeline(["BTCUSDT", "ETHUSDT"], list(data_types), TradeFilter(FilterParams(keep_all=True)),
                             self.out.append, venue="binance", clock_ms=lambda: NOW)
        live = {"BTCUSDT": T0, "ETHUSDT": T0} if live is None else live
        restore(self.pipe, {s: SymbolCheckpoint(updated_ms=NOW, live_ms=ms) for s, ms in live.items()})

    def gap_rows(self) -> bytes:
        self.pipe.flush_all(NOW)
        return b"".join(b.data for b in self.out if b.table == "gaps")

    def want(self, *holes: tuple[str, int, int]) -> bytes:
        return b"".join(self.pipe.encoder.gap(s, lo, hi, NOW, kind="liquidations", state="unfillable",
                                              reason="no liquidation history on Binance", updated_at_ms=NOW)
                        for s, lo, hi in holes)


def test_a_resumed_symbol_records_its_hole_at_its_own_first_stream_event() -> None:
    r = Resumed()
    # neither a kline (another socket on OKX) nor open interest (polled over REST on Binance) proves the
    # liquidation stream delivers
    r.pipe.on_kline(kline("BTCUSDT", T0 + 60_000), RECEIPT)
    r.pipe.on_open_interest(OpenInterest("BTCUSDT", "5", T0 + 70_000), RECEIPT)
    # nor a mark price, which may come on subscription stamped with when it last changed
    r.pipe.on_mark_price(MarkPrice(E=T0 + 75_000, s="BTCUSDT", p="100"), RECEIPT)
    r.pipe.on_trade(AggTrade(E=T0 + 80_005, s="BTCUSDT", a=1, p="100", q="1", f=1, l=1, T=T0 + 80_000, m=False),
                    RECEIPT)
    r.pipe.on_trade(AggTrade(E=T0 + 81_005, s="BTCUSDT", a=2, p="100", q="1", f=2, l=2, T=T0 + 81_000, m=False),
                    RECEIPT)  # closed already: no second row
    r.pipe.on_liquidation(liquidation("ETHUSDT", T0 + 90_000), RECEIPT)
    r.pipe.on_liquidation(liquidation("ETHUSDT", T0 + 95_000), RECEIPT)
    assert r.gap_rows() == r.want(("BTCUSDT", T0 - LATE_MS, T0 + 80_000), ("ETHUSDT", T0 - LATE_MS, T0 + 90_000))
    assert r.pipe.rows["liquidations"] == 2  # the liquidation that closed the hole is stored like any


def test_an_open_hole_stays_in_the_successors_checkpoint() -> None:
    r = Resumed()
    r.pipe.on_liquidation(liquidation("ETHUSDT", T0 + 50_000), RECEIPT)
    snap = snapshot(r.pipe, NOW)
    # BTCUSDT has shown nothing yet: whoever owns it next records its hole from the predecessor's time
    assert (snap["BTCUSDT"].live_ms, snap["ETHUSDT"].live_ms) == (T0, T0 + 50_000)
    nxt = Resumed(live={s: c.live_ms for s, c in snap.items()})
    nxt.pipe.on_liquidation(liquidation("BTCUSDT", T0 + 70_000), RECEIPT)
    assert nxt.gap_rows() == nxt.want(("BTCUSDT", T0 - LATE_MS, T0 + 70_000))


def test_no_hole_for_a_fresh_start_nor_without_liquidations() -> None:
    fresh = Resumed(live={"BTCUSDT": None})  # a checkpoint from before live_ms existed, or none at all
    fresh.pipe.on_liquidation(liquidation("BTCUSDT", T0 + 50_000), RECEIPT)
    assert fresh.gap_rows() == b""
    untaken = Resumed(data_types=("trades", "funding"))  # nothing to miss, nothing recorded or checkpointed
    untaken.pipe.on_trade(AggTrade(E=T0 + 5, s="BTCUSDT", a=1, p="100", q="1", f=1, l=1, T=T0, m=False), RECEIPT)
    assert untaken.gap_rows() == b"" and snapshot(untaken.pipe, NOW)["BTCUSDT"].live_ms is None


def test_a_lost_stream_is_one_hole_per_symbol_however_often_it_drops_before_it_delivers() -> None:
    r = Resumed(live={})
    r.pipe.on_stream_lost()  # nothing received yet: nothing known to have been missed
    assert not r.pipe.liquidation_holes.open
    r.pipe.on_trade(AggTrade(E=T0 + 5, s="BTCUSDT", a=1, p="100", q="1", f=1, l=1, T=T0, m=False), RECEIPT)
    r.pipe.on_mark_price(MarkPrice(E=T0 + 900, s="ETHUSDT", p="100"), RECEIPT)
    r.pipe.on_stream_lost()  # the stream's newest event: the mark price
    r.pipe.on_mark_price(MarkPrice(E=T0 + 5_000, s="ETHUSDT", p="100"), RECEIPT)  # a mark price ends nothing
    r.pipe.on_stream_lost()  # dropped again before any trade or liquidation: the same hole
    r.pipe.on_trade(AggTrade(E=T0 + 9_005, s="BTCUSDT", a=2, p="100", q="1", f=2, l=2, T=T0 + 9_000, m=False),
                    RECEIPT)
    r.pipe.on_liquidation(liquidation("ETHUSDT", T0 + 12_000), RECEIPT)
    assert r.gap_rows() == r.want(("BTCUSDT", T0 + 900 - LATE_MS, T0 + 9_000), ("ETHUSDT", T0 + 900 - LATE_MS, T0 + 12_000))


def test_a_hand_over_replays_a_lost_stream_where_it_happened() -> None:
    held = HandoverBuffer(["BTCUSDT"])
    held.on_trade(AggTrade(E=T0 + 5, s="BTCUSDT", a=4, p="100", q="1", f=4, l=4, T=T0, m=False), RECEIPT)
    held.on_stream_lost()
    held.on_trade(AggTrade(E=T0 + 7_005, s="BTCUSDT", a=9, p="100", q="1", f=9, l=9, T=T0 + 7_000, m=False), RECEIPT)
    r = Resumed(live={"BTCUSDT": T0 + 10})  # the predecessor's final checkpoint: it received past trade 4
    r.pipe.last_trade_id["BTCUSDT"] = 3
    held.release(r.pipe)
    # no hole between the predecessor and the first held trade; one from that trade to the next
    assert r.gap_rows() == r.want(("BTCUSDT", T0 - LATE_MS, T0 + 7_000))


def test_a_hand_over_records_no_hole_even_when_the_held_trades_were_the_predecessors() -> None:
    held = HandoverBuffer(["BTCUSDT"])
    for a in (1, 2, 3):  # the successor held trades 1..3 while the predecessor still processed them
        held.on_trade(AggTrade(E=T0 + a, s="BTCUSDT", a=a, p="100", q="1", f=a, l=a, T=T0 - 10 + a, m=False),
                      RECEIPT)
    held.on_trade(AggTrade(E=T0 + 9, s="BTCUSDT", a=4, p="100", q="1", f=4, l=4, T=T0 + 5, m=False), RECEIPT)
    r = Resumed(live={"BTCUSDT": T0 - 7})
    r.pipe.last_trade_id["BTCUSDT"] = 3  # the predecessor's final checkpoint
    assert held.release(r.pipe) == 3
    assert r.gap_rows() == b"" and not r.pipe.liquidation_holes.open
    assert not math.isnan(r.pipe.trade_filter.symbol("BTCUSDT").snapshot()[0])  # trade 4 went through
