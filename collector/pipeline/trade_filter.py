"""The smart trade filter: keep the trades worth storing, drop the rest, say why each was kept.

A trade is kept, first matching rule wins, when
1. its USD value is strictly above the symbol's large-trade threshold     -> "large_trade"
2. its price is outside last_kept * (1 -/+ price_change_pct / 100)        -> "price_change"
3. at least the tier's interval has passed since the symbol's last kept   -> "time_interval"
   trade (so the first trade of a symbol is kept as "time_interval": the
   interval since "never" has passed; no separate reason to store)
4. keep_all is on                                                         -> "keep_all"
Any kept trade, whatever the reason, becomes the reference for rules 2 and 3.

Row budget behind the default intervals (the target: <= 1% of a realistic 75,600 trades/min over
496 symbols, i.e. ~600 kept rows/min):
  time samples (upper bound, every symbol trading in every interval; tiers sized 10/40/99/347):
    10/1 min + 40/2 min + 99/5 min + 347/15 min = 10 + 20 + 19.8 + 23.1 = ~73 rows/min
  which leaves ~525 rows/min for large trades and price moves. A 0.5% move is a rare event per
  symbol (a coin with 5% daily volatility moves ~0.13% per minute, so crossing +-0.5% from the
  last kept price takes ~15 min on average, less often still because every kept trade re-bases
  it): ~496/15 = ~33 rows/min in a normal market, more in a crash, which is when they matter.
  Caveat, for whoever tunes tiers.TierParams: large trades are the term that decides the total.
  With thresholds of 1.2-2.0 x P90 and log-normal sizes (sigma 1..2) 2.4-8.5% of trades exceed
  them, i.e. thousands of rows/min, far over the 1% target; thresholds on P99 (quantile=0.99)
  give 0.13-0.78%, i.e. ~100-590 rows/min, which fits.

Symbols without a tier assignment (listed after the last tiering) get DEFAULT tier 3 and an
infinite threshold: nothing is "large" before we know the symbol's sizes, while the price and
time rules still record it, so a new listing is never invisible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final, Protocol

LARGE_TRADE = "large_trade"
PRICE_CHANGE = "price_change"
TIME_INTERVAL = "time_interval"
KEEP_ALL = "keep_all"
REASONS = (LARGE_TRADE, PRICE_CHANGE, TIME_INTERVAL, KEEP_ALL)

# Older than any event time: makes the first trade of a symbol pass the interval rule.
_NEVER: Final = -(2**62)


@dataclass(frozen=True, slots=True)
class FilterParams:
    # 0.5%: well above tick noise and the bid/ask bounce of any listed perp, small enough that a
    # chart rebuilt from kept trades misses no move a trader would act on.
    price_change_pct: float = 0.5
    # Seconds between time samples by tier (0 = busiest): busy symbols get a row a minute so
    # minute bars always have a print, the 347-symbol long tail one per 15 min; total ~73 rows/min
    # (module docstring).
    tier_intervals_s: tuple[float, ...] = (60.0, 120.0, 300.0, 900.0)
    keep_all: bool = False
    # Tier for symbols with no assignment yet: the quietest, as most new listings start out.
    default_tier: int = 3

    def __post_init__(self) -> None:
        if not self.price_change_pct > 0:
            raise ValueError("price_change_pct must be > 0")
        if not 0 <= self.default_tier < len(self.tier_intervals_s):
            raise ValueError("default_tier must index tier_intervals_s")

    def interval_ms(self, tier: int) -> int:
        return round(self.tier_intervals_s[min(max(tier, 0), len(self.tier_intervals_s) - 1)] * 1000)


class Assignment(Protocol):
    """What set_tiers needs from a tier assignment (collector.pipeline.tiers.TierAssignment fits)."""

    @property
    def tier(self) -> int: ...

    @property
    def threshold_usd(self) -> float: ...


class SymbolFilter:
    """One symbol's filter state; `decide` is the per-trade hot path."""

    __slots__ = ("tier", "threshold_usd", "interval_ms", "last_price", "last_ts", "keep_all", "_pc", "_lo", "_hi",
                 "_due")

    def __init__(self, tier: int, threshold_usd: float, interval_ms: int, price_change_pct: float,
                 keep_all: bool = False) -> None:
        self.tier = tier
        self.threshold_usd = threshold_usd
        self.interval_ms = interval_ms
        self.keep_all = keep_all
        self._pc = price_change_pct / 100.0
        self.last_price = math.nan
        self.last_ts = _NEVER
        # Price band of the last kept trade, precomputed so a dropped trade costs two comparisons.
        # NaN until the first keep: every comparison with NaN is False, so rule 2 cannot fire.
        self._lo = self._hi = math.nan
        # last_ts + interval_ms, precomputed for the same reason (and int arithmetic on epoch-ms
        # values allocates, comparisons do not).
        self._due = _NEVER + interval_ms

    def set_tier(self, tier: int, threshold_usd: float, interval_ms: int) -> None:
        """New tier numbers; the last kept price and time stay, so no spurious keep follows."""
        self.tier = tier
        self.threshold_usd = threshold_usd
        self.interval_ms = interval_ms
        self._due = self.last_ts + interval_ms

    def snapshot(self) -> tuple[float, int | None]:
        """(last kept price, last kept time ms): what the next decision depends on besides the tier.

        (nan, None) before the first keep. collector.runtime.checkpoints saves it so a successor continues
        the price band and the time interval instead of keeping its first trade as "time_interval".
        """
        return self.last_price, None if self.last_ts == _NEVER else self.last_ts

    def restore(self, last_price: float, last_ts: int | None) -> None:
        """Continue from a snapshot(); the tier numbers stay as they are."""
        self.last_price = last_price
        self.last_ts = _NEVER if last_ts is None else last_ts
        self._due = self.last_ts + self.interval_ms
        if math.isnan(last_price):
            self._lo = self._hi = math.nan
        else:
            self._lo = last_price - last_price * self._pc
            self._hi = last_price + last_price * self._pc

    def copy(self) -> SymbolFilter:
        """An independent state equal to this one: what a gap's trades are later filtered from
        (collector.pipeline.router.Gap). Explicit rather than copy.copy, which a class compiled by mypyc
        (bench/compiled_tree.py) cannot serve: it rebuilds the object without calling __init__."""
        c = SymbolFilter(self.tier, self.threshold_usd, self.interval_ms, 0.0, self.keep_all)
        c._pc = self._pc
        c.last_price = self.last_price
        c.last_ts = self.last_ts
        c._lo = self._lo
        c._hi = self._hi
        c._due = self._due
        return c

    def decide(self, price: float, usd: float, ts_ms: int) -> str | None:
        """Reason to keep this trade, or None to drop it. Allocates nothing on the drop path."""
        if usd > self.threshold_usd:
            reason = LARGE_TRADE
        elif price > self._hi or price < self._lo:
            reason = PRICE_CHANGE
        elif ts_ms >= self._due:
            reason = TIME_INTERVAL
        elif self.keep_all:
            reason = KEEP_ALL
        else:
            return None
        self.last_price = price
        self.last_ts = ts_ms
        self._due = ts_ms + self.interval_ms
        self._lo = price - price * self._pc
        self._hi = price + price * self._pc
        return reason


