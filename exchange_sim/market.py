"""The deterministic market: trades, klines, liquidations, mark prices and funding for every symbol.

Each symbol owns its random generators, seeded from (seed, symbol name), and its events are produced in
time order by one loop, so a symbol's event sequence is a pure function of (seed, symbol, sim time): how
often the server ticks, who is subscribed and which other symbols exist do not change it.
Prices are integers of ticks and quantities integers of steps, so kline volumes and quote volumes are
exact sums of the trades sent (no float drift between a kline and its trades).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from typing import Protocol

from .intervals import MINUTE, window_end, window_start
from .universe import SymbolSpec

# Funding is settled every 8 hours (00:00, 08:00, 16:00 UTC) on Binance USDT-M.
FUNDING_PERIOD_MS = 8 * 3600 * 1000
# Daily volatility of the random walk: ~4% is typical for a mid-cap perpetual.
DAILY_VOL = 0.04
# One price jump (0.6%..3%) per symbol per ~20 sim minutes: frequent enough that short tests see
# liquidation bursts, rare enough to stay "occasional".
JUMP_MEAN_MS = 20 * 60 * 1000
JUMP_MIN, JUMP_MAX = 0.006, 0.03
# Background liquidations as a fraction of the trade rate (Binance: a few per second market-wide).
LIQ_SHARE = 0.002
# Binance's forceOrder stream pushes at most one liquidation per symbol per 1000 ms.
LIQ_MIN_GAP_MS = 1000
# Trade size in USD: lognormal body (median ~$400) with a Pareto tail on 3% of trades (whales).
SIZE_MU, SIZE_SIGMA = math.log(400.0), 1.3
TAIL_P, TAIL_XM, TAIL_ALPHA = 0.03, 5_000.0, 1.4
# Mean number of individual fills per aggTrade (f..l span).
FILLS_RATE = 0.7
# Trades are published this many ms (at most) after they happen, like Binance's E - T.
MAX_LAG_MS = 20

# Kline row layout (all ints): prices in ticks, volumes in steps, quote volumes in tick*step units.
K_T, K_CT, K_O, K_H, K_L, K_C, K_V, K_QV, K_N, K_TV, K_TQV, K_F, K_LID = range(13)


class Sink(Protocol):
    def on_trade(self, st: SymbolState, a: int, f: int, l_: int, t: int, e: int, p: int, q: int,
                 m: bool, streamed: bool) -> None: ...
    def on_kline_close(self, st: SymbolState, interval: str, k: list, e: int) -> None: ...
    def on_liquidation(self, st: SymbolState, liq: tuple) -> None: ...
    def on_mark_tick(self, t_ms: int, three_s: bool) -> None: ...
    def on_new_symbol(self, st: SymbolState) -> None: ...


def _unit(*key: int) -> float:
    # hash() of a tuple of ints is stable across processes (no hash randomisation for ints).
    return (hash(key) & 0xFFFFFFFF) / 4294967296.0


def fold(agg: list | None, k: list, interval: str) -> list:
    """Merge 1m kline k into the higher-interval kline agg (new window if agg is None)."""
    if agg is None:
        t = window_start(interval, k[K_T])
        return [t, window_end(interval, t), k[K_O], k[K_H], k[K_L], k[K_C], k[K_V], k[K_QV], k[K_N],
                k[K_TV], k[K_TQV], k[K_F], k[K_LID]]
    agg = agg[:]
    if k[K_N]:
        if agg[K_N] == 0:
            agg[K_O] = agg[K_H] = agg[K_L] = k[K_O]
            agg[K_F] = k[K_F]
        agg[K_H] = max(agg[K_H], k[K_H])
        agg[K_L] = min(agg[K_L], k[K_L])
        agg[K_LID] = k[K_LID]
    agg[K_C] = k[K_C]
    agg[K_V] += k[K_V]
    agg[K_QV] += k[K_QV]
    agg[K_N] += k[K_N]
    agg[K_TV] += k[K_TV]
    agg[K_TQV] += k[K_TQV]
    return agg


class SymbolState:
    """Mutable per-symbol market state; public fields are read by the frame renderer and REST."""

    # Set by the wire's hub when the symbol is added (hub.prepare_state, venues VenueHub.keys_of): stream
    # names / subscription keys and truth counters, read on the hot path. Declared only, for the type checker.
    s_agg: str
    s_liq: str
    s_mark: str
    s_mark1: str
    n_trade: int
    n_mark: int
    n_mark1s: int
    n_liq: int
    n_kline: dict[str, int]
    first_a: int | None
    last_a: int | None
    skipped: list[list[int]]
    liqs: deque[tuple[int, int, str, int, int, int]]
    k_trade: str
    k_candle: str
    k_fund: str
    k_oi: str
    k_mark: str
    k_tick: str
    k_liq: str
    ct_dp: int
    okx_arg: dict[str, str]
    by_last: dict[str, str] | None
    by_prev: int

    def __init__(self, idx: int, spec: SymbolSpec, seed: int, rate_per_s: float, start_ms: int,
                 intervals: tuple[str, ...], trade_history: int, kline_history: int) -> None:
        self.idx = idx
        self.spec = spec
        self.name = spec.name
        self.lower = spec.name.lower()
        self.rng = random.Random(f"{seed}:{spec.name}:trades")
        self.liq_rng = random.Random(f"{seed}:{spec.name}:liq")
        self.seed = seed
        self.tick = 10.0 ** -spec.price_dp
        self.step = 10.0 ** -spec.qty_dp
        self.price_dp = spec.price_dp
        self.qty_dp = spec.qty_dp
        self.price = max(1, round(spec.base_price / self.tick * math.exp(self.rng.gauss(0, 0.05))))
        self.rate_ms = rate_per_s / 1000.0
        trades_per_day = max(rate_per_s, 1e-3) * 86400
        self.sigma = DAILY_VOL / math.sqrt(trades_per_day) * self.price
        self.agg_id = self.rng.randrange(10_000_000, 2_000_000_000)
        self.trade_id = self.agg_id * 3 + self.rng.randrange(1_000_000)
        self.trading = True
        self.skip_left = 0
        self.intervals = tuple(i for i in intervals if i != "1m")
        self.kline = self._empty_kline(start_ms - start_ms % MINUTE, self.price)
        self.folds: dict[str, list | None] = dict.fromkeys(self.intervals)
        self.closed: dict[str, deque] = {iv: deque(maxlen=kline_history) for iv in ("1m",) + self.intervals}
        self.trades: deque = deque(maxlen=trade_history)
        self.kline_dirty = False
        self.next_jump = start_ms + self.rng.expovariate(1.0 / JUMP_MEAN_MS)
        self.liq_rate_ms = rate_per_s * LIQ_SHARE / 1000.0
        self.liq_gen = 0
        self.last_liq = -LIQ_MIN_GAP_MS
        self.burst_left = 0
        self.burst_side = "SELL"
        self.listed_ms = start_ms
        self.last_qty = 0

    @staticmethod
    def _empty_kline(t: int, close: int) -> list:
        return [t, t + MINUTE - 1, close, close, close, close, 0, 0, 0, 0, 0, -1, -1]

    # Funding, mark and open interest are smooth deterministic functions of (seed, symbol, time) plus
    # the current trade price, so they cost nothing between publications.
    # Set by Market from SimConfig.funding_period_ms (a test makes settlements frequent with it).
    funding_period_ms: int = FUNDING_PERIOD_MS

    def funding_rate(self, t_ms: int) -> float:
        period = t_ms // self.funding_period_ms
        base = 0.0001 + (_unit(self.seed, self.idx, period) - 0.4) * 0.0004
        return base + (_unit(self.seed, self.idx, t_ms // MINUTE) - 0.5) * 0.00002

    def next_funding(self, t_ms: int) -> int:
        return (t_ms // self.funding_period_ms + 1) * self.funding_period_ms

    def mark_ticks_e8(self, t_ms: int) -> tuple[int, int]:
        """(mark price in ticks, index price in 1e-8 units)."""
        basis = (_unit(self.seed, self.idx, t_ms // 3000) - 0.5) * 0.0006
        mark = max(1, round(self.price * (1 + basis * 0.3)))
        index = round(self.price * self.tick * (1 - basis) * 1e8)
        return mark, index

    def open_interest_steps(self, t_ms: int) -> int:
        base_usd = 2e6 + 3e9 * self.spec.weight
        phase = _unit(self.seed, self.idx, 0) * 6.283
        drift = 1 + 0.15 * math.sin(t_ms / 3.6e6 + phase) + (_unit(self.seed, self.idx, t_ms // 10_000) - 0.5) * 0.01
        return max(1, round(base_usd * drift / (self.price * self.tick) / self.step))


class Market:
    """Produces every event of every symbol up to a given sim time, in time order, into a Sink."""

    def __init__(self, specs: list[SymbolSpec], seed: int, rate: float, start_ms: int,
                 intervals: tuple[str, ...], trade_history: int, kline_history: int, sink: Sink,
                 funding_period_ms: int = FUNDING_PERIOD_MS) -> None:
        self.seed = seed
        self.funding_period_ms = funding_period_ms
        self.rate = rate
        self.intervals = intervals
        self.trade_history = trade_history
        self.kline_history = kline_history
        self.sink = sink
        self.now_ms = start_ms
        self.states: list[SymbolState] = []
        self.by_name: dict[str, SymbolState] = {}
        self.heap: list[tuple[float, int]] = []
        self.liq_heap: list[tuple[int, int, int]] = []
        self.next_sec = start_ms - start_ms % 1000 + 1000
        self.next_min = start_ms - start_ms % MINUTE + MINUTE
        for spec in specs:
            if spec.tradable and spec.status == "TRADING":
                self.add_symbol(spec, start_ms)

    def add_symbol(self, spec: SymbolSpec, t_ms: int) -> SymbolState:
        st = SymbolState(len(self.states), spec, self.seed, self.rate * spec.weight, t_ms, self.intervals,
                         self.trade_history, self.kline_history)
        st.funding_period_ms = self.funding_period_ms
        self.states.append(st)
        self.by_name[st.name] = st
        self.sink.on_new_symbol(st)
        if st.rate_ms > 0:
            heapq.heappush(self.heap, (t_ms + st.rng.expovariate(st.rate_ms), st.idx))
        self._schedule_liq(st, t_ms + max(LIQ_MIN_GAP_MS, st.liq_rng.expovariate(st.liq_rate_ms or 1e-9)))
        return st

    def delist(self, name: str) -> None:
        st = self.by_name[name]
        st.trading = False

    def _schedule_liq(self, st: SymbolState, t: float) -> None:
        st.liq_gen += 1
        heapq.heappush(self.liq_heap, (int(max(t, st.last_liq + LIQ_MIN_GAP_MS)), st.idx, st.liq_gen))

    def advance(self, now_ms: int) -> None:
        """Generate and publish everything that happened up to and including now_ms."""
        heap, liq_heap, states = self.heap, self.liq_heap, self.states
        trade = self._trade
        while True:
            timer = self.next_sec if self.next_sec < self.next_min else self.next_min
            limit = min(now_ms + 1, timer)
            while True:
                # Trades and liquidations interleaved in time; trades first on a tie so a liquidation
                # sees the price of the trades of its own millisecond.
                th = heap[0][0] if heap else math.inf
                lh = liq_heap[0][0] if liq_heap else math.inf
                if th < limit and th <= lh:
                    t, idx = heap[0]
                    st = states[idx]
                    if not st.trading:
                        heapq.heappop(heap)
                        continue
                    trade(st, int(t))
                    heapq.heapreplace(heap, (t + st.rng.expovariate(st.rate_ms), idx))
                elif lh < limit:
                    t, idx, gen = heapq.heappop(liq_heap)
                    st = states[idx]
                    if st.trading and gen == st.liq_gen:
                        self._liquidation(st, t)
                else:
                    break
            if timer > now_ms:
                break
            if timer == self.next_min:
                self._close_minute(timer)
                self.next_min += MINUTE
            if timer == self.next_sec:
                self.sink.on_mark_tick(timer, timer % 3000 == 0)
                self.next_sec += 1000
        self.now_ms = now_ms

    def _trade(self, st: SymbolState, t: int) -> None:
        rng = st.rng
        move = rng.gauss(0.0, st.sigma)
        if t >= st.next_jump:
            move += self._jump(st, t)
        price = st.price + round(move)
        if price < 1:
            price = 1
        st.price = price
        usd = (TAIL_XM * rng.paretovariate(TAIL_ALPHA) if rng.random() < TAIL_P
               else rng.lognormvariate(SIZE_MU, SIZE_SIGMA))
        qty = int(usd / (price * st.tick * st.step)) or 1
        u = rng.random()
        # Takers lean with the move: buyers are takers (m false) more often on an up-tick.
        m = u < (0.35 if move > 0 else 0.65)
        lag = int(u * 1_000_003) % MAX_LAG_MS + 1
        # At most one fill per lot: each fill has a size (OKX's history-trades serves them one by one).
        fills = min(int(rng.expovariate(FILLS_RATE)) + 1, qty)
        a = st.agg_id
        st.agg_id = a + 1
        f = st.trade_id
        last = f + fills - 1
        st.trade_id = last + 1
        st.last_qty = qty
        k = st.kline
        if k[K_N] == 0:
            k[K_O] = k[K_H] = k[K_L] = price
            k[K_F] = f
        elif price > k[K_H]:
            k[K_H] = price
        elif price < k[K_L]:
            k[K_L] = price
        k[K_C] = price
        k[K_V] += qty
        k[K_QV] += qty * price
        k[K_N] += fills
        if not m:
            k[K_TV] += qty
            k[K_TQV] += qty * price
        k[K_LID] = last
        st.kline_dirty = True
        st.trades.append((a, price, qty, f, last, t, m))
        streamed = True
        if st.skip_left:
            st.skip_left -= 1
            streamed = False
        self.sink.on_trade(st, a, f, last, t, t + lag, price, qty, m, streamed)

    def _jump(self, st: SymbolState, t: int) -> float:
        rng = st.rng
        size = rng.uniform(JUMP_MIN, JUMP_MAX) * (1 if rng.random() < 0.5 else -1)
        st.next_jump = t + rng.expovariate(1.0 / JUMP_MEAN_MS)
        # A jump up squeezes shorts (liquidations are BUY orders), a jump down flushes longs.
        st.burst_left = 1 + int(st.liq_rng.expovariate(1 / 3.0))
        st.burst_side = "BUY" if size > 0 else "SELL"
        self._schedule_liq(st, t + st.liq_rng.uniform(50, 600))
        return size * st.price

    def _liquidation(self, st: SymbolState, t: int) -> None:
        rng = st.liq_rng
        if st.burst_left:
            side = st.burst_side
            st.burst_left -= 1
        else:
            side = "SELL" if rng.random() < 0.5 else "BUY"
        usd = (TAIL_XM * 4 * rng.paretovariate(TAIL_ALPHA) if rng.random() < 0.1
               else rng.lognormvariate(math.log(2000.0), 1.2))
        qty = int(usd / (st.price * st.tick * st.step)) or 1
        worse = rng.uniform(0.002, 0.015)
        # Liquidation orders are IOC limits priced through the market: below it for SELL, above for BUY.
        p = max(1, round(st.price * (1 - worse if side == "SELL" else 1 + worse)))
        liq = (t, t + 1 + int(rng.random() * 10), side, qty, p, st.price)
        st.last_liq = t
        self.sink.on_liquidation(st, liq)
        if st.burst_left:
            nxt = t + LIQ_MIN_GAP_MS + rng.uniform(0, 2000)
        else:
            nxt = t + max(LIQ_MIN_GAP_MS, rng.expovariate(st.liq_rate_ms or 1e-9))
        self._schedule_liq(st, nxt)

    def _close_minute(self, boundary: int) -> None:
        sink = self.sink
        for st in self.states:
            if not st.trading:
                continue
            k = st.kline
            if k[K_T] >= boundary:
                continue
            st.closed["1m"].append(k)
            sink.on_kline_close(st, "1m", k, boundary)
            for iv in st.intervals:
                agg = fold(st.folds[iv], k, iv)
                if agg[K_CT] == boundary - 1:
                    st.closed[iv].append(agg)
                    sink.on_kline_close(st, iv, agg, boundary)
                    st.folds[iv] = None
                else:
                    st.folds[iv] = agg
            st.kline = st._empty_kline(boundary, k[K_C])
            st.kline_dirty = True

    def open_kline(self, st: SymbolState, interval: str) -> list:
        """The current (not yet closed) kline of `interval`, including the running minute."""
        if interval == "1m":
            return st.kline
        agg = st.folds.get(interval)
        k = st.kline
        merged = fold(agg, k, interval)
        return merged
