"""Backfill on its own: request planning, budget use and 429/418 handling against a fake exchange,
and the pipeline's backfill entry points (same validation and filter as live trades, live ids untouched)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from collector.feed.backfill import TRADES_RESERVE, Backfiller
from collector.feed.backfill_plan import AGG_TRADES_WEIGHT, agg_trade_page, kline_pages, kline_weight
from collector.feed.wire import AggTrade
from collector.pipeline.batches import Batch
from collector.pipeline.limits import WeightBudget
from collector.pipeline.router import Gap, Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


# --- planning --------------------------------------------------------------------------------------------------


def test_pages_cover_a_gap_exactly() -> None:
    assert agg_trade_page("BTCUSDT", 100, 100)[1] == {"symbol": "BTCUSDT", "fromId": 100, "limit": 1}
    assert agg_trade_page("BTCUSDT", 1001, 2500)[1] == {"symbol": "BTCUSDT", "fromId": 1001, "limit": 1000}
    assert agg_trade_page("BTCUSDT", 2001, 2500)[1]["limit"] == 500  # never more than the gap
    with pytest.raises(ValueError):
        agg_trade_page("BTCUSDT", 11, 10)


def test_kline_pages_and_weights() -> None:
    assert [kline_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [1, 1, 2, 2, 5, 5, 10, 10]
    (page,) = kline_pages("BTCUSDT", T0, T0 + 4 * 60_000)
    assert page[1] == {"symbol": "BTCUSDT", "interval": "1m", "startTime": T0, "endTime": T0 + 240_000, "limit": 5}
    assert page[2] == 1
    pages = kline_pages("BTCUSDT", T0, T0 + 1999 * 60_000)  # 2000 minutes: 1500 + 500
    assert [p[1]["limit"] for p in pages] == [1500, 500]
    assert pages[1][1]["startTime"] == T0 + 1500 * 60_000


# --- the loop against a fake exchange --------------------------------------------------------------------------


class FakeClock:
    """Wall clock the fake exchange and the budget share; advanced by the backfiller's sleeps."""

    def __init__(self) -> None:
        self.t = T0 / 1000

    def __call__(self) -> float:
        return self.t


class FakeExchange:
    """aggTrades ids 1..history_end (consecutive), klines, and scripted error answers."""

    def __init__(self, clock: FakeClock, history: range = range(1, 5001)) -> None:
        self.clock = clock
        self.history = history
        self.script: list[tuple[int, dict[str, str]]] = []  # answers before serving normally
        self.requests: list[tuple[float, str, dict]] = []

    async def fetch(self, url: str) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.requests.append((self.clock(), parts.path, q))
        if self.script:
            status, headers = self.script.pop(0)
            return status, headers, b'{"code":-1003,"msg":"Too many requests"}'
        if parts.path == "/fapi/v1/aggTrades":
            start, limit = int(q["fromId"]), int(q["limit"])
            ids = [a for a in range(start, start + limit) if a in self.history]
            rows = [{"a": a, "p": "100.0", "q": "1", "f": 2 * a, "l": 2 * a, "T": T0 + a, "m": False} for a in ids]
            return 200, {}, json.dumps(rows).encode()
        start, end = int(q["startTime"]), int(q["endTime"])
        rows = [[t, "1", "2", "0.5", "1.5", "10", t + 59_999, "15", 3, "4", "6", "0"]
                for t in range(start, end + 1, 60_000)]
        return 200, {}, json.dumps(rows).encode()


class Recorder:
    """The sink: a real pipeline in keep_all, so every backfilled trade is kept and counted."""

    def __init__(self) -> None:
        self.out: list[Batch] = []
        self.pipe = Pipeline(["BTCUSDT", "ETHUSDT"], ["trades", "candles_1m"],
                             TradeFilter(FilterParams(keep_all=True)), self.out.append, venue="binance")


def run_backfill(jobs: list, exchange: FakeExchange, budget: WeightBudget, clock: FakeClock,
                 sink: Recorder) -> Backfiller:
    """Run the backfiller until its queue is drained, with sleeps advancing the fake clock instantly."""

    async def main() -> Backfiller:
        stop = asyncio.Event()
        bf = Backfiller("http://exchange.invalid", sink.pipe, budget, stop, fetch=exchange.fetch, clock=clock)

        async def fast_pause(seconds: float) -> bool:
            clock.t += seconds
            await asyncio.sleep(0)
            return stop.is_set()

        bf._pause = fast_pause  # type: ignore[method-assign]
        sink.pipe.on_gap = bf.add_trade_gap  # as the worker wires it: gaps found meanwhile are repaired too
        for job in jobs:
            if isinstance(job, Gap):
                bf.add_trade_gap(job)
            elif job[0] == "tail":
                bf.add_tail_check(job[1], job[2])
            else:
                bf.add_candle_gap(*job)
        task = asyncio.create_task(bf.run())
        await asyncio.wait_for(bf.queue.join(), 10)
        stop.set()
        await task
        return bf

    return asyncio.run(main())


