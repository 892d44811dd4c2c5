"""collector.feed.pacing: when a worker rests between reads, decided directly; and over a real socket to the
simulator through picows, that a resting worker reads once per tick of the rest's grid, just after the tick,
loses nothing and keeps order, that what it holds is sent before each rest, and that it does not rest while
a REST request of its RestClient is in flight."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from helpers import wait_for
from test_direct_batches import BatchRecorder, _run
from test_wsfast import OPTIONS, _url

from collector.feed.pacing import PACER, ReadPacer
from collector.feed.rest_client import RestClient
from collector.feed.websocket import PicowsConnection
from exchange_sim import SimConfig, run_in_thread


def test_rest_for() -> None:
    p = ReadPacer(rest_s=0.04, busy_rate=2500.0)  # busy from 100 frames a turn
    assert p.rest_for(5, 10.0) == 0.0  # the first turn: no previous one to be close to
    p.turn_end = 10.0
    # light and soon after the previous turn: rest to the next tick of the 40 ms grid (10.04), not 40 ms
    assert p.rest_for(5, 10.01) == pytest.approx(0.03)
    assert p.rest_for(99, 10.039) == pytest.approx(0.001)
    assert p.rest_for(100, 10.01) == 0.0  # busy: never slowed
    assert p.rest_for(5, 10.05) == 0.0  # seldom reads (an idle worker's mark prices): taken at once
    p.turn_end = 10.02
    assert p.rest_for(99, 10.0401) == pytest.approx(0.0399)  # just past a tick: to the next one
    assert ReadPacer(rest_s=0.0).rest_for(1, 0.0) == 0.0  # read_rest_ms 0: never
    longer = ReadPacer(rest_s=0.08, busy_rate=2500.0)  # busy is a rate: 200 frames a turn at an 80 ms rest
    longer.turn_end = 10.0
    assert longer.rest_for(150, 10.01) == pytest.approx(0.07)
    assert longer.rest_for(200, 10.01) == 0.0
    longer.requests = 1  # a REST request in flight: its answer must not wait out rests
    assert longer.rest_for(150, 10.01) == 0.0


def test_every_rest_ends_on_the_shared_grid() -> None:
    """Two pacers (two workers) whose turns end at unrelated times wake on the same ticks: the grid is the
    clock's, not the pacer's."""
    a, b = ReadPacer(rest_s=0.05), ReadPacer(rest_s=0.05)
    a.turn_end = b.turn_end = 1000.0
    for now_a, now_b in ((1000.003, 1000.021), (1000.017, 1000.049), (1000.0001, 1000.0449)):
        wake_a, wake_b = now_a + a.rest_for(1, now_a), now_b + b.rest_for(1, now_b)
        assert wake_a == pytest.approx(1000.05) and wake_b == pytest.approx(1000.05)


@pytest.fixture
def sim():
    h = run_in_thread(SimConfig(port=0, symbols=12, rate=400, speed=1, seed=5))
    try:
        yield h
    finally:
        h.stop()


def _gaps(receipts: list[float]) -> list[float]:
    return [b - a for a, b in zip(receipts, receipts[1:], strict=False)]


class _ClockedRecorder(BatchRecorder):
    """Also notes each read's time.monotonic(), the clock the pacer's grid is drawn on."""

    def __init__(self, conn: PicowsConnection) -> None:
        super().__init__(conn)
        self.monotonic: list[float] = []

    def __call__(self, messages, conn, receipt) -> None:
        self.monotonic.append(time.monotonic())
        super().__call__(messages, conn, receipt)


def _session(sim, reads: int) -> tuple[_ClockedRecorder, list[float]]:
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)
    rec = _ClockedRecorder(conn)

    async def body() -> None:
        await asyncio.to_thread(wait_for, lambda: rec.calls > reads, 60, f"{reads} reads handed over")

    asyncio.run(_run(conn, rec, body))
    return rec, _gaps(rec.receipts[5:])  # past the subscription answers


def test_a_light_stream_is_read_a_rest_apart_and_nothing_is_lost(sim, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(PACER, "rest_s", 0.0)
    unpaced, gaps = _session(sim, 60)
    assert PACER.rests == 0
    fast = sum(g < 0.02 for g in gaps)
    assert fast > len(gaps) / 2, gaps  # the control: ~400 frames/s arrive in reads a few ms apart

    monkeypatch.setattr(PACER, "rest_s", 0.05)
    monkeypatch.setattr(PACER, "rests", 0)
    monkeypatch.setattr(PACER, "before_rest", lambda: sent.append(PACER.rests))
    paced, _ = _session(sim, 60)
    assert PACER.rests >= 50
    assert sent == list(range(PACER.rests))  # before every rest, and once
    # one read per tick of the 50 ms grid: none in the tick of the one before it, and most just after a tick
    # (each rest ends on one; a read sits later in its tick only when the machine was slow to wake the test)
    ticks = [int(t // 0.05) for t in paced.monotonic[5:]]
    assert all(b > a for a, b in zip(ticks, ticks[1:], strict=False)), ticks
    phases = sorted(t % 0.05 for t in paced.monotonic[5:])
    assert phases[len(phases) // 2] < 0.01, phases  # without the grid, spread over the whole 50 ms
    assert paced.frames / paced.calls > 4 * unpaced.frames / unpaced.calls
    for sym, ids in paced.ids.items():
        assert ids == list(range(ids[0], ids[0] + len(ids))), sym  # in order, none lost, none twice


def test_a_busy_stream_is_never_slowed(sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PACER, "rest_s", 0.05)
    monkeypatch.setattr(PACER, "busy_rate", 1.0)  # every read is busy
    monkeypatch.setattr(PACER, "rests", 0)
    _, gaps = _session(sim, 60)
    assert PACER.rests == 0
    assert sum(g < 0.02 for g in gaps) > len(gaps) / 2


def test_no_rest_while_a_rest_request_is_in_flight(sim, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the exchange a second slow to answer, the worker reads its stream as it comes (no rest) until the
    answer is in, and rests again after; a failed request is counted back too."""
    monkeypatch.setattr(PACER, "rest_s", 0.05)
    monkeypatch.setattr(PACER, "rests", 0)
    sym = sorted(sim.truth(klines=False)["symbols"])[0]
    conn = PicowsConnection(_url(sim), "T", **OPTIONS)
    rec = _ClockedRecorder(conn)
    seen: dict[str, float] = {}

    async def body() -> None:
        await asyncio.to_thread(wait_for, lambda: PACER.rests >= 10, 60, "ten rests before the request")
        sim.set_rest_fault(delay_s=1.0, count=1)
        rest = RestClient()
        try:
            t0, rests0 = time.monotonic(), PACER.rests
            status, _, _ = await rest.get(f"{sim.rest_url}/fapi/v1/openInterest?symbol={sym}")
            seen.update(t0=t0, t1=time.monotonic(), rests=PACER.rests - rests0, status=status,
                        after=PACER.requests)
            with pytest.raises(aiohttp.ClientError):
                await rest.get("http://127.0.0.1:1/")  # refused
            seen["after_failure"] = PACER.requests
        finally:
            await rest.close()
        rests1 = PACER.rests
        await asyncio.to_thread(wait_for, lambda: PACER.rests >= rests1 + 10, 60, "ten rests after the request")

    asyncio.run(_run(conn, rec, body))
    assert seen["status"] == 200
    assert seen["t1"] - seen["t0"] >= 1.0  # the control: the request was in flight for the whole delay
    assert seen["rests"] == 0
    # ~400 frames/s read as they come: many reads in that second, not one per 50 ms tick (20)
    assert sum(seen["t0"] < t < seen["t1"] for t in rec.monotonic) > 60
    assert seen["after"] == 0 and seen["after_failure"] == 0
    assert PACER.requests == 0


def test_sighup_sets_the_rest() -> None:
    """exchange.read_rest_ms applies live (collector.runtime.worker_control.apply_live_config, a worker's SIGHUP)."""
    import msgspec

    from collector.config import Config
    from collector.pipeline.router import Pipeline
    from collector.pipeline.trade_filter import TradeFilter
    from collector.runtime.worker_control import apply_live_config

    tf = TradeFilter()
    pipe = Pipeline(["BTCUSDT"], ["trades"], tf, lambda b: None, venue="binance")
    cfg = Config()
    apply_live_config(msgspec.structs.replace(cfg, exchange=msgspec.structs.replace(cfg.exchange, read_rest_ms=0)),
                      pipe, tf)
    assert PACER.rest_s == 0.0
    apply_live_config(cfg, pipe, tf)
    assert PACER.rest_s == 0.08  # the shipped default
