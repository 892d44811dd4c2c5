"""OKX's and Bybit's REST history for repairs: the pages planned for a gap, their rows in the pipeline's shapes
(stored exactly as the live decoders' rows), and how their rate-limit answers are read."""

from __future__ import annotations

import asyncio
import json

import pytest

from collector.feed.backfill import Backfiller
from collector.feed.venue_history import (
    BYBIT_NO_TRADES,
    BybitHistory,
    OkxHistory,
    bybit_kline_pages,
    bybit_kline_rows,
    minute_windows,
    okx_candle_pages,
    okx_candle_rows,
    okx_trade_page,
    okx_trade_rows,
)
from collector.feed.venues.bybit import BybitDecoder
from collector.feed.venues.common import ContractSize, VenueSymbol
from collector.feed.venues.okx import OkxDecoder
from collector.feed.wire import AggTrade
from collector.pipeline.batches import Batch
from collector.pipeline.limits import WeightBudget
from collector.pipeline.router import Gap, Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter

M = 60_000
T0 = 1_796_000_000_000 // M * M  # a minute's open


def _pipe(name: str, venue: str, out: list[Batch]) -> Pipeline:
    return Pipeline([name], ["trades", "candles_1m"], TradeFilter(FilterParams(keep_all=True)), out.append,
                    venue=venue)


def _rows(out: list[Batch], table: str) -> bytes:
    return b"".join(b.data for b in out if b.table == table)


def test_minute_windows_tile_the_gap_newest_first() -> None:
    assert minute_windows(T0, T0 + 249 * M, 100) == [(T0 + 150 * M, T0 + 249 * M), (T0 + 50 * M, T0 + 149 * M),
                                                     (T0, T0 + 49 * M)]
    assert minute_windows(T0, T0, 100) == [(T0, T0)]


def test_okx_candle_pages_step_the_cursors_down_from_the_newest_minute() -> None:
    pages = okx_candle_pages("BTC-USDT-SWAP", T0, T0 + 149 * M)
    assert [p[0] for p in pages] == ["/api/v5/market/history-candles"] * 2
    first, second = (p[1] for p in pages)
    # `after` returns records older than it, `before` newer than it (both exclusive): the 100 newest minutes,
    # then the next page's `after` is one ms past the open just below the first page's window
    assert first == {"instId": "BTC-USDT-SWAP", "bar": "1m", "after": T0 + 149 * M + 1, "before": T0 + 50 * M - 1,
                     "limit": 100}
    assert second == {"instId": "BTC-USDT-SWAP", "bar": "1m", "after": T0 + 49 * M + 1, "before": T0 - 1,
                      "limit": 50}
    assert all(p[2] == 1 for p in pages)


def test_okx_candle_rows_use_base_volume_oldest_first_and_skip_unconfirmed() -> None:
    body = json.dumps({"code": "0", "msg": "", "data": [
        [str(T0 + 2 * M), "10.5", "11", "10", "10.8", "12.5", "0.125", "1.3", "0"],  # forming: not a closed candle
        [str(T0 + M), "10.1", "10.9", "10.0", "10.5", "1234.5", "12.345", "129.1", "1"],
        [str(T0), "10.0", "10.2", "9.9", "10.1", "20", "0.2", "2.01", "1"],
    ]}).encode()
    rows = okx_candle_rows(body)
    assert rows == [[T0, "10.0", "10.2", "9.9", "10.1", "0.2", T0 + M - 1, "2.01", -1, "", ""],
                    [T0 + M, "10.1", "10.9", "10.0", "10.5", "12.345", T0 + 2 * M - 1, "129.1", -1, "", ""]]
    with pytest.raises(ValueError, match="51001"):
        okx_candle_rows(b'{"code":"51001","msg":"Instrument ID does not exist.","data":[]}')


def test_okx_trade_pages_walk_up_from_the_gaps_first_id() -> None:
    path, q, weight = okx_trade_page("ETH-USDT-SWAP", 1000, 1149)
    assert path == "/api/v5/market/history-trades" and weight == 1
    # the window strictly between `before` and `after` holds ids 1000..1099: one full page
    assert q == {"instId": "ETH-USDT-SWAP", "type": "1", "after": 1100, "before": 999, "limit": 100}
    assert okx_trade_page("ETH-USDT-SWAP", 1100, 1149)[1] == {"instId": "ETH-USDT-SWAP", "type": "1", "after": 1150,
                                                            "before": 1099, "limit": 50}
    with pytest.raises(ValueError):
        okx_trade_page("ETH-USDT-SWAP", 1150, 1149)