def gap_versions(sink: Recorder) -> list[tuple[str, str, int, int, str, bool]]:
    """Every gaps row sent, in order, decoded from COPY binary: (kind, symbol, from, to, state, filled_at set)."""
    sink.pipe.flush_all()
    out = []
    for b in sink.out:
        if b.table != "gaps":
            continue
        data, pos = b.data, 0
        for _ in range(b.rows):
            n = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
            fields: list[bytes | None] = []
            for _ in range(n):
                size = int.from_bytes(data[pos:pos + 4], "big", signed=True)
                pos += 4
                fields.append(None if size < 0 else data[pos:pos + size])
                pos += max(size, 0)
            venue, sym, kind, lo, hi, _, filled, state = fields[:8]
            assert venue == b"binance"
            out.append((kind.decode(), sym.decode(), int.from_bytes(lo, "big"), int.from_bytes(hi, "big"),
                        state.decode(), filled is not None))
    return out


def stored_trade_ids(sink: Recorder) -> int:
    sink.pipe.flush_all()
    return sum(b.rows for b in sink.out if b.table == "trades")


def test_gap_is_paged_until_covered_and_stored_filled() -> None:
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock)
    budget = WeightBudget(clock() * 1000, fraction=0.5)  # 1200/min
    bf = run_backfill([Gap("BTCUSDT", 100, 2599, T0)], exchange, budget, clock, sink)
    assert [int(q["fromId"]) for _, _, q in exchange.requests] == [100, 1100, 2100]
    assert sink.pipe.backfilled["trades"] == 2500 and bf.counts["gaps_filled"] == 1
    assert stored_trade_ids(sink) == 2500
    # durable from detection: a row when found, when its repair starts, and when it is filled
    assert gap_versions(sink) == [("trades", "BTCUSDT", 100, 2599, "detected", False),
                                  ("trades", "BTCUSDT", 100, 2599, "filling", False),
                                  ("trades", "BTCUSDT", 100, 2599, "filled", True)]
    assert bf.counts["gaps_unfilled"] == 0


def test_history_that_no_longer_covers_the_gap_is_stored_unfilled() -> None:
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock, history=range(150, 5001))  # ids 100..149 are gone
    bf = run_backfill([Gap("BTCUSDT", 100, 199, T0)], exchange, WeightBudget(clock() * 1000), clock, sink)
    assert bf.counts["gaps_unfilled"] == 1 and bf.counts["gaps_filled"] == 0
    assert sink.pipe.backfilled["trades"] == 50  # what exists is still recovered
    assert gap_versions(sink)[-1] == ("trades", "BTCUSDT", 100, 199, "unfillable", False)


def test_mass_gaps_stay_within_the_budget() -> None:
    """60 gaps at once with a 600/min budget (30 requests/min at weight 20): paced, never over."""
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock)
    budget = WeightBudget(clock() * 1000, limit_per_min=2400, fraction=0.25)  # 600 weight/min
    gaps = [Gap("BTCUSDT" if i % 2 else "ETHUSDT", 1 + 10 * i, 5 + 10 * i, T0) for i in range(60)]
    run_backfill(gaps, exchange, budget, clock, sink)
    times = [t for t, _, _ in exchange.requests]
    assert len(times) == 60
    # the bucket starts full (600 = 30 requests), then refills at 600/min: request k waits for it
    for k, t in enumerate(times):
        window = [u for u in times if t - 60 < u <= t]
        assert len(window) * AGG_TRADES_WEIGHT <= 2 * 600, (k, len(window))
    assert times[-1] - times[0] >= 60 * (60 - 30) * AGG_TRADES_WEIGHT / 600 - 1  # ~60 s of refill needed
    assert sink.pipe.backfilled["gaps_filled"] == 60


