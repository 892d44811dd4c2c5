"""The worker pipeline on its own: events in, COPY batches out (a list sink), every rejection counted."""

from __future__ import annotations

import pytest

from collector.feed.wire import (
    AggTrade,
    ForceOrder,
    Kline,
    KlineBody,
    LiquidationOrder,
    MarkPrice,
    OpenInterest,
    UuidTrade,
    uuid_trade_id,
)
from collector.pipeline.batches import Batch
from collector.pipeline.router import Pipeline
from collector.pipeline.tiers import TierAssignment
from collector.pipeline.trade_filter import FilterParams, TradeFilter

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
RECEIPT = T0 / 1000


def trade(a: int, p: str = "100.0", q: str = "1", t: int = T0, s: str = "BTCUSDT") -> AggTrade:
    return AggTrade(E=t + 5, s=s, a=a, p=p, q=q, f=a * 2, l=a * 2 + 1, T=t, m=False)


@pytest.fixture
def out() -> list[Batch]:
    return []


@pytest.fixture
def pipe(out: list[Batch]) -> Pipeline:
    f = TradeFilter(FilterParams(price_change_pct=0.5, tier_intervals_s=(60, 60, 60, 60)))
    f.set_tiers({"BTCUSDT": TierAssignment(0, 10_000.0, 5_000.0, 1.0)})
    return Pipeline(["BTCUSDT", "ETHUSDT"], ["trades", "funding", "liquidations", "candles_1m", "open_interest"],
                    f, out.append, venue="binance", batch_rows=1000, flush_interval_ms=250, clock_ms=lambda: T0)


def test_trades_kept_by_rule_and_batched(pipe: Pipeline, out: list[Batch]) -> None:
    pipe.on_trade(trade(1), RECEIPT)  # first: time_interval
    pipe.on_trade(trade(2, q="50"), RECEIPT)  # $5,000: not large, no move
    pipe.on_trade(trade(3, q="101"), RECEIPT)  # $10,100 > $10,000: large_trade
    pipe.on_trade(trade(4, p="100.6"), RECEIPT)  # +0.6%: price_change
    assert dict(pipe.kept) == {"time_interval": 1, "large_trade": 1, "price_change": 1}
    assert dict(pipe.rows) == {"trades": 3}
    assert out == []
    pipe.flush_due(T0 - 1)
    assert out == []  # the first row came at T0 (clock_ms); nothing was sent before: it may go then
    assert pipe.next_flush_ms() == T0
    pipe.flush_due(T0)
    assert [(b.table, b.rows) for b in out] == [("trades", 3)]
    assert dict(pipe.rows) == {"trades": 3}  # emitted now: counted once, not again with the builder's


def test_rows_and_received_count_what_is_pending_and_what_was_sent(pipe: Pipeline, out: list[Batch]) -> None:
    """`rows` adds the rows still in a builder to those emitted, and `received` the plain trade count to the
    other types' counter (both are kept apart for speed): every row and event counted exactly once."""
    pipe.on_trade(trade(1), RECEIPT)
    pipe.on_mark_price(MarkPrice(E=T0, s="BTCUSDT", p="100.0", i="100.0", r="0.0001", T=T0 + 8 * 3_600_000),
                       RECEIPT)
    pipe.flush_due(T0)
    pipe.on_trade(trade(2, q="101"), RECEIPT)  # large_trade, pending
    assert dict(pipe.rows) == {"trades": 2, "funding": 1}
    assert [(b.table, b.rows) for b in out] == [("trades", 1), ("funding", 1)]
    assert dict(pipe.received) == {"trades": 2, "funding": 1} and pipe.trades_added == 2
    pipe.flush_all(T0 + 1_000)
    assert dict(pipe.rows) == {"trades": 2, "funding": 1} and sum(b.rows for b in out) == 3


