"""The pure parts of the OKX / Bybit feed: symbol names of every venue, the subscriptions per socket, the
open-interest gate that keeps one pushed value per window, and the instruments paging (fetch passed in)."""

from __future__ import annotations

import json

import pytest

from collector.feed import venue_universe
from collector.feed.venue_feed import OpenInterestGate, subscriptions, venue_data_types
from collector.feed.venues import bybit, okx
from collector.symbols import valid_symbol


def test_every_venue_symbol_format_is_accepted_and_garbage_refused() -> None:
    for good in ["BTCUSDT", "1000PEPEUSDT", "BTC-USDT-SWAP", "1000PEPE-USDT-SWAP", "BTC-USDT-PERP"]:
        assert valid_symbol(good), good
    for bad in ["BTC-USDT", "BTC-USDT-250926", "BTC-USD-250926-100000-C", "btc-usdt-swap", "BTC--SWAP",
                "-USDT-SWAP", "BTC-USDT-SWAP-", "BTC_USDT_SWAP", "BTC-USDT-SWAP;", "BTC-USDT-SWAP\n", "币-USDT-SWAP",
                "A" * 21 + "-USDT-SWAP", "BTC-USDT-swap", "", None]:
        assert not valid_symbol(bad), bad


def test_subscriptions_per_socket() -> None:
    assert venue_data_types(["trades", "candles_5m", "open_interest"]) == ["trades", "open_interest", "candles_1m"]
    plan = subscriptions("okx", ["BTC-USDT-SWAP"], ["trades", "candles_1d", "liquidations", "funding"])
    assert set(plan) == {okx.PUBLIC_PATH, okx.BUSINESS_PATH}
    public = [a for m in plan[okx.PUBLIC_PATH] for a in json.loads(m)["args"]]
    assert {"channel": "liquidation-orders", "instType": "SWAP"} in public
    assert {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"} in public
    assert [a for m in plan[okx.BUSINESS_PATH] for a in json.loads(m)["args"]] == \
           [{"channel": "candle1m", "instId": "BTC-USDT-SWAP"}]
    plan = subscriptions("bybit", ["BTCUSDT"], ["trades", "funding", "open_interest"])
    assert [a for m in plan[bybit.LINEAR_PATH] for a in json.loads(m)["args"]] == ["publicTrade.BTCUSDT",
                                                                                 "tickers.BTCUSDT"]
    with pytest.raises(ValueError):
        subscriptions("binance", ["BTCUSDT"], ["trades"])


def test_open_interest_gate_keeps_the_first_of_each_window() -> None:
    gate = OpenInterestGate(300_000)
    times = [0, 3_000, 299_999, 300_000, 301_000, 900_500, 600_000]
    assert [gate.admit("A", t) for t in times] == [True, False, False, True, False, True, False]
    assert gate.admit("B", 3_000)  # per symbol


def _okx_body(*entries: dict) -> dict:
    return {"code": "0", "msg": "", "data": list(entries)}


def _okx(inst: str, **over: str) -> dict:
    base = {"instType": "SWAP", "instId": inst, "settleCcy": "USDT", "ctVal": "0.01", "ctType": "linear",
            "ctMult": "1", "state": "live"}
    return {**base, **over}


def test_okx_universe_keeps_live_usdt_swaps() -> None:
    body = _okx_body(_okx("BTC-USDT-SWAP"), _okx("ETH-USDT-SWAP", state="suspend"),
                     _okx("BTC-USD-SWAP", settleCcy="BTC", ctType="inverse"), _okx("SOL-USDT-SWAP", ctVal="1"))
    seen: list[str] = []

    def get(url: str) -> object:
        seen.append(url)
        return body
    got = venue_universe.fetch_venue_universe("okx", "http://x", get)
    assert [(s.name, s.normalized, s.contract.value) for s in got] == \
           [("BTC-USDT-SWAP", "BTC-USDT-PERP", "0.01"), ("SOL-USDT-SWAP", "SOL-USDT-PERP", "1")]
    assert seen == ["http://x" + okx.INSTRUMENTS_PATH]


def _bybit(sym: str, **over: str) -> dict:
    base = {"symbol": sym, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": sym[:-4],
            "quoteCoin": "USDT"}
    return {**base, **over}


def test_bybit_universe_follows_the_cursor() -> None:
    pages = {"": ([_bybit("BTCUSDT"), _bybit("ETHUSDT", status="Closed")], "c1"),
             "c1": ([_bybit("SOLUSDT"), _bybit("BTCUSDC", quoteCoin="USDC")], "")}

    def get(url: str) -> object:
        cursor = url.partition("cursor=")[2]
        rows, nxt = pages[cursor]
        return {"retCode": 0, "result": {"list": rows, "nextPageCursor": nxt}}
    got = venue_universe.fetch_venue_universe("bybit", "http://x", get)
    assert [s.name for s in got] == ["BTCUSDT", "SOLUSDT"]


def test_a_cursor_that_never_ends_is_refused() -> None:
    def get(url: str) -> object:
        return {"retCode": 0, "result": {"list": [_bybit("BTCUSDT")], "nextPageCursor": "again"}}
    with pytest.raises(ValueError, match="pages"):
        venue_universe.fetch_venue_universe("bybit", "http://x", get)


def test_each_venue_has_its_own_budget_and_bybit_403_pauses_only_bybit() -> None:
    okx_b, bybit_b = venue_universe.venue_budget("okx", 0.0), venue_universe.venue_budget("bybit", 0.0)
    assert okx_b.budget_per_min == 300 and bybit_b.budget_per_min == 3600
    venue_universe.note_response("bybit", bybit_b, 403, {}, 1_000.0)
    assert bybit_b.paused_until_ms == 1_000.0 + venue_universe.BYBIT_BAN_MS
    assert okx_b.paused_until_ms <= 0 and okx_b.try_acquire(1, 1_000.0)
    assert not bybit_b.try_acquire(1, 2_000.0)


def test_bybit_too_many_visits_pauses_until_its_reset() -> None:
    b = venue_universe.venue_budget("bybit", 0.0)
    venue_universe.note_response("bybit", b, 200, {"X-Bapi-Limit-Reset-Timestamp": "5000"}, 1_000.0,
                                 b'{"retCode": 10006, "retMsg": "Too many visits!", "result": {}}')
    assert b.paused_until_ms == 5_000.0
    b = venue_universe.venue_budget("bybit", 0.0)
    venue_universe.note_response("bybit", b, 200, {}, 1_000.0, b'{"retCode":0,"result":{"list":[]}}')
    assert b.paused_until_ms <= 0


def test_okx_429_pauses_for_its_two_second_window() -> None:
    # OKX sends no Retry-After; its limits count over 2 s, so the pause is 2 s, not the rest of the minute
    b = venue_universe.venue_budget("okx", 0.0)
    venue_universe.note_response("okx", b, 429, {}, 1_000.0, b'{"code":"50011","msg":"Too Many Requests","data":[]}')
    assert b.paused_until_ms == 1_000.0 + venue_universe.OKX_RETRY_S * 1000