@pytest.mark.parametrize("status, retry_after", [(429, "7"), (418, "120")])
def test_retry_after_is_honoured(status: int, retry_after: str) -> None:
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock)
    exchange.script = [(status, {"Retry-After": retry_after})]
    budget = WeightBudget(clock() * 1000)
    run_backfill([Gap("BTCUSDT", 10, 19, T0)], exchange, budget, clock, sink)
    (t1, *_), (t2, *_) = exchange.requests
    assert t2 - t1 >= float(retry_after)
    # and no longer than needed: the pause, or the refill of the emptied bucket up to the page's weight
    # plus the reserve it leaves for candle repairs, whichever is later
    refill_s = (AGG_TRADES_WEIGHT + TRADES_RESERVE * budget.capacity) / budget.capacity * 60
    assert t2 - t1 < max(float(retry_after), refill_s) + 1
    assert sink.pipe.backfilled["trades"] == 10


def test_other_failures_are_retried_then_given_up() -> None:
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock)
    exchange.script = [(500, {})] * 10
    bf = run_backfill([Gap("BTCUSDT", 10, 19, T0)], exchange, WeightBudget(clock() * 1000), clock, sink)
    assert len(exchange.requests) == 4  # MAX_ATTEMPTS, then the repair is deferred
    # a failing exchange is not "the data is gone": the gap stays detected, for a later retry
    assert bf.counts["gaps_unfilled"] == 0 and bf.counts["repairs_deferred"] == 1
    assert gap_versions(sink)[-1] == ("trades", "BTCUSDT", 10, 19, "detected", False)


def test_missing_candles_fetched() -> None:
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock)
    bf = run_backfill([("BTCUSDT", T0, T0 + 2 * 60_000)], exchange, WeightBudget(clock() * 1000), clock, sink)
    assert bf.counts["candles"] == 3
    sink.pipe.flush_all()
    assert sum(b.rows for b in sink.out if b.table == "candles_1m") == 3
    assert [v[4] for v in gap_versions(sink)] == ["detected", "filling", "filled"]
    assert gap_versions(sink)[0][:4] == ("candles_1m", "BTCUSDT", T0, T0 + 2 * 60_000)


# --- the pipeline's side ---------------------------------------------------------------------------------------


def trade(a: int, p: str = "100.0", q: str = "1", t: int = T0) -> AggTrade:
    return AggTrade(E=t, s="BTCUSDT", a=a, p=p, q=q, f=a, l=a, T=t, m=False)


def test_candle_jump_reports_the_missing_minutes() -> None:
    from collector.feed.wire import Kline, KlineBody

    seen: list[tuple[str, int, int]] = []
    pipe = Pipeline(["BTCUSDT"], ["candles_1m"], TradeFilter(), lambda b: None, venue="binance",
                    on_candle_gap=lambda *a: seen.append(a))

    def kline(t: int) -> Kline:
        return Kline(E=t + 60_000, s="BTCUSDT", k=KlineBody(t=t, T=t + 59_999, s="BTCUSDT", i="1m", o="1", c="1",
                                                             h="1", l="1", v="1", n=1, x=True, q="1", V="1", Q="1"))

    for t in (T0, T0 + 60_000, T0 + 4 * 60_000, T0 + 4 * 60_000, T0 + 5 * 60_000):
        pipe.on_kline(kline(t), T0 / 1000)
    assert seen == [("BTCUSDT", T0 + 120_000, T0 + 180_000)]