def test_okx_trade_rows_apply_the_contract_size_in_ascending_ids() -> None:
    body = json.dumps({"code": "0", "msg": "", "data": [
        {"instId": "ETH-USDT-SWAP", "side": "sell", "sz": "125.5", "px": "3000.1", "source": "0", "tradeId": "1001",
         "ts": str(T0 + 5)},
        {"instId": "ETH-USDT-SWAP", "side": "buy", "sz": "3", "px": "3000.0", "source": "0", "tradeId": "1000",
         "ts": str(T0 + 4)},
    ]}).encode()
    rows = okx_trade_rows(body, "ETH-USDT-SWAP", ContractSize("0.01"))
    assert rows == [AggTrade(T0 + 4, "ETH-USDT-SWAP", 1000, "3000.0", "0.03", 1000, 1000, T0 + 4, False),
                    AggTrade(T0 + 5, "ETH-USDT-SWAP", 1001, "3000.1", "1.255", 1001, 1001, T0 + 5, True)]
    with pytest.raises(ValueError, match="BTC-USDT-SWAP"):
        okx_trade_rows(body, "BTC-USDT-SWAP", ContractSize("0.01"))
    with pytest.raises(ValueError, match="contract size"):  # instruments not loaded yet: not a page to use
        OkxHistory(lambda name: None).trades("ETH-USDT-SWAP", body)


def test_okx_fills_join_back_into_the_push_the_stream_sends() -> None:
    """REST serves fills; a push is the consecutive fills of one time, price and side (tradeId = the last):
    joined, a repaired push is the stream's row (same key), never its fills a second time."""
    def fill(tid: int, sz: str, px: str = "3000.0", side: str = "buy", ts: int = T0) -> dict:
        return {"instId": "ETH-USDT-SWAP", "side": side, "sz": sz, "px": px, "source": "0", "tradeId": str(tid),
                "ts": str(ts)}
    body = json.dumps({"code": "0", "msg": "", "data": [  # newest first, as OKX answers
        fill(127, "1", ts=T0 + 1), fill(125, "1"), fill(124, "2", px="3000.5"),
        fill(123, "0.4"), fill(122, "1.6"), fill(121, "3")]}).encode()
    rows = okx_trade_rows(body, "ETH-USDT-SWAP", ContractSize("0.01"))
    assert [(r.f, r.a, r.l, r.p, r.q, r.T) for r in rows] == [
        (121, 123, 123, "3000.0", "0.05", T0),      # 3 + 1.6 + 0.4 contracts of 0.01
        (124, 124, 124, "3000.5", "0.02", T0),      # another price: another push
        (125, 125, 125, "3000.0", "0.01", T0),
        (127, 127, 127, "3000.0", "0.01", T0 + 1),  # 126 missing: not joined across it
    ]


def test_bybit_kline_pages_and_rows() -> None:
    pages = bybit_kline_pages("BTCUSDT", T0, T0 + 1499 * M)
    assert [p[1] for p in pages] == [
        {"category": "linear", "symbol": "BTCUSDT", "interval": "1", "start": T0 + 500 * M, "end": T0 + 1499 * M,
         "limit": 1000},
        {"category": "linear", "symbol": "BTCUSDT", "interval": "1", "start": T0, "end": T0 + 499 * M, "limit": 500}]
    body = json.dumps({"retCode": 0, "retMsg": "OK", "result": {"symbol": "BTCUSDT", "category": "linear", "list": [
        [str(T0 + M), "10.5", "10.9", "10.4", "10.6", "3.25", "34.3"],
        [str(T0), "10.0", "10.6", "9.9", "10.5", "1.5", "15.4"]]}, "time": T0}).encode()
    assert bybit_kline_rows(body) == [[T0, "10.0", "10.6", "9.9", "10.5", "1.5", T0 + M - 1, "15.4", -1, "", ""],
                                      [T0 + M, "10.5", "10.9", "10.4", "10.6", "3.25", T0 + 2 * M - 1, "34.3", -1, "",
                                       ""]]
    with pytest.raises(ValueError, match="10001"):
        bybit_kline_rows(b'{"retCode":10001,"retMsg":"params error","result":{},"time":1}')


