"""One test per fault, each asserting what a client actually sees."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets
from simhelpers import collect, http_get, wait_for

from exchange_sim import SimConfig, run_in_thread

pytestmark = pytest.mark.faults
EXCERPT = Path(__file__).parent.parent / "data" / "binance_futures_ws_excerpt.txt"


def _url(sim, *streams):
    return sim.ws_url + "/market/stream?streams=" + "/".join(streams)


def test_drop_then_reconnect_resumes(sim):
    async def go():
        async with websockets.connect(_url(sim, "btcusdt@aggTrade"), compression=None) as ws:
            first = json.loads(await ws.recv())["data"]["a"]
            await asyncio.to_thread(sim.drop_all)
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
        again = await collect(_url(sim, "btcusdt@aggTrade"), 5)
        return first, again[0]["data"]["a"]
    first, later = asyncio.run(go())
    assert later > first
    assert any(f["kind"] == "drop_all" for f in sim.truth(klines=False)["faults"])


def test_stall_keeps_socket_open_but_silent(sim):
    async def go():
        async with websockets.connect(_url(sim, "btcusdt@aggTrade"), compression=None) as ws:
            await ws.recv()
            await asyncio.to_thread(sim.stall)
            # Drain what was already queued before the stall, then expect silence with the socket open.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.5):
                    while True:
                        await ws.recv()
            await ws.ping()
            await asyncio.to_thread(sim.stall, None, False)
            return json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert asyncio.run(go())["stream"] == "btcusdt@aggTrade"


def test_malformed_and_unknown_symbol_frames_arrive(sim):
    async def go():
        async with websockets.connect(_url(sim, "btcusdt@aggTrade"), compression=None) as ws:
            await ws.recv()
            await asyncio.to_thread(sim.inject, "malformed")
            await asyncio.to_thread(sim.inject, "unknown_symbol")
            bad = unknown = None
            async with asyncio.timeout(10):
                while bad is None or unknown is None:
                    raw = await ws.recv()
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        bad = raw
                        continue
                    if msg["stream"].startswith("zzzzz"):
                        unknown = msg
            return bad, unknown
    bad, unknown = asyncio.run(go())
    assert bad.startswith('{"stream"') and unknown["data"]["s"] == "ZZZZZUSDT"
    assert sim.truth(klines=False)["injected"] == {"malformed": 1, "unknown_symbol": 1}


@pytest.fixture
def slow_sim():
    # At the module's speed 60 BTCUSDT trades ~2,400 times a wall second, so its 10,000-trade REST history spans
    # ~4 s: a client that fell behind the stream under load (seen in CI: ~9 s) asked for ids already evicted and
    # got the oldest retained ones. At speed 1 the same history spans minutes; the skip does not depend on speed.
    h = run_in_thread(SimConfig(port=0, symbols=40, rate=200, speed=1, seed=7))
    try:
        yield h
    finally:
        h.stop()


def test_skipped_ids_jump_on_wire_and_rest_backfills(slow_sim):
    sim = slow_sim

    async def go():
        async with websockets.connect(_url(sim, "btcusdt@aggTrade"), compression=None) as ws:
            # from the last id read before the skip: at speed 1 the very next frame may already be past the gap
            prev = json.loads(await ws.recv())["data"]["a"]
            await asyncio.to_thread(sim.skip_ids, "BTCUSDT", 25)
            async with asyncio.timeout(10):
                while True:
                    a = json.loads(await ws.recv())["data"]["a"]
                    if a != prev + 1:
                        return prev, a
                    prev = a
    before, after = asyncio.run(go())
    assert after - before == 26
    skipped = sim.truth(klines=False)["symbols"]["BTCUSDT"]["agg_ids"]["skipped"]
    assert skipped == [[before + 1, after - 1]]
    _, _, rows = http_get(f"{sim.rest_url}/fapi/v1/aggTrades?symbol=BTCUSDT&fromId={before + 1}&limit=25")
    assert [r["a"] for r in rows] == list(range(before + 1, after))


@pytest.mark.parametrize("status", [429, 418, 500])
def test_rest_fault_status_and_retry_after(sim, status):
    sim.set_rest_fault(status=status, count=2, retry_after=7)
    url = sim.rest_url + "/fapi/v1/exchangeInfo"
    for _ in range(2):
        st, hdr, body = http_get(url)
        assert st == status and "code" in body and "X-MBX-USED-WEIGHT-1M" in hdr
        if status != 500:
            assert hdr["Retry-After"] == "7"
    assert http_get(url)[0] == 200


def test_slow_rest(sim):
    sim.set_rest_fault(delay_s=0.5, count=1)
    import time
    t0 = time.monotonic()
    assert http_get(sim.rest_url + "/fapi/v1/time")[0] == 200
    assert time.monotonic() - t0 >= 0.5


def test_list_and_delist_change_exchange_info(sim):
    sim.delist_symbol("ETHUSDT")
    sim.list_symbol("NEWLYUSDT", 2.5)
    info = http_get(sim.rest_url + "/fapi/v1/exchangeInfo")[2]
    status = {s["symbol"]: s["status"] for s in info["symbols"]}
    assert status["ETHUSDT"] == "SETTLING" and status["NEWLYUSDT"] == "TRADING"
    n = sim.truth(klines=False)["symbols"]["ETHUSDT"]["aggTrade"]
    wait_for(lambda: sim.truth(klines=False)["symbols"]["NEWLYUSDT"]["markPrice@1s"] > 3, 10, "new symbol marks")
    assert sim.truth(klines=False)["symbols"]["ETHUSDT"]["aggTrade"] == n   # delisted: no more trades
    events = [(e["symbol"], e["event"]) for e in sim.truth(klines=False)["listings"]]
    assert ("ETHUSDT", "delisted") in events and ("NEWLYUSDT", "listed") in events


def test_24h_cut_and_server_ping():
    # max_conn_age in sim seconds: at speed 3600 "24 h" of sim time is 24 wall seconds; use 2 sim hours.
    h = run_in_thread(SimConfig(port=0, symbols=10, rate=20, speed=3600, max_conn_age_s=7200,
                                ping_interval_s=0.2, pong_timeout_s=5))
    try:
        async def go():
            async with websockets.connect(_url(h, "btcusdt@markPrice"), compression=None) as ws:
                with pytest.raises(websockets.ConnectionClosed):
                    async with asyncio.timeout(15):
                        while True:
                            await ws.recv()
                return ws.close_code
        assert asyncio.run(go()) == 1000
        kinds = [f["kind"] for f in h.truth(klines=False)["faults"]]
        assert "conn_24h_cut" in kinds and "pong_timeout" not in kinds   # the client answered pings
    finally:
        h.stop()


def test_replay_serves_recorded_frames():
    h = run_in_thread(SimConfig(port=0, symbols=5, replay=str(EXCERPT), replay_speed=0))
    try:
        recorded = [line.split(": ", 1)[1] for line in EXCERPT.read_text().splitlines()[1:]]
        wanted = [r for r in recorded if '"sushiusdt@aggTrade"' in r or '"sushiusdt@kline_1m"' in r]
        assert len(wanted) > 3
        got = asyncio.run(collect(_url(h, "sushiusdt@aggTrade", "sushiusdt@kline_1m"), len(wanted)))
        assert [json.dumps(g, separators=(",", ":")) for g in got] == wanted
    finally:
        h.stop()