def test_backfilled_trades_do_not_disturb_the_live_sequence() -> None:
    gaps: list[Gap] = []
    out: list[Batch] = []
    pipe = Pipeline(["BTCUSDT"], ["trades"], TradeFilter(FilterParams(keep_all=True)), out.append, venue="binance",
                    on_gap=gaps.append)
    pipe.on_trade(trade(1), T0 / 1000)
    pipe.on_trade(trade(5), T0 / 1000)
    (gap,) = gaps
    assert (gap.from_id, gap.to_id, gap.detected_ms) == (2, 4, T0)
    for a in (2, 3, 4):
        assert pipe.on_backfill_trade(trade(a), gap, T0 / 1000)
    assert not pipe.on_backfill_trade(trade(6), gap, T0 / 1000)  # outside the gap
    assert not pipe.on_backfill_trade(trade(3, p="-1"), gap, T0 / 1000)
    assert not pipe.on_backfill_trade(trade(3, t=T0 // 1000), gap, T0 / 1000)
    assert pipe.rejected["duplicate_or_old_id"] == 1 and pipe.rejected["non_positive_or_infinite"] == 1
    assert pipe.rejected["absurd_timestamp"] == 1
    pipe.on_trade(trade(6), T0 / 1000)  # the live sequence continues from 5: no new gap, no duplicate
    assert len(gaps) == 1 and pipe.rejected["duplicate_or_old_id"] == 1
    pipe.flush_all()
    assert sum(b.rows for b in out if b.table == "trades") == 6


def test_backfill_is_filtered_from_the_state_before_the_gap() -> None:
    """Smart filter: the 0.5% move inside the gap is kept as price_change; the live filter is untouched."""
    gaps: list[Gap] = []
    pipe = Pipeline(["BTCUSDT"], ["trades"], TradeFilter(FilterParams(tier_intervals_s=(60, 60, 60, 60))),
                    lambda b: None, venue="binance", on_gap=gaps.append)
    pipe.on_trade(trade(1, p="100.0"), T0 / 1000)  # time_interval (first)
    pipe.on_trade(trade(4, p="100.1", t=T0 + 10), T0 / 1000)  # dropped
    live = pipe.trade_filter.symbol("BTCUSDT")
    before = (live.last_price, live.last_ts)
    assert pipe.on_backfill_trade(trade(2, p="101.0", t=T0 + 5), gaps[0], T0 / 1000)  # +1% vs 100.0
    assert not pipe.on_backfill_trade(trade(3, p="101.1", t=T0 + 6), gaps[0], T0 / 1000)
    assert (live.last_price, live.last_ts) == before
    assert dict(pipe.kept) == {"time_interval": 1, "price_change": 1}


# --- durable repairs: order, stop, take-over --------------------------------------------------------------------


def test_candle_repairs_go_before_trade_gaps() -> None:
    """Queued behind 3 trade gaps, a candle hole is still fetched first."""
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock)
    jobs: list = [Gap("BTCUSDT", 10 * i + 1, 10 * i + 5, T0) for i in range(3)]
    jobs.append(("ETHUSDT", T0, T0 + 60_000))
    run_backfill(jobs, exchange, WeightBudget(clock() * 1000), clock, sink)
    assert [path for _, path, _ in exchange.requests] == ["/fapi/v1/klines"] + ["/fapi/v1/aggTrades"] * 3


def start_then_stop(jobs: list, budget: WeightBudget, sink: Recorder) -> Backfiller:
    """Queue `jobs`, let the backfiller run until it waits for weight, then stop it."""

    async def main() -> Backfiller:
        clock = FakeClock()
        stop = asyncio.Event()
        bf = Backfiller("http://exchange.invalid", sink.pipe, budget, stop, fetch=FakeExchange(clock).fetch,
                        clock=clock)
        for job in jobs:
            bf.add_trade_gap(job) if isinstance(job, Gap) else bf.add_candle_gap(*job)
        task = asyncio.create_task(bf.run())
        while bf._current is None:
            await asyncio.sleep(0)
        stop.set()
        await task
        return bf

    return asyncio.run(main())


def test_stop_leaves_every_unfinished_repair_detected() -> None:
    sink = Recorder()
    budget = WeightBudget(T0)
    budget.pause_until(T0 + 3_600_000)  # a ban: nothing can be fetched before the stop
    start_then_stop([Gap("BTCUSDT", 1, 5, T0), Gap("ETHUSDT", 7, 9, T0), ("BTCUSDT", T0, T0)], budget, sink)
    final = {v[:4]: v[4] for v in gap_versions(sink)}  # the last version of each gap
    assert final == {("trades", "BTCUSDT", 1, 5): "detected", ("trades", "ETHUSDT", 7, 9): "detected",
                     ("candles_1m", "BTCUSDT", T0, T0): "detected"}


class Open:
    """A row of collector.db.gaps_repo.open_gaps."""

    def __init__(self, kind: str, symbol: str, from_id: int, to_id: int) -> None:
        self.kind, self.symbol, self.from_id, self.to_id, self.detected_ms = kind, symbol, from_id, to_id, T0


def test_taken_over_repairs_are_done_once() -> None:
    """Rows read back from the table are repaired; reading them again (the table may still show them
    detected while the final row travels through the writer) does not repeat the work."""
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock)

    async def main() -> Backfiller:
        stop = asyncio.Event()
        bf = Backfiller("http://exchange.invalid", sink.pipe, WeightBudget(clock() * 1000), stop,
                        fetch=exchange.fetch, clock=clock)
        rows = [Open("trades", "BTCUSDT", 100, 199), Open("candles_1m", "ETHUSDT", T0, T0 + 60_000),
                Open("funding", "BTCUSDT", 1, 2)]
        assert bf.take_over(rows) == 2  # an unknown kind is not ours to repair
        assert bf.take_over(rows) == 0  # already queued
        task = asyncio.create_task(bf.run())
        await asyncio.wait_for(bf.queue.join(), 10)
        assert bf.take_over(rows) == 0  # already resolved
        stop.set()
        await task
        return bf

    asyncio.run(main())
    assert [path for _, path, _ in exchange.requests] == ["/fapi/v1/klines", "/fapi/v1/aggTrades"]
    # at once: not after the trade page's own wait for weight (13 s here) is over
    assert exchange.requests[0][0] - T0 / 1000 < 1
    assert sink.pipe.backfilled["trades"] == 100
    final = {v[:4]: v[4] for v in gap_versions(sink)}
    assert final == {("trades", "BTCUSDT", 100, 199): "filled", ("candles_1m", "ETHUSDT", T0, T0 + 60_000): "filled"}


