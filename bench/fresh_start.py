#!/usr/bin/env python3
"""Share of trades the filter keeps, minute by minute, after a fresh start (no stored tiers).

No sockets, simulated time: the simulator's deterministic market model from its first millisecond.
As the supervisor does on a start without stored tiers, the tiers are bootstrapped from the
simulator's own /fapi/v1/ticker/24hr answer read `--ticker-at` sim seconds after the market starts
(the supervisor reads it right after launching the simulator, so it covers that much trading);
the filter runs from then on, and minutes are counted from then. While those tiers are provisional, every `--refresh` sim seconds the
worker's warm-up (collector.pipeline.thresholds) re-derives each threshold from the symbol's own
trades; at `--tier-warmup` minutes the supervisor's first tiers from live statistics replace them.
`--no-warmup` runs the filter as it was before the warm-up existed (ticker thresholds for 10 min).
Medians over `--seeds`.

    python bench/fresh_start.py --seeds 1 2 3 4 5 --minutes 15 --out bench/results/fresh_start.json
    python bench/fresh_start.py --seeds 1 2 3 --no-warmup
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter
from pathlib import Path

import orjson

from collector.config import Config
from collector.feed.universe import shard
from collector.pipeline.activity import SymbolActivity
from collector.pipeline.thresholds import Warmup, WarmupParams
from collector.pipeline.tiers import TierParams, bootstrap_from_ticker_24hr, compute_tiers
from collector.pipeline.trade_filter import FilterParams, TradeFilter
from exchange_sim.market import Market
from exchange_sim.rest import RestApi
from exchange_sim.universe import build_universe

START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z, as bench/filter_budget.py
MINUTE = 60_000
DEFAULTS = WarmupParams()


class Collect:
    """Market sink doing what a worker's pipeline does with a trade: statistics, then the filter."""

    def __init__(self) -> None:
        self.activity: dict[str, SymbolActivity] = {}
        self.filter: TradeFilter | None = None
        self.trades: Counter[int] = Counter()  # by minute since the filter's start
        self.kept: Counter[tuple[int, str]] = Counter()  # by (minute, reason)
        self.skew: dict[str, int] = {}  # symbol -> first trades still to shrink (--skew)
        self.skew_factor = 1.0
        self.start = 0  # when the filter started: minutes are counted from here

    def on_trade(self, st, a, f, l_, t, e, p, q, m, streamed) -> None:  # noqa: ANN001, ARG002
        usd = p * st.tick * q * st.step
        left = self.skew.get(st.name, 0)
        if left:
            self.skew[st.name] = left - 1
            usd *= self.skew_factor
        if self.filter is not None:  # the worker subscribes after the supervisor has read the ticker
            act = self.activity.get(st.name)
            if act is None:
                act = self.activity[st.name] = SymbolActivity()
            act.add(t, usd)
            minute = (t - self.start) // MINUTE
            self.trades[minute] += 1
            reason = self.filter.decide(st.name, p * st.tick, usd, t)
            if reason is not None:
                self.kept[(minute, reason)] += 1

    def on_kline_close(self, *a: object) -> None: ...
    def on_liquidation(self, *a: object) -> None: ...
    def on_mark_tick(self, *a: object) -> None: ...
    def on_new_symbol(self, *a: object) -> None: ...