def test_repaired_candles_are_stored_exactly_as_the_live_ones() -> None:
    """The same minute through the live decoder and through the REST parser: byte-identical candles_1m rows."""
    okx_sym = VenueSymbol("okx", "ETH-USDT-SWAP", "ETH-USDT-PERP", ContractSize("0.01"))
    candle = [str(T0), "3000.1", "3010.0", "2990.5", "3005.2", "1234.5", "12.345", "37060.2", "1"]
    live: list[Batch] = []
    rest: list[Batch] = []
    live_pipe, rest_pipe = _pipe(okx_sym.name, "okx", live), _pipe(okx_sym.name, "okx", rest)
    OkxDecoder([okx_sym], live_pipe).handle(json.dumps(
        {"arg": {"channel": "candle1m", "instId": okx_sym.name}, "data": [candle]}), (T0 + M) / 1000)
    for row in okx_candle_rows(json.dumps({"code": "0", "msg": "", "data": [candle]}).encode()):
        assert rest_pipe.on_backfill_kline(okx_sym.name, row, (T0 + M) / 1000)
    live_pipe.flush_all()
    rest_pipe.flush_all()
    assert _rows(live, "candles_1m") and _rows(live, "candles_1m") == _rows(rest, "candles_1m")

    by_sym = VenueSymbol("bybit", "BTCUSDT", "BTC-USDT-PERP", ContractSize("1"))
    live, rest = [], []
    live_pipe, rest_pipe = _pipe(by_sym.name, "bybit", live), _pipe(by_sym.name, "bybit", rest)
    BybitDecoder([by_sym], live_pipe).handle(json.dumps({"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts": T0 + M,
        "data": [{"start": T0, "end": T0 + M - 1, "interval": "1", "open": "65000.1", "close": "65010.0",
                  "high": "65020.5", "low": "64990.0", "volume": "1.234", "turnover": "80215.3", "confirm": True,
                  "timestamp": T0 + M}]}), (T0 + M) / 1000)
    for row in bybit_kline_rows(json.dumps({"retCode": 0, "retMsg": "OK", "result": {"list": [
            [str(T0), "65000.1", "65020.5", "64990.0", "65010.0", "1.234", "80215.3"]]}}).encode()):
        assert rest_pipe.on_backfill_kline(by_sym.name, row, (T0 + M) / 1000)
    live_pipe.flush_all()
    rest_pipe.flush_all()
    assert _rows(live, "candles_1m") and _rows(live, "candles_1m") == _rows(rest, "candles_1m")


def test_bybit_answers_read_as_rate_limits() -> None:
    history, now = BybitHistory(), float(T0)
    gate = WeightBudget(now, limit_per_min=7200, fraction=0.5)
    limited = b'{"retCode":10006,"retMsg":"Too many visits!","result":{},"time":1}'
    assert history.answer(gate, 200, {"X-Bapi-Limit-Reset-Timestamp": str(T0 + 700)}, limited, now) == "throttled"
    assert gate.wait_time(1, now) == pytest.approx(700)
    assert history.answer(gate, 403, {}, b"access too frequent", now) == "throttled"
    assert gate.wait_time(1, now) == pytest.approx(600_000)
    assert history.answer(WeightBudget(now), 200, {}, b'{"retCode":0,"result":{"list":[]}}', now) == "ok"
    assert history.answer(WeightBudget(now), 500, {}, b"", now) == "failed"


def test_bybit_trade_gaps_are_stored_unfillable_with_the_reason() -> None:
    async def run() -> tuple[list[Batch], Backfiller]:
        out: list[Batch] = []
        pipe = _pipe("BTCUSDT", "bybit", out)
        bf = Backfiller("http://bybit.invalid", pipe, WeightBudget(T0), asyncio.Event(), history=BybitHistory(),
                        fetch=_no_request, clock=lambda: T0 / 1000)
        pipe.on_gap = bf.add_trade_gap
        for a in (1, 2, 6):  # Bybit ids have no order: no gap is seen in them (router.TRADE_ID_RULES) ...
            pipe.on_trade(AggTrade(T0 + a, "BTCUSDT", a, "100", "1", a, a, T0 + a, False), (T0 + a) / 1000)
        assert not pipe.gaps
        bf.add_trade_gap(Gap("BTCUSDT", 3, 5, T0))  # ... but a gap reported anyway is stored, saying why
        bf.add_tail_check("BTCUSDT", 6)  # no trades by id: nothing to ask
        class Row:  # an unfinished row of the gaps table (collector.db.gaps_repo.OpenGap)
            kind, symbol, from_id, to_id, detected_ms = "trades", "BTCUSDT", 3, 5, T0
        assert bf.take_over([Row()]) == 0
        pipe.flush_all()
        return out, bf

    out, bf = asyncio.run(run())
    gaps = _rows(out, "gaps")
    assert gaps.count(b"unfillable") == 1 and gaps.count(BYBIT_NO_TRADES.encode()) == 1
    assert bf.queue.empty() and bf.counts["requests"] == 0 and bf.counts["gaps_unfilled"] == 1


async def _no_request(url: str) -> tuple[int, dict[str, str], bytes]:
    raise AssertionError(f"no request expected, got {url}")
