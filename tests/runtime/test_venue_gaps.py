"""A venue without REST repairs stores every gap its stream shows, as unfillable, when it is found."""

from __future__ import annotations

from collector.feed.wire import AggTrade, Kline, KlineBody
from collector.pipeline.encode import Batch
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter
from collector.runtime.venue_worker import record_gaps_unrepaired

T0 = 1_796_000_000_000


def _trade(a: int) -> AggTrade:
    return AggTrade(E=T0 + a, s="BTC-USDT-SWAP", a=a, p="100", q="1", f=a, l=a, T=T0 + a, m=False)


def _kline(open_ms: int) -> Kline:
    return Kline(E=open_ms + 60_000, s="BTC-USDT-SWAP", k=KlineBody(
        t=open_ms, T=open_ms + 59_999, s="BTC-USDT-SWAP", i="1m", o="1", c="1", h="1", l="1", v="1", n=-1, x=True,
        q="1", V="", Q=""))


def test_trade_and_candle_gaps_become_unfillable_rows() -> None:
    out: list[Batch] = []
    pipe = Pipeline(["BTC-USDT-SWAP"], ["trades", "candles_1m"], TradeFilter(FilterParams(keep_all=True)),
                    out.append, venue="okx")
    record_gaps_unrepaired(pipe, "okx")
    for a in (1, 2, 6):  # ids 3..5 never arrived
        pipe.on_trade(_trade(a), (T0 + a) / 1000)
    for m in (0, 3):  # minutes 1 and 2 never arrived
        pipe.on_kline(_kline(T0 // 60_000 * 60_000 + m * 60_000), (T0 + m * 60_000 + 60_000) / 1000)
    pipe.flush_all()
    gaps = [b for b in out if b.table == "gaps"]
    assert sum(b.rows for b in gaps) == 2
    body = b"".join(b.data for b in gaps)
    assert body.count(b"unfillable") == 2 and body.count(b"no REST repair for okx yet") == 2
    assert pipe.backfilled["gaps_unfilled"] == 1 and pipe.rejected["gap"] == 1
