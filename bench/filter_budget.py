#!/usr/bin/env python3
"""How many trades the default filter keeps on the simulator's market, per save_reason.

No sockets: the simulator's deterministic market model generates the trades of every symbol at the
given rate; the first `--warmup` sim minutes build the per-symbol statistics the tiers are computed
from (as the supervisor does from live statistics), then the next `--minutes` are filtered and the
kept rows counted. This is what decides the filter's defaults against the product's row budget
(<= 1% of trades, ~600 rows/min at the seed's 75,600 trades/min).

    python bench/filter_budget.py --rate 1260 --symbols 496 --warmup 20 --minutes 20 --quantile 0.9 0.99
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from collector.pipeline.activity import SymbolActivity
from collector.pipeline.tiers import TierParams, compute_tiers
from collector.pipeline.trade_filter import FilterParams, TradeFilter
from exchange_sim.market import Market
from exchange_sim.universe import build_universe

START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z: a fixed origin makes the run reproducible
MINUTE = 60_000


class Collect:
    """Market sink that runs each trade through activity statistics and (after warm-up) the filter."""

    def __init__(self) -> None:
        self.activity: dict[str, SymbolActivity] = {}
        self.filter: TradeFilter | None = None
        self.kept: Counter[str] = Counter()
        self.trades = 0

    def on_trade(self, st, a, f, l_, t, e, p, q, m, streamed) -> None:  # noqa: ANN001, ARG002
        usd = p * st.tick * q * st.step
        act = self.activity.get(st.name)
        if act is None:
            act = self.activity[st.name] = SymbolActivity()
        act.add(t, usd)
        if self.filter is not None:
            self.trades += 1
            reason = self.filter.decide(st.name, p * st.tick, usd, t)
            if reason is not None:
                self.kept[reason] += 1

    def on_kline_close(self, *a: object) -> None: ...
    def on_liquidation(self, *a: object) -> None: ...
    def on_mark_tick(self, *a: object) -> None: ...
    def on_new_symbol(self, *a: object) -> None: ...


def run(rate: float, symbols: int, warmup: int, minutes: int, quantile: float, seed: int) -> dict:
    sink = Collect()
    market = Market(build_universe(symbols, START_MS), seed, rate, START_MS, ("1m",), 10, 10, sink)
    market.advance(START_MS + warmup * MINUTE)
    now = START_MS + warmup * MINUTE
    params = TierParams(quantile=quantile)
    tiers = compute_tiers({s: a.summary(now, quantile) for s, a in sink.activity.items()}, params)
    sink.filter = TradeFilter(FilterParams())
    # Warm the filter's last-kept state too, as a running collector's would be.
    sink.filter.set_tiers(tiers)
    t0 = time.perf_counter()
    market.advance(now + minutes * MINUTE)
    kept = sum(sink.kept.values())
    return {"rate": rate, "symbols": symbols, "quantile": quantile, "minutes": minutes,
            "trades": sink.trades, "kept": kept, "kept_pct": round(100 * kept / max(sink.trades, 1), 3),
            "kept_per_min": round(kept / minutes, 1), "by_reason_per_min":
            {r: round(c / minutes, 1) for r, c in sink.kept.most_common()},
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1260.0)
    ap.add_argument("--symbols", type=int, default=496)
    ap.add_argument("--warmup", type=int, default=20, help="sim minutes of statistics before tiering")
    ap.add_argument("--minutes", type=int, default=20, help="sim minutes filtered")
    ap.add_argument("--quantile", type=float, nargs="+", default=[0.9, 0.99])
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    results = [run(args.rate, args.symbols, args.warmup, args.minutes, q, args.seed) for q in args.quantile]
    print(f"{'quantile':>8} {'trades':>9} {'kept':>7} {'kept %':>7} {'kept/min':>9}  by reason (rows/min)")
    for r in results:
        print(f"{r['quantile']:>8} {r['trades']:>9} {r['kept']:>7} {r['kept_pct']:>7} {r['kept_per_min']:>9}  "
              f"{r['by_reason_per_min']}")
    out = Path(__file__).parent / "results" / "filter_budget.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=2))


if __name__ == "__main__":
    main()
