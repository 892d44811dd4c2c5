"""Wire format: REST answers and WebSocket frames have Binance's fields, order and value types."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets
from cryptofeed.exchanges import BinanceFutures
from simhelpers import collect, http_get, wait_for

from exchange_sim import SimConfig, run_in_thread

EXCERPT = Path(__file__).parent.parent / "data" / "binance_futures_ws_excerpt.txt"


def _recorded(kind: str) -> dict:
    for line in EXCERPT.read_text().splitlines()[1:]:
        msg = json.loads(line.split(": ", 1)[1])
        if msg["stream"].endswith(kind):
            return msg
    raise LookupError(kind)


def _shape(obj):
    """Key order and value types, recursively: what must match the recording exactly."""
    if isinstance(obj, dict):
        return [(k, _shape(v)) for k, v in obj.items()]
    return type(obj).__name__


def test_exchange_info_layout_and_cryptofeed_parse(sim):
    status, headers, info = http_get(sim.rest_url + "/fapi/v1/exchangeInfo")
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "1"
    assert list(info)[:6] == ["timezone", "serverTime", "futuresType", "rateLimits", "exchangeFilters", "assets"]
    s0 = info["symbols"][0]
    assert s0["symbol"] == "BTCUSDT" and s0["contractType"] == "PERPETUAL" and s0["status"] == "TRADING"
    assert s0["filters"][0]["filterType"] == "PRICE_FILTER" and isinstance(s0["filters"][0]["tickSize"], str)
    assert isinstance(s0["pricePrecision"], int) and isinstance(s0["deliveryDate"], int)
    names = {s["symbol"] for s in info["symbols"]}
    assert {"BTCUSDC", "ETHBUSD", "BTCUSDT_261225", "OLDCOINUSDT", "NEWCOINUSDT"} <= names
    assert all(n.replace("_", "").isalnum() and n.upper() == n for n in names)
    mapping, _ = BinanceFutures._parse_symbol_data(info)
    usdt_perps = [v for v in mapping.values() if v.endswith("USDT") and not v.startswith("p")]
    assert len(usdt_perps) == 40
    assert "OLDCOINUSDT" not in mapping.values() and "NEWCOINUSDT" not in mapping.values()


def test_rest_endpoints_fields_and_types(sim):
    base = sim.rest_url + "/fapi/v1"
    wait_for(lambda: sim.truth(klines=False)["symbols"]["BTCUSDT"]["aggTrade"] > 5, 10, "BTC trades")
    _, _, oi = http_get(base + "/openInterest?symbol=ETHUSDT")
    assert list(oi) == ["openInterest", "symbol", "time"] and isinstance(oi["openInterest"], str)
    _, _, pi = http_get(base + "/premiumIndex?symbol=ETHUSDT")
    assert list(pi) == ["symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate",
                        "interestRate", "nextFundingTime", "time"]
    _, hdr, allpi = http_get(base + "/premiumIndex")
    assert len(allpi) == 40 and hdr["X-MBX-USED-WEIGHT-1M"] == str(1 + 1 + 10)
    _, _, tk = http_get(base + "/ticker/24hr?symbol=BTCUSDT")
    assert isinstance(tk["lastPrice"], str) and isinstance(tk["count"], int) and tk["symbol"] == "BTCUSDT"
    _, hdr, tks = http_get(base + "/ticker/24hr")
    assert len(tks) == 40 and int(hdr["X-MBX-USED-WEIGHT-1M"]) == 12 + 1 + 40
    _, _, kl = http_get(base + "/klines?symbol=BTCUSDT&interval=1m&limit=5")
    row = kl[-1]
    assert [type(v).__name__ for v in row] == ["int", "str", "str", "str", "str", "str", "int", "str", "int",
                                               "str", "str", "str"]
    _, _, ats = http_get(base + "/aggTrades?symbol=BTCUSDT&limit=3")
    assert [list(a) for a in ats] == [["a", "p", "q", "f", "l", "T", "m"]] * 3
    assert ats[1]["a"] == ats[0]["a"] + 1
    st, _, err = http_get(base + "/openInterest?symbol=NOPEUSDT")
    assert st == 400 and err == {"code": -1121, "msg": "Invalid symbol."}


def test_ws_frames_match_recorded_shapes(sim):
    streams = ["btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@markPrice@1s", "!forceOrder@arr"]
    msgs = asyncio.run(collect(sim.ws_url + "/stream?streams=" + "/".join(streams), 400, timeout=20))
    by = {}
    for m in msgs:
        by.setdefault(m["stream"], m)
    assert _shape(by["btcusdt@aggTrade"]) == _shape(_recorded("@aggTrade"))
    assert _shape(by["btcusdt@kline_1m"]) == _shape(_recorded("@kline_1m"))
    mark = by["btcusdt@markPrice@1s"]["data"]
    assert list(mark) == ["e", "E", "s", "p", "i", "P", "r", "T"] and isinstance(mark["T"], int)
    fo = by["!forceOrder@arr"]["data"]
    assert list(fo) == ["e", "E", "o"] and list(fo["o"]) == ["s", "S", "o", "f", "q", "p", "ap", "X", "l", "z", "T"]


def test_1024_streams_and_20kb_url(sim):
    names = [s["symbol"].lower() for s in http_get(sim.rest_url + "/fapi/v1/exchangeInfo")[2]["symbols"]]
    kinds = ["aggTrade", "markPrice", "forceOrder", "kline_1m", "kline_3m", "kline_5m", "kline_15m", "kline_1h",
             "markPrice@1s", "kline_30m", "kline_2h", "kline_4h", "kline_6h", "kline_8h", "kline_12h", "kline_1d",
             "kline_3d", "kline_1w", "kline_1M", "bookTicker", "depth", "aggTrade@x", "unknownA", "unknownB",
             "unknownC", "unknownD"]
    streams = [f"{n}@{k}" for k in kinds for n in names][:600]
    # Unknown symbols are ignored like on Binance; they pad the URL to a realistic 496-symbol length.
    streams += [f"unknown{i:04d}usdt@markPrice@1s" for i in range(1024 - len(streams))]
    url = sim.ws_url + "/market/stream?streams=" + "/".join(streams)
    assert len(streams) == 1024 and len(url) > 20_000
    msgs = asyncio.run(collect(url, 50))
    assert all("stream" in m for m in msgs)

    async def too_many():
        with pytest.raises(websockets.InvalidStatus) as e:
            async with websockets.connect(url + "/ethusdt@aggTradeX"):
                pass
        return e.value.response.status_code
    assert asyncio.run(too_many()) == 400


def test_request_weight_429_then_418():
    h = run_in_thread(SimConfig(port=0, symbols=20, rate=10, weight_limit=100, ban_after_429s=2))
    try:
        url = h.rest_url + "/fapi/v1/ticker/24hr"   # weight 40 without symbol
        assert [http_get(url)[0] for _ in range(2)] == [200, 200]
        st, hdr, body = http_get(url)
        assert st == 429 and body["code"] == -1003 and int(hdr["Retry-After"]) > 0
        assert hdr["X-MBX-USED-WEIGHT-1M"] == "80"
        st2 = http_get(url)[0]
        st3, hdr3, _ = http_get(url)
        assert (st2, st3) == (429, 418) and int(hdr3["Retry-After"]) >= 60
        assert http_get(h.rest_url + "/fapi/v1/exchangeInfo")[0] == 418   # banned for everything
        assert h.truth(klines=False)["rest_status"]["418"] == 2
    finally:
        h.stop()