def run(seed: int, *, rate: float = 1260.0, symbols: int = 496, minutes: int = 10, ticker_at_s: float = 2.0,
        refresh_s: float = 1.0, tier_warmup_min: float = 10.0, warmup: bool = True, workers: int = 2,
        params: WarmupParams = DEFAULTS, skew_trades: int = 0, skew_factor: float = 1.0) -> dict:
    """Per-minute trades and kept rows of one fresh start; pure simulation, no clock but the market's."""
    cfg = Config().filters.trades
    tier_params = TierParams(weights=tuple(cfg.score_weights), cutoffs=tuple(cfg.tier_cutoffs),  # type: ignore[arg-type]
                             multipliers=tuple(cfg.tier_multipliers), quantile=cfg.threshold_quantile)
    filter_params = FilterParams(price_change_pct=cfg.price_change_pct, tier_intervals_s=tuple(cfg.tier_intervals_s))
    sink = Collect()
    specs = build_universe(symbols, START_MS)
    if skew_trades:
        sink.skew = {s.name: skew_trades for s in specs}
        sink.skew_factor = skew_factor
    market = Market(specs, seed, rate, START_MS, ("1m", "1h"), 10, 1500, sink)
    t = START_MS + round(ticker_at_s * 1000)
    market.advance(t)
    rows = orjson.loads(RestApi(market, specs).ticker_24hr({}, t))
    tiers = bootstrap_from_ticker_24hr(rows, tier_params)
    sink.filter = TradeFilter(filter_params)
    sink.start = t
    sink.filter.set_tiers(tiers)
    # One warm-up per worker, over the worker's share of the symbols, drafted as the supervisor does.
    shards = shard([r["symbol"] for r in rows], workers, {r["symbol"]: float(r["quoteVolume"]) for r in rows})
    warms = [(set(names), Warmup({s: tiers[s] for s in names if s in tiers}, tier_params.multipliers,
                                 filter_params.default_tier, tier_params.quantile, params)) for names in shards]

    def refresh(now: int) -> None:
        for names, warm in warms:  # each worker sees only its own symbols' statistics
            mine = {s: a for s, a in sink.activity.items() if s in names}
            sink.filter.set_thresholds(warm.refresh(mine, now))  # type: ignore[union-attr]
    live_at = t + round(tier_warmup_min * MINUTE)
    end = t + minutes * MINUTE
    step = round(refresh_s * 1000)
    t0 = time.perf_counter()
    refresh_wall = 0.0
    if warmup:  # a worker's first housekeeping tick comes before its first trade
        refresh(t)
    while t < end:
        nxt = min(t + step, end) if warmup and t < live_at else end
        if t < live_at < nxt:
            nxt = live_at
        market.advance(nxt - 1)
        t = nxt
        if t == live_at:  # the supervisor's first tiers from live statistics; the warm-up ends
            summaries = {s: a.summary(t, tier_params.quantile) for s, a in sink.activity.items()}
            sink.filter.set_tiers(compute_tiers(summaries, tier_params))
        elif warmup and t < live_at:
            w0 = time.perf_counter()
            refresh(t)
            refresh_wall += time.perf_counter() - w0
    per_minute = []
    for m in range(minutes):
        kept = {r: c for (mm, r), c in sink.kept.items() if mm == m}
        n = sink.trades[m]
        per_minute.append({"minute": m + 1, "trades": n, "kept": sum(kept.values()),
                           "kept_pct": 100 * sum(kept.values()) / max(n, 1), "by_reason": kept})
    first10 = per_minute[:10]
    return {"seed": seed, "per_minute": per_minute,
            "first10_pct": 100 * sum(p["kept"] for p in first10) / max(sum(p["trades"] for p in first10), 1),
            "finite_prior_thresholds": sum(1 for a in tiers.values() if math.isfinite(a.threshold_usd)),
            "wall_s": round(time.perf_counter() - t0, 1), "refresh_wall_s": round(refresh_wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--rate", type=float, default=1260.0)
    ap.add_argument("--symbols", type=int, default=496)
    ap.add_argument("--minutes", type=int, default=15)
    # 2 s: in a real `supervisor.py --simulate` start the ticker was read 1.9 s after the simulator started.
    ap.add_argument("--ticker-at", type=float, default=2.0, help="sim seconds of trading the ticker covers")
    ap.add_argument("--refresh", type=float, default=1.0, help="sim seconds between warm-up refreshes")
    ap.add_argument("--workers", type=int, default=2, help="workers the symbols are drafted over")
    ap.add_argument("--tier-warmup", type=float, default=10.0, help="minutes to the first live tiers")
    ap.add_argument("--no-warmup", action="store_true", help="the filter before the warm-up existed")
    ap.add_argument("--min-trades", type=int, default=DEFAULTS.min_trades)
    ap.add_argument("--prior-trades", type=float, default=DEFAULTS.prior_trades)
    ap.add_argument("--calibration-share", type=float, default=DEFAULTS.calibration_share,
                    help="share of a worker's symbols that calibrates the ticker prior")
    ap.add_argument("--no-prior", action="store_true", help="the ticker prior never sets a threshold")
    ap.add_argument("--calibrate-market-wide", action="store_true", help="one prior scale for all tiers")
    ap.add_argument("--calibration-quantile", type=float, default=DEFAULTS.calibration_quantile)
    ap.add_argument("--skew", type=float, nargs=2, metavar=("TRADES", "FACTOR"), default=(0, 1.0),
                    help="unrepresentative start: every symbol's first TRADES trades are FACTOR x their size")
    ap.add_argument("--out", type=Path, help="write the full results as JSON here")
    args = ap.parse_args()
    params = WarmupParams(args.min_trades, args.prior_trades, None if args.no_prior else args.calibration_share,
                          args.calibration_quantile, not args.calibrate_market_wide)
    results = [run(s, rate=args.rate, symbols=args.symbols, minutes=args.minutes, ticker_at_s=args.ticker_at,
                   refresh_s=args.refresh, tier_warmup_min=args.tier_warmup, warmup=not args.no_warmup,
                   workers=args.workers,
                   params=params, skew_trades=int(args.skew[0]), skew_factor=args.skew[1]) for s in args.seeds]
    print(f"fresh start, {'no warm-up' if args.no_warmup else params}, ticker at {args.ticker_at} s, "
          f"{args.workers} workers, seeds {args.seeds}")
    print(f"{'minute':>6} {'kept % (median)':>16} {'min':>6} {'max':>6}  median rows/min by reason")
    for m in range(args.minutes):
        pcts = [r["per_minute"][m]["kept_pct"] for r in results]
        reasons = {k: statistics.median(r["per_minute"][m]["by_reason"].get(k, 0) for r in results)
                   for k in ("large_trade", "price_change", "time_interval")}
        print(f"{m + 1:>6} {statistics.median(pcts):>16.3f} {min(pcts):>6.2f} {max(pcts):>6.2f}  {reasons}")
    first10 = [r["first10_pct"] for r in results]
    print(f"first 10 minutes: median {statistics.median(first10):.3f}% (min {min(first10):.3f}, "
          f"max {max(first10):.3f}); refresh cost {statistics.median(r['refresh_wall_s'] for r in results)} s "
          f"per run")
    if args.out:
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "args": vars(args) | {"out": None},
                                        "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
