"""OKX and Bybit protocol details a client depends on: subscribe acknowledgements, error answers, pings,
rate-limit answers, pagination, and the standalone `python -m exchange_sim --venue ...`."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from helpers import wait_for
from simhelpers import http_get

from exchange_sim import SimConfig, launch_subprocess, run_in_thread


@pytest.fixture
def okx():
    h = run_in_thread(SimConfig(venue="okx", symbols=10, rate=100, speed=60, venue_rest_limit=3))
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def bybit():
    h = run_in_thread(SimConfig(venue="bybit", symbols=10, rate=100, speed=60, venue_rest_limit=3))
    try:
        yield h
    finally:
        h.stop()


async def _exchange(url: str, sends: list, n: int, pred=lambda m: True, timeout: float = 15.0) -> list:
    """Send each message, then the first n answers (text frames, JSON-decoded when they are JSON) matching pred."""
    out: list = []
    async with websockets.connect(url, compression=None) as ws:
        for m in sends:
            await ws.send(m if isinstance(m, str) else json.dumps(m))
        async with asyncio.timeout(timeout):
            while len(out) < n:
                raw = await ws.recv()
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = raw
                if pred(msg):
                    out.append(msg)
    return out


def test_okx_subscribe_acks_errors_and_ping(okx):
    url = okx.ws_url + "/ws/v5/public"
    good = {"channel": "trades", "instId": "BTC-USDT-SWAP"}
    sends = [{"op": "subscribe", "args": [good, {"channel": "nope", "instId": "BTC-USDT-SWAP"},
                                          {"channel": "trades", "instId": "NOPE-USDT-SWAP"},
                                          {"channel": "candle1m", "instId": "BTC-USDT-SWAP"}]},
             "not json", "ping"]
    msgs = asyncio.run(_exchange(url, sends, 6, lambda m: not (isinstance(m, dict) and "data" in m)))
    assert msgs[0]["event"] == "subscribe" and msgs[0]["arg"] == good and len(msgs[0]["connId"]) == 8
    errors = [m for m in msgs if isinstance(m, dict) and m.get("event") == "error"]
    assert [e["code"] for e in errors] == ["60018", "60018", "60018", "60012"]
    assert "nope" in errors[0]["msg"] and "NOPE-USDT-SWAP" in errors[1]["msg"]
    assert msgs[-1] == "pong"
    # Candles live on /ws/v5/business; its frames carry the OKX candle array.
    frames = asyncio.run(_exchange(okx.ws_url + "/ws/v5/business",
                                   [{"op": "subscribe", "args": [{"channel": "candle1m", "instId": "BTC-USDT-SWAP"}]}],
                                   1, lambda m: "data" in m))
    row = frames[0]["data"][0]
    assert frames[0]["arg"] == {"channel": "candle1m", "instId": "BTC-USDT-SWAP"}
    assert len(row) == 9 and all(isinstance(v, str) for v in row) and row[8] in ("0", "1")


def test_okx_trades_and_liquidation_frames(okx):
    url = okx.ws_url + "/ws/v5/public"
    sub = {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT-SWAP"},
                                       {"channel": "liquidation-orders", "instType": "SWAP"}]}
    msgs = asyncio.run(_exchange(url, [sub], 2, lambda m: "data" in m and m["arg"]["channel"] == "trades"))
    trade = msgs[0]["data"][0]
    assert list(trade)[:6] == ["instId", "tradeId", "px", "sz", "side", "ts"] and trade["side"] in ("buy", "sell")
    nxt = msgs[1]["data"][0]  # tradeId is a push's last fill; its `count` fills follow the previous push's
    assert int(nxt["tradeId"]) - int(nxt["count"]) == int(trade["tradeId"]) and int(nxt["count"]) >= 1
    liq = asyncio.run(_exchange(url, [sub], 1, lambda m: "data" in m and m["arg"]["channel"] == "liquidation-orders",
                                timeout=30))[0]
    assert liq["arg"] == {"channel": "liquidation-orders", "instType": "SWAP"}
    d = liq["data"][0]["details"][0]
    assert {d["side"], d["posSide"]} in ({"sell", "long"}, {"buy", "short"})


def test_okx_rest_envelope_and_429(okx):
    base = okx.rest_url + "/api/v5"
    st, _, inst = http_get(base + "/public/instruments?instType=SWAP")
    assert st == 200 and inst["code"] == "0" and inst["msg"] == ""
    btc = next(i for i in inst["data"] if i["instId"] == "BTC-USDT-SWAP")
    assert (btc["settleCcy"], btc["ctValCcy"], btc["state"], btc["ctVal"]) == ("USDT", "BTC", "live", "0.01")
    assert {i["settleCcy"] for i in inst["data"]} == {"USDT", "USDC", "BTC", "ETH"}
    assert {i["state"] for i in inst["data"]} == {"live", "suspend", "preopen"}
    st, _, bad = http_get(base + "/public/funding-rate?instId=NOPE-USDT-SWAP")
    assert (st, bad["code"], bad["data"]) == (200, "51001", [])
    url = base + "/public/open-interest?instType=SWAP&instId=BTC-USDT-SWAP"
    answers = [http_get(url) for _ in range(4)]       # limit 3 per 2 s in this fixture
    assert [a[0] for a in answers[:3]] == [200, 200, 200]
    assert answers[3][0] == 429 and answers[3][2] == {"code": "50011", "msg": "Too Many Requests", "data": []}


def test_bybit_subscribe_ack_error_ping_and_tickers(bybit):
    url = bybit.ws_url + "/v5/public/linear"
    sends = [{"op": "subscribe", "args": ["tickers.BTCUSDT"], "req_id": "a1"},
             {"op": "subscribe", "args": ["nope.BTCUSDT", "publicTrade.NOPEUSDT"], "req_id": "a2"},
             {"op": "ping", "req_id": "p1"}]
    msgs = asyncio.run(_exchange(url, sends, 6, timeout=20))
    acks = [m for m in msgs if "success" in m]
    assert acks[0]["success"] is True and acks[0]["req_id"] == "a1" and acks[0]["op"] == "subscribe"
    assert acks[0]["ret_msg"] == "" and acks[0]["conn_id"]
    assert acks[1]["success"] is False and "nope.BTCUSDT" in acks[1]["ret_msg"]
    assert {"success": True, "ret_msg": "pong", "req_id": "p1", "op": "ping"}.items() <= acks[2].items()
    ticks = [m for m in msgs if m.get("topic") == "tickers.BTCUSDT"]
    assert ticks[0]["type"] == "snapshot" and all(t["type"] == "delta" for t in ticks[1:])
    snap = ticks[0]["data"]
    for k in ("fundingRate", "nextFundingTime", "markPrice", "indexPrice", "openInterest"):
        assert isinstance(snap[k], str), k


def test_bybit_rest_pagination_and_10006(bybit):
    base = bybit.rest_url + "/v5/market"
    st, _, p1 = http_get(base + "/instruments-info?category=linear&limit=8")
    cursor = p1["result"]["nextPageCursor"]
    st2, _, p2 = http_get(base + f"/instruments-info?category=linear&limit=8&cursor={cursor}")
    rows = p1["result"]["list"] + p2["result"]["list"]
    assert (st, st2, p1["retCode"], p1["retMsg"]) == (200, 200, 0, "OK") and cursor
    assert p2["result"]["nextPageCursor"] == "" and len({r["symbol"] for r in rows}) == 14
    perps = [r for r in rows if r["contractType"] == "LinearPerpetual" and r["quoteCoin"] == "USDT"
             and r["status"] == "Trading"]
    assert len(perps) == 10
    url = base + "/tickers?category=linear&symbol=BTCUSDT"
    answers = [http_get(url) for _ in range(4)]       # limit 3 per second in this fixture
    assert [a[2]["retCode"] for a in answers[:3]] == [0, 0, 0]
    assert [a[1]["X-Bapi-Limit-Status"] for a in answers[:3]] == ["2", "1", "0"]
    st, hdr, body = answers[3]
    assert (st, body["retCode"], body["retMsg"]) == (200, 10006, "Too many visits!")
    assert hdr["X-Bapi-Limit"] == "3" and int(hdr["X-Bapi-Limit-Reset-Timestamp"]) > 0


def _okx_live(body: dict) -> list:
    return [r for r in body["data"] if r["settleCcy"] == "USDT" and r["state"] == "live"]


def _bybit_live(body: dict) -> list:
    return [r for r in body["result"]["list"] if r["quoteCoin"] == "USDT" and r["status"] == "Trading"
            and r["contractType"] == "LinearPerpetual"]


@pytest.mark.parametrize(("venue", "path", "live", "count"), [
    ("okx", "/api/v5/public/instruments?instType=SWAP", _okx_live, 250),
    ("bybit", "/v5/market/instruments-info?category=linear&limit=1000", _bybit_live, 400),
])
def test_standalone_cli_default_universe(venue, path, live, count):
    # launch_subprocess runs `python -m exchange_sim --venue <venue>` and waits for its "ready" line.
    proc = launch_subprocess(SimConfig(venue=venue, rate=10))
    try:
        status, _, body = http_get(proc.rest_url + path)
        assert status == 200 and len(live(body)) == count
    finally:
        proc.stop()


def test_okx_shared_faults_skip_gap_and_injected_frames(okx):
    """The Binance fault controls act on the OKX wire: skipped trades leave a gap in the fill ids (a push's
    tradeId is its last fill's, `count` fills back to the previous push's when none is missing),
    injected frames are OKX-shaped (truncated JSON, a trade for an instrument never listed)."""
    url = okx.ws_url + "/ws/v5/public"
    sub = {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT-SWAP"}]}

    async def run() -> tuple[list, list]:
        ids: list = []
        raw: list = []
        async with websockets.connect(url, compression=None) as ws:
            await ws.send(json.dumps(sub))
            async with asyncio.timeout(20):
                while not ids:
                    m = json.loads(await ws.recv())
                    if "data" in m:
                        ids.append((int(m["data"][0]["tradeId"]), int(m["data"][0]["count"])))
                await asyncio.to_thread(okx.skip_ids, "BTC-USDT-SWAP", 3)
                await asyncio.to_thread(okx.inject, "malformed")
                await asyncio.to_thread(okx.inject, "unknown_symbol")
                while len(raw) < 2 or all(b - n == a for (a, _), (b, n) in zip(ids, ids[1:], strict=False)):
                    text = await ws.recv()
                    try:
                        m = json.loads(text)
                    except ValueError:
                        raw.append(text)
                        continue
                    if m["data"][0]["instId"] == "ZZZZZ-USDT-SWAP":
                        raw.append(m)
                    else:
                        ids.append((int(m["data"][0]["tradeId"]), int(m["data"][0]["count"])))
        return ids, raw
    ids, raw = asyncio.run(run())
    missed = [b - n - a for (a, _), (b, n) in zip(ids, ids[1:], strict=False) if b - n != a]
    assert len(missed) == 1 and missed[0] >= 3  # three pushes of >= 1 fill each
    assert isinstance(raw[0], str) and raw[0].startswith('{"arg":{"channel":"trades"')
    assert raw[1]["arg"] == {"channel": "trades", "instId": "ZZZZZ-USDT-SWAP"}
    truth = okx.truth(klines=False)
    assert truth["symbols"]["BTC-USDT-SWAP"]["trade_ids"]["skipped"][-1][1] - \
        truth["symbols"]["BTC-USDT-SWAP"]["trade_ids"]["skipped"][-1][0] == 2
    assert truth["injected"] == {"malformed": 1, "unknown_symbol": 1}


def test_okx_history_trades_cursors(okx):
    """GET /api/v5/market/history-trades: fills, newest first (a push's `count` fills one by one); type 1 cursors are tradeIds (`after` older than, `before` newer than, both
    exclusive), type 2 `after` a ts; sz in contracts, as the stream sends it."""
    base = okx.rest_url + "/api/v5/market/history-trades?instId=BTC-USDT-SWAP"

    def get(query: str) -> list:
        http_get(okx.rest_url + "/_sim/reset_weights")  # this fixture allows 3 requests per 2 s
        status, _, body = http_get(base + query)
        assert status == 200 and body["code"] == "0", body
        return body["data"]

    wait_for(lambda: len(get("&limit=100")) >= 20, 30, "BTC-USDT-SWAP trades")
    newest = get("&limit=10")
    ids = [int(r["tradeId"]) for r in newest]
    assert ids == list(range(ids[0], ids[0] - 10, -1))  # newest first, consecutive
    assert set(newest[0]) == {"instId", "side", "sz", "px", "source", "tradeId", "ts"}
    top = ids[0]
    assert [int(r["tradeId"]) for r in get(f"&type=1&after={top - 2}&limit=3")] == [top - 3, top - 4, top - 5]
    window = get(f"&after={top - 2}&before={top - 8}")
    assert [int(r["tradeId"]) for r in window] == list(range(top - 3, top - 8, -1))
    ts = int(newest[4]["ts"])
    assert all(int(r["ts"]) < ts for r in get(f"&type=2&after={ts}&limit=5"))
    assert len(get("&limit=500")) == 100  # the documented maximum
