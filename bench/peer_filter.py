"""The collector's storage rules as cryptofeed callbacks: the *filtered* peer (issue 12).

Why: the collector's filtered mode stores ~1% of trades, one funding row per symbol per minute and only
closed 1m candles, while the stock peer stores everything; comparing their CPU compares different work. The
filtered peer is stock cryptofeed + its Postgres backends with these callbacks in front of the backends,
deciding with the collector's own pure classes and the collector's default configuration
(`collector.config.Config().filters`), wired as a fresh start of the collector wires them:

- tiers bootstrapped from /fapi/v1/ticker/24hr read at start-up (`tiers.bootstrap_from_ticker_24hr`);
- every trade: the symbol's size statistics (`activity.SymbolActivity.add`) then `TradeFilter.decide`
  (`trade_filter`); only kept trades reach `TradePostgres`;
- every `REFRESH_MS` of event time while the tiers are provisional: `thresholds.Warmup.refresh` ->
  `TradeFilter.set_thresholds`;
- at `filters.trades.tier_warmup` and then every `tier_interval`: `tiers.compute_tiers` over the
  statistics -> `TradeFilter.set_tiers` (the warm-up ends);
- funding: `limits.MinInterval(filters.funding.min_interval_s)` per symbol; candles: closed ones only.

Given `stored` tiers (bench/shipped.py --stored-tiers), the filter starts on them instead, as a collector
restarting on stored tiers does: no ticker bootstrap, no warm-up, the next computation a tier interval away.

One difference is structural, not a rule: the collector's warm-up runs per worker over its share of the
symbols (calibrating the ticker prior within each worker's tier groups), the peer's single process over all
symbols. Timers run on event time (the trades' own timestamps), so no extra task or wakeup is added.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from collector.config import Config, parse_duration
from collector.pipeline.activity import SymbolActivity
from collector.pipeline.limits import MinInterval
from collector.pipeline.thresholds import Warmup
from collector.pipeline.tiers import TierAssignment, TierParams, bootstrap_from_ticker_24hr, compute_tiers
from collector.pipeline.trade_filter import FilterParams, TradeFilter

# The worker's provisional-threshold refresh period (1 s, see collector.runtime.worker's housekeeping).
REFRESH_MS = 1000

def _ms(duration: str) -> int:
    td = parse_duration(duration, "filters.trades")
    assert td is not None
    return round(td.total_seconds() * 1000)


class PeerFilter:
    """Trade/funding/candle gates in front of cryptofeed backends; counts what it kept (the expected rows)."""

    def __init__(self, ticker_rows: list[Mapping[str, Any]], to_std: Callable[[str], str],
                 cfg: Config | None = None, stored: Mapping[str, TierAssignment] | None = None) -> None:
        tf = (cfg or Config()).filters.trades
        self.tier_params = TierParams(weights=tuple(tf.score_weights), cutoffs=tuple(tf.tier_cutoffs),  # type: ignore[arg-type]
                                      multipliers=tuple(tf.tier_multipliers), quantile=tf.threshold_quantile)
        self.filter = TradeFilter(FilterParams(price_change_pct=tf.price_change_pct,
                                               tier_intervals_s=tuple(tf.tier_intervals_s), keep_all=False))
        # keyed by cryptofeed's normalised symbol (BTC-USDT-PERP), which is what its callbacks carry
        known = {r["symbol"] for r in ticker_rows}
        tiers = ({to_std(s): a for s, a in stored.items() if s in known} if stored is not None else
                 {to_std(s): a for s, a in bootstrap_from_ticker_24hr(ticker_rows, self.tier_params).items()})
        self.filter.set_tiers(tiers)
        self.warmup: Warmup | None = None if stored is not None else Warmup(
            tiers, self.tier_params.multipliers, self.filter.params.default_tier, self.tier_params.quantile)
        # every symbol from the start, as the collector's pipeline holds them: the first warm-up refresh then
        # replaces every ticker threshold (inf until the symbol or its tier is calibrated), not only those
        # of symbols that already traded
        self.activity: dict[str, SymbolActivity] = {s: SymbolActivity() for s in tiers}
        self.funding_gate = MinInterval(round((cfg or Config()).filters.funding.min_interval_s * 1000))
        self.tier_warmup_ms, self.tier_interval_ms = _ms(tf.tier_warmup), _ms(tf.tier_interval)
        self.kept: Counter[str] = Counter()  # rows handed to the backends, by channel
        self.trade_reasons: Counter[str] = Counter()
        self._start_ms: int | None = None
        self._next_refresh = 0
        self._next_tiers = 0

    def _timers(self, now_ms: int) -> None:
        if self._start_ms is None:
            self._start_ms = now_ms
            self._next_refresh = now_ms  # the worker refreshes once before its first trade
            # stored tiers are fresh ones: the next computation is a tier interval away, as the collector's
            self._next_tiers = now_ms + (self.tier_warmup_ms if self.warmup is not None else self.tier_interval_ms)
        if now_ms >= self._next_tiers:
            summaries = {s: a.summary(now_ms, self.tier_params.quantile) for s, a in self.activity.items()}
            self.filter.set_tiers(compute_tiers(summaries, self.tier_params))
            self.warmup = None
            self._next_tiers = now_ms + self.tier_interval_ms
        if self.warmup is not None and now_ms >= self._next_refresh:
            self.filter.set_thresholds(self.warmup.refresh(self.activity, now_ms))
            self._next_refresh = now_ms + REFRESH_MS

    def accept_trade(self, trade: Any) -> bool:
        ts = int(trade.timestamp * 1000)
        if ts >= self._next_refresh or ts >= self._next_tiers or self._start_ms is None:
            self._timers(ts)
        price = float(trade.price)
        usd = price * float(trade.amount)
        act = self.activity.get(trade.symbol)
        if act is None:
            act = self.activity[trade.symbol] = SymbolActivity()
        act.add(ts, usd)
        reason = self.filter.decide(trade.symbol, price, usd, ts)
        if reason is None:
            return False
        self.kept["trades"] += 1
        self.trade_reasons[reason] += 1
        return True

    def accept_funding(self, funding: Any) -> bool:
        if not self.funding_gate.accept(funding.symbol, int(funding.timestamp * 1000)):
            return False
        self.kept["funding"] += 1
        return True

    def accept_candle(self, candle: Any) -> bool:
        if not candle.closed:
            return False
        self.kept["candles"] += 1
        return True

    def accept_liquidation(self, liq: Any) -> bool:  # noqa: ARG002 - every liquidation is stored
        self.kept["liquidations"] += 1
        return True


def write_tiers(tiers: Mapping[str, Sequence[float | None]], directory: str) -> Path:
    """`tiers` (exchange symbol -> (tier, threshold, size quantile, score), as collector.db.tiers_repo stores
    them) as `directory`/tiers.json, for the filtered peer's child process: load_tiers reads it back."""
    path = Path(directory) / "tiers.json"
    # json writes an infinite threshold (a symbol without trades) as Infinity and reads it back
    path.write_text(json.dumps({s: list(t) for s, t in tiers.items()}))
    return path


def load_tiers(path: str) -> dict[str, TierAssignment]:
    """Tiers written by write_tiers (exchange symbol -> [tier, threshold, size quantile, score])."""
    with open(path) as fp:
        rows = json.load(fp)
    return {s: TierAssignment(int(t), float(thr), math.nan if q is None else float(q),
                              math.nan if score is None else float(score)) for s, (t, thr, q, score) in rows.items()}


class Gate:
    """A cryptofeed callback handing an event to its backend only when `accept` says so.

    `handler` is cryptofeed's wrapper convention (cryptofeed.feed.wrapper_chain walks it to find the
    BackendQueue), and every other attribute is the backend's: Feed._run finds `start_writer`,
    `begin_shutdown` and `stop` on the gate and starts, then flushes, the backend as if it were listed itself.
    """

    def __init__(self, handler: Any, accept: Callable[[Any], bool]) -> None:
        self.handler = handler
        self.accept = accept

    async def __call__(self, obj: Any, receipt_timestamp: float) -> None:
        if self.accept(obj):
            await self.handler(obj, receipt_timestamp)

    def __getattr__(self, name: str) -> Any:  # only for attributes the gate itself lacks
        if name == "handler":
            raise AttributeError(name)
        return getattr(self.handler, name)