def test_bad_input_is_counted_never_stored(pipe: Pipeline, out: list[Batch]) -> None:
    pipe.on_trade(trade(1), RECEIPT)
    pipe.on_trade(trade(2, s="DOGEUSDT"), RECEIPT)  # not this worker's symbol
    pipe.on_trade(trade(3, p="0"), RECEIPT)
    pipe.on_trade(trade(4, q="-1"), RECEIPT)
    pipe.on_trade(trade(5, p="abc"), RECEIPT)
    pipe.on_trade(trade(6, t=T0 // 1000), RECEIPT)  # seconds sent as milliseconds: 1970
    pipe.on_trade(trade(1), RECEIPT)  # duplicate id
    assert dict(pipe.rejected) == {"unknown_symbol": 1, "non_positive_or_infinite": 2, "bad_number": 1,
                                   "absurd_timestamp": 1, "duplicate_or_old_id": 1}
    pipe.flush_all()
    assert sum(b.rows for b in out) == 1


def test_gap_detected(pipe: Pipeline) -> None:
    pipe.on_trade(trade(10), RECEIPT)
    pipe.on_trade(trade(11), RECEIPT)
    pipe.on_trade(trade(15), RECEIPT)
    assert [(g.symbol, g.from_id, g.to_id) for g in pipe.gaps] == [("BTCUSDT", 12, 14)]


def test_funding_at_most_one_row_per_symbol_minute(pipe: Pipeline, out: list[Batch]) -> None:
    for i in range(60):  # one mark price a second for a minute and a bit, two symbols
        for s in ("BTCUSDT", "ETHUSDT"):
            pipe.on_mark_price(MarkPrice(E=T0 + 30_000 + i * 1000, s=s, p="100", i="100", r="0.0001", T=T0 + 8 * 3600_000),
                               RECEIPT)
    pipe.flush_all()
    assert sum(b.rows for b in out if b.table == "funding") == 4  # minute 0 and minute 1, per symbol
    assert pipe.received["funding"] == 120


def test_liquidations_candles_open_interest(pipe: Pipeline, out: list[Batch]) -> None:
    o = LiquidationOrder(s="ETHUSDT", S="SELL", o="LIMIT", f="IOC", q="2", p="3000", ap="3001", X="FILLED", l="2",
                         z="2", T=T0)
    pipe.on_liquidation(ForceOrder(E=T0, o=o), RECEIPT)
    body = dict(t=T0, T=T0 + 59_999, s="BTCUSDT", i="1m", o="1", c="2", h="3", l="0.5", v="10", n=7, q="15",
                V="4", Q="6")
    pipe.on_kline(Kline(E=T0, s="BTCUSDT", k=KlineBody(**body, x=False)), RECEIPT)  # open kline: not stored
    pipe.on_kline(Kline(E=T0, s="BTCUSDT", k=KlineBody(**body, x=True)), RECEIPT)
    pipe.on_open_interest(OpenInterest(symbol="BTCUSDT", openInterest="12345.678", time=T0), RECEIPT)
    pipe.on_open_interest(OpenInterest(symbol="XRPUSDT", openInterest="1", time=T0), RECEIPT)
    pipe.flush_all()
    assert sorted((b.table, b.rows) for b in out) == [("candles_1m", 1), ("liquidations", 1), ("open_interest", 1)]
    assert pipe.rejected["unknown_symbol"] == 1


def test_data_types_switch_tables_off(out: list[Batch]) -> None:
    pipe = Pipeline(["BTCUSDT"], ["candles_1m"], TradeFilter(), out.append, venue="binance")
    pipe.on_trade(trade(1), RECEIPT)
    pipe.on_mark_price(MarkPrice(E=T0, s="BTCUSDT", p="1"), RECEIPT)
    pipe.flush_all()
    assert out == []
    assert pipe.received["trades"] == 1  # still seen (statistics, gaps), just not stored


def test_full_batch_is_emitted_at_once(out: list[Batch]) -> None:
    pipe = Pipeline(["BTCUSDT"], ["trades"], TradeFilter(FilterParams(keep_all=True)), out.append, venue="binance", batch_rows=10)
    for a in range(1, 26):
        pipe.on_trade(trade(a, t=T0 + a), RECEIPT)
    assert [b.rows for b in out] == [10, 10]
    pipe.flush_all()
    assert [b.rows for b in out] == [10, 10, 5]


def test_stats_window_sets_what_the_activity_statistics_cover(out: list[Batch]) -> None:
    """filters.trades.stats_window: the same trades, two windows, two different statistics."""
    from collector.config import TradeFilterConfig
    from collector.pipeline.activity import window_ms

    hour = 3_600_000
    pipes = {}
    for window in ("1h", "24h"):
        ms = window_ms(TradeFilterConfig(stats_window=window).stats_window_s)
        pipes[window] = p = Pipeline(["BTCUSDT"], ["trades"], TradeFilter(), out.append, venue="binance", stats_window_ms=ms)
        for i, hours_ago in enumerate((5, 3, 0)):  # $100 each, at T0 - 5 h, T0 - 3 h and T0
            p.on_trade(trade(i + 1, t=T0 - hours_ago * hour), RECEIPT)
    assert window_ms(TradeFilterConfig(stats_window="1h").stats_window_s) == hour
    assert pipes["1h"].activity["BTCUSDT"].summary(T0).count == 1
    assert pipes["24h"].activity["BTCUSDT"].summary(T0).count == 3
    assert pipes["24h"].activity["BTCUSDT"].summary(T0).volume == pytest.approx(300.0)


def test_stats_window_must_be_a_duration() -> None:
    from collector.config import TradeFilterConfig

    with pytest.raises(ValueError, match="filters.trades.stats_window"):
        TradeFilterConfig(stats_window="forever")


def _venue_pipe(venue: str, out: list[Batch]) -> Pipeline:
    f = TradeFilter(FilterParams(price_change_pct=0.5, tier_intervals_s=(60, 60, 60, 60)))
    return Pipeline(["XUSDT"], ["trades"], f, out.append, venue=venue, clock_ms=lambda: T0)


def test_okx_pushes_cover_fill_ranges_and_gaps_are_fill_ids(out: list[Batch]) -> None:
    """An OKX push carries its last fill's id and f = the first: consecutive pushes are no gap."""
    pipe = _venue_pipe("okx", out)
    for first, last in ((121, 123), (124, 125), (126, 126), (130, 131)):
        pipe.on_trade(AggTrade(E=T0, s="XUSDT", a=last, p="1", q="1", f=first, l=last, T=T0, m=False), RECEIPT)
    assert [(g.from_id, g.to_id) for g in pipe.gaps] == [(127, 129)]
    pipe.on_trade(AggTrade(E=T0, s="XUSDT", a=131, p="1", q="1", f=131, l=131, T=T0, m=False), RECEIPT)
    assert pipe.rejected["duplicate_or_old_id"] == 1 and pipe.last_trade_id == {"XUSDT": 131}


def test_bybit_ids_have_no_order_so_no_trade_is_a_gap_or_a_repeat(out: list[Batch]) -> None:
    """Bybit ids are hashes of UUIDs: every trade counts, in any order, and no gap is made up."""
    pipe = _venue_pipe("bybit", out)
    for a in (9_000, 5, 7_000_000, 6):
        pipe.on_trade(AggTrade(E=T0, s="XUSDT", a=a, p="1", q="1", f=a, l=a, T=T0, m=False), RECEIPT)
    assert pipe.received["trades"] == 4 and not pipe.rejected and not pipe.gaps and not pipe.last_trade_id
    assert pipe.activity["XUSDT"].count(T0) == 4


UUIDS = ("8c931d9a-b703-5c34-9e0b-4a3a1c8f6e21", "307fb58f-09dc-5121-b24f-eb2f81873445",
         "e4f62be6-ee74-5a67-a9da-b3829b911246")


def _uuid_trade(u: str, p: str = "1") -> UuidTrade:
    return UuidTrade(T0, "XUSDT", 0, p, "1", 0, 0, T0, True, u)


def _keep_all_pipe(venue: str, out: list[Batch]) -> Pipeline:
    return Pipeline(["XUSDT"], ["trades"], TradeFilter(FilterParams(keep_all=True)), out.append, venue=venue,
                    clock_ms=lambda: T0)


def test_a_kept_bybit_trade_is_stored_under_its_uuid_id_as_if_parsed_on_arrival(out: list[Batch]) -> None:
    """UuidTrade's id is computed when the trade is kept: the rows are byte for byte those of AggTrades
    carrying a = f = l = uuid_trade_id (what the decoder built before)."""
    lazy = _keep_all_pipe("bybit", out)
    eager_out: list[Batch] = []
    eager = _keep_all_pipe("bybit", eager_out)
    for i, u in enumerate(UUIDS):
        lazy.on_trade(_uuid_trade(u, p=f"1.{i}"), RECEIPT)
        a = uuid_trade_id(u)
        eager.on_trade(AggTrade(T0, "XUSDT", a, f"1.{i}", "1", a, a, T0, True), RECEIPT)
    lazy.flush_all()
    eager.flush_all()
    assert [(b.table, b.rows, b.data) for b in out] == [(b.table, b.rows, b.data) for b in eager_out]
    assert sum(b.rows for b in out) == 3 and not lazy.rejected
    assert uuid_trade_id(UUIDS[0]).to_bytes(8, "big") in out[0].data  # trade_id is an 8-byte BIGINT in COPY


def test_a_kept_bybit_trade_with_a_malformed_uuid_is_a_bad_number_skip(out: list[Batch]) -> None:
    """Counted (rejected bad_number, not kept), the rows beside it stored."""
    pipe = _keep_all_pipe("bybit", out)
    for u in (UUIDS[0], "not-a-uuid", "", UUIDS[1]):
        pipe.on_trade(_uuid_trade(u), RECEIPT)
    pipe.flush_all()
    assert dict(pipe.rejected) == {"bad_number": 2} and sum(pipe.kept.values()) == 2
    assert sum(b.rows for b in out) == 2 and pipe.received["trades"] == 4


def test_a_dropped_bybit_trade_is_never_asked_for_its_id(out: list[Batch]) -> None:
    """The documented cost of the lazy id: a malformed UUID in a trade the filter drops is not noticed."""
    pipe = _venue_pipe("bybit", out)  # the first trade of a symbol is kept (time_interval), the next not
    pipe.on_trade(_uuid_trade(UUIDS[0]), RECEIPT)
    pipe.on_trade(_uuid_trade("not-a-uuid"), RECEIPT)
    pipe.flush_all()
    assert sum(pipe.kept.values()) == 1 and not pipe.rejected and sum(b.rows for b in out) == 1


def test_the_trade_numeric_cache_is_sized_by_keep_all_and_follows_a_reload() -> None:
    """Filtered workers encode a few trades a second: a small cache, full within minutes, so their memory is
    flat after the warm-up (issue 12); keep_all ones a large one, which their rate fills within seconds."""
    import msgspec

    from collector.config import Config
    from collector.pipeline.encode import FILTERED_NUMERIC_CACHE, KEEP_ALL_NUMERIC_CACHE
    from collector.runtime.worker_control import apply_live_config

    tf = TradeFilter()
    pipe = Pipeline(["BTCUSDT"], ["trades"], tf, lambda b: None, venue="binance")
    assert pipe.encoder.numerics.size == FILTERED_NUMERIC_CACHE
    keep = TradeFilter(FilterParams(keep_all=True))
    assert Pipeline(["BTCUSDT"], ["trades"], keep, lambda b: None, venue="binance").encoder.numerics.size == \
        KEEP_ALL_NUMERIC_CACHE
    cfg = Config()
    cfg = msgspec.structs.replace(cfg, filters=msgspec.structs.replace(
        cfg.filters, trades=msgspec.structs.replace(cfg.filters.trades, keep_all=True)))
    apply_live_config(cfg, pipe, tf)
    assert pipe.encoder.numerics.size == KEEP_ALL_NUMERIC_CACHE
    apply_live_config(Config(), pipe, tf)
    assert pipe.encoder.numerics.size == FILTERED_NUMERIC_CACHE


def test_flush_pending_sends_what_the_hold_would_keep(pipe: Pipeline, out: list[Batch]) -> None:
    """Before a worker rests (collector.feed.pacing) every table with rows goes, due or not; a table without
    rows sends nothing."""
    pipe.on_trade(trade(1), RECEIPT)
    pipe.flush_due(T0)
    assert [(b.table, b.rows) for b in out] == [("trades", 1)]
    pipe.on_trade(trade(2, q="101"), RECEIPT)  # large: kept; the table was sent at T0, so it is held 250 ms
    pipe.flush_due(T0)
    assert len(out) == 1 and pipe.next_flush_ms() == T0 + 250
    pipe.flush_pending()
    assert [(b.table, b.rows) for b in out] == [("trades", 1), ("trades", 1)]
    assert pipe.next_flush_ms() is None
    pipe.flush_pending()  # nothing pending: nothing sent
    assert len(out) == 2
