"""The market model alone (no server): determinism, activity skew, klines consistent with trades."""

from __future__ import annotations

from collections import Counter, defaultdict

from exchange_sim.hub import prepare_state
from exchange_sim.market import K_C, K_F, K_H, K_L, K_LID, K_N, K_O, K_QV, K_T, K_V, Market
from exchange_sim.universe import build_universe

START = 1_700_000_040_000   # fixed sim origin: everything, timestamps included, is reproducible


class Recorder:
    def __init__(self) -> None:
        self.trades = defaultdict(list)
        self.klines = defaultdict(list)
        self.liqs = Counter()

    def on_new_symbol(self, st):
        prepare_state(st)

    def on_trade(self, st, a, f, l_, t, e, p, q, m, streamed):
        self.trades[st.name].append((a, f, l_, t, p, q, m))

    def on_kline_close(self, st, iv, k, e):
        self.klines[(st.name, iv)].append(list(k))

    def on_liquidation(self, st, liq):
        self.liqs[st.name] += 1

    def on_mark_tick(self, t, three):
        pass


def run(seed: int, minutes: float, step_ms: int = 1000, symbols: int = 100, rate: float = 500):
    rec = Recorder()
    m = Market(build_universe(symbols, START), seed, rate, START, ("1m", "5m"), 1000, 100, rec)
    t = START
    end = START + int(minutes * 60_000)
    while t < end:
        t = min(end, t + step_ms)
        m.advance(t)
    return rec


def test_same_seed_same_events_regardless_of_tick_size():
    a, b = run(7, 3, step_ms=1000), run(7, 3, step_ms=37)
    assert a.trades == b.trades and a.klines == b.klines and a.liqs == b.liqs
    c = run(8, 3)
    assert c.trades["BTCUSDT"] != a.trades["BTCUSDT"]


def test_activity_is_skewed():
    rec = run(7, 2, symbols=200, rate=2000)
    counts = sorted((len(v) for v in rec.trades.values()), reverse=True)
    top = sum(counts[:4])   # top 2% of 200 symbols
    assert top / sum(counts) > 0.3
    assert len(counts) > 150   # yet most symbols trade


def test_klines_match_trades_and_empty_windows_repeat_close():
    rec = run(7, 6, symbols=60, rate=15)
    checked = empty = 0
    for name, trades in rec.trades.items():
        by_min = defaultdict(list)
        for tr in trades:
            by_min[tr[3] - tr[3] % 60_000].append(tr)
        prev_close = None
        for k in rec.klines[(name, "1m")]:
            ts = by_min.get(k[K_T], [])
            if ts:
                prices = [t[4] for t in ts]
                assert (k[K_O], k[K_H], k[K_L], k[K_C]) == (prices[0], max(prices), min(prices), prices[-1])
                assert k[K_V] == sum(t[5] for t in ts) and k[K_QV] == sum(t[4] * t[5] for t in ts)
                assert k[K_N] == sum(t[2] - t[1] + 1 for t in ts)
                assert (k[K_F], k[K_LID]) == (ts[0][1], ts[-1][2])
                checked += 1
            else:
                assert k[K_V] == 0 and k[K_N] == 0
                if prev_close is not None:
                    assert k[K_O] == k[K_H] == k[K_L] == k[K_C] == prev_close
                empty += 1
            prev_close = k[K_C]
        ids = [t[0] for t in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        fives = rec.klines[(name, "5m")]
        for k5 in fives:
            ones = [k for k in rec.klines[(name, "1m")] if k5[K_T] <= k[K_T] <= k5[K_T] + 240_000]
            if ones:
                assert k5[K_V] == sum(k[K_V] for k in ones) and k5[K_C] == ones[-1][K_C]
    assert checked > 100 and empty > 0
    assert sum(rec.liqs.values()) > 0