class TradeFilter:
    """All symbols' filter states; tiers can be replaced live without losing last-kept state."""

    def __init__(self, params: FilterParams = FilterParams()) -> None:
        self.params = params
        self._symbols: dict[str, SymbolFilter] = {}
        # The same dict, read-only to others and never replaced: the pipeline looks a trade's state up in it
        # and calls its decide() itself, one Python call per trade instead of two (decide() below).
        self.states: Mapping[str, SymbolFilter] = self._symbols

    def symbol(self, symbol: str) -> SymbolFilter:
        """The symbol's state (created with the default tier): hold it to skip the dict lookup."""
        f = self._symbols.get(symbol)
        if f is None:
            p = self.params
            f = SymbolFilter(p.default_tier, math.inf, p.interval_ms(p.default_tier), p.price_change_pct, p.keep_all)
            self._symbols[symbol] = f
        return f

    def decide(self, symbol: str, price: float, usd: float, ts_ms: int) -> str | None:
        """The save_reason of this trade of `symbol`, or None (dropped). The pipeline inlines this lookup
        (`states`); the filtered peer (bench/peer_filter.py), bench/fresh_start.py, bench/filter_budget.py and
        tests call it."""
        f = self._symbols.get(symbol)  # symbol() inlined for the known symbol: the peer runs this for every trade
        return (f if f is not None else self.symbol(symbol)).decide(price, usd, ts_ms)

    def set_tiers(self, assignments: Mapping[str, Assignment]) -> None:
        """Apply new tiers/thresholds in place. Symbols missing from `assignments` keep theirs:
        a symbol that stopped trading has nothing to filter, and one that has not been tiered
        yet is better served by its old numbers than by the unknown-symbol defaults."""
        for name, a in assignments.items():
            self.symbol(name).set_tier(a.tier, a.threshold_usd, self.params.interval_ms(a.tier))

    def set_thresholds(self, thresholds: Mapping[str, float]) -> None:
        """New large-trade thresholds, tiers unchanged: the fresh-start refinement of provisional tiers
        (collector.pipeline.thresholds)."""
        for name, threshold in thresholds.items():
            self.symbol(name).threshold_usd = threshold

    def set_params(self, params: FilterParams) -> None:
        """New filter parameters (SIGHUP) applied in place; each symbol keeps its tier and last kept trade."""
        self.params = params
        for f in self._symbols.values():
            f.keep_all = params.keep_all
            f._pc = params.price_change_pct / 100.0
            if not math.isnan(f.last_price):
                f._lo = f.last_price - f.last_price * f._pc
                f._hi = f.last_price + f.last_price * f._pc
            f.set_tier(f.tier, f.threshold_usd, params.interval_ms(f.tier))

    def set_keep_all(self, keep_all: bool) -> None:
        for f in self._symbols.values():
            f.keep_all = keep_all
        self.params = replace(self.params, keep_all=keep_all)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._symbols

    def __len__(self) -> int:
        return len(self._symbols)