def test_a_trade_gap_waiting_for_weight_gives_way_to_a_candle_hole() -> None:
    """The trade gap is already being repaired and waits for weight when the candle hole is found (a mass
    drop: trade gaps at reconnect, candle holes at the next close): the candle request goes first, then
    the trade gap continues."""
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock)
    budget = WeightBudget(clock() * 1000)
    budget.tokens = 0.0  # spent by the gaps before this one

    async def main() -> Backfiller:
        stop = asyncio.Event()
        bf = Backfiller("http://exchange.invalid", sink.pipe, budget, stop, fetch=exchange.fetch, clock=clock)
        waits: list[float] = []

        async def fast_pause(seconds: float) -> bool:
            if not waits:
                bf.add_candle_gap("ETHUSDT", T0, T0)  # found while the trade page waits
            waits.append(seconds)
            clock.t += seconds
            await asyncio.sleep(0)
            return stop.is_set()

        bf._pause = fast_pause  # type: ignore[method-assign]
        bf.add_trade_gap(Gap("BTCUSDT", 10, 19, T0))
        task = asyncio.create_task(bf.run())
        await asyncio.wait_for(bf.queue.join(), 10)
        stop.set()
        await task
        return bf

    asyncio.run(main())
    assert [path for _, path, _ in exchange.requests] == ["/fapi/v1/klines", "/fapi/v1/aggTrades"]
    # at once: not after the trade page's own wait for weight (13 s here) is over
    assert exchange.requests[0][0] - T0 / 1000 < 1
    assert sink.pipe.backfilled["trades"] == 10
    final = {v[:4]: v[4] for v in gap_versions(sink)}
    assert final == {("trades", "BTCUSDT", 10, 19): "filled", ("candles_1m", "ETHUSDT", T0, T0): "filled"}



def test_a_resumed_symbol_s_tail_is_asked_for_and_repaired() -> None:
    """The tail check (collector.pipeline.tails) asks for a page after the checkpoint; the ids traded before
    the stream's newest event become a gap this backfiller fills, with its rows like any other."""
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock, history=range(1, 131))  # id a traded at T0 + a
    sink.pipe.last_trade_id["BTCUSDT"] = 100  # resumed from a checkpoint; no live trade of it since
    sink.pipe.last_event_ms["funding"] = T0 + 126  # the newest event the stream delivered
    bf = run_backfill([("tail", "BTCUSDT", 100)], exchange, WeightBudget(clock() * 1000), clock, sink)
    assert [q for _, _, q in exchange.requests] == [{"symbol": "BTCUSDT", "fromId": "101", "limit": "1000"},
                                                     {"symbol": "BTCUSDT", "fromId": "101", "limit": "25"}]
    assert bf.counts["tail_checks"] == 1 and bf.counts["gaps_filled"] == 1
    assert stored_trade_ids(sink) == 25 and sink.pipe.last_trade_id["BTCUSDT"] == 125
    assert gap_versions(sink)[-1] == ("trades", "BTCUSDT", 101, 125, "filled", True)


def test_a_tail_check_made_moot_by_a_live_trade_costs_no_request() -> None:
    clock, sink = FakeClock(), Recorder()
    exchange = FakeExchange(clock, history=range(1, 131))
    sink.pipe.last_trade_id["BTCUSDT"] = 101  # the checkpoint said 100; a live trade moved it on
    run_backfill([("tail", "BTCUSDT", 100)], exchange, WeightBudget(clock() * 1000), clock, sink)
    assert exchange.requests == []
