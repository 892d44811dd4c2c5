"""Large-trade thresholds of a fresh start: the symbol's own size quantile as soon as it means something.

Why: with no stored tiers the supervisor ranks symbols from /fapi/v1/ticker/24hr, whose size estimate
(quoteVolume / count) is wrong in ways no constant fixes: `count` is individual fills, not aggTrades,
so sizes come out low, and a ticker read moments after a listing (or the simulator's start) covers a
handful of trades. Thresholds derived from it kept 10.8% of all trades (bench/fresh_start.py
--no-warmup) until the first tiers from live statistics, `tier_warmup` (10 min) later. Every worker
already keeps each symbol's size histogram (collector.pipeline.activity), so while the tiers are that
provisional estimate it re-derives each threshold from what the symbol itself traded:

    threshold = multiplier[tier] x q, where q is
      own quantile                        once the symbol has min_trades trades of its own;
      prior x scale, blended with own     before that, once the prior is calibrated (below);
      inf (nothing is "large")            otherwise.

The ticker keeps deciding the tiers (the ranking, hence the multiplier and the time interval) until
the supervisor's first live tiers; the price and time rules record a symbol meanwhile, so an infinite
threshold delays only its first "large_trade" rows.

Why min_trades = 300 (for the default q = 0.99): the empirical q-quantile of n trades has the
fraction of trades above it distributed with standard deviation sqrt(q (1 - q) / n); at n = 300
that is 0.57% around 1%, i.e. +-57% in the number of trades above the estimate, 3 of them expected.
In size terms, on the simulator's Pareto tail (alpha 1.4), that is +-0.41 in log size; since the
number kept above a threshold is convex in that error (exp(alpha * error)), a symmetric error keeps
exp(0.5 (1.4 * 0.41)**2) = +18% more large trades on average than an exact quantile would. n = 100
gives +64% (and the rank estimate is then the largest or second-largest trade), n = 1000 +5%, but a
tail symbol of the default market needs tens of minutes for 1000 trades. Measured without the prior
(--no-prior --min-trades N, 3 seeds): 100 -> first minute 1.14%, first ten 0.62%; 200 -> 1.05%,
0.54%; 300 -> 1.01%, 0.49%.

The prior is calibrated, never used raw: `scale` is the 0.9 quantile of own quantile / prior over the
symbols of the same tier that already have min_trades trades, once they are 10% of the worker's
symbols of that tier (and at least 5). Within a tier because the prior's error depends on how many
trades the ticker saw, which is what ranked the symbol: market-wide, the busy symbols' accurate
priors calibrated the quiet symbols' noisy ones, and with the ticker read 30 s after the simulator's
start the worst minute kept 0.85% against 0.61% per tier. A high quantile rather than the median, and
a wait for 10%, because the number kept is convex in a too-low threshold: calibrating market-wide on
the first 5 symbols (the busiest, whose priors are the best) kept 4.9% of the first minute with the
median and 3.8% with the 0.9 quantile.
Before min_trades the threshold blends own quantile and scaled prior in log space, weights n and
prior_trades, so a symbol whose first trades are unrepresentative is held near its tier's estimate
and there is no jump at the switch. Measured, ticker read 1..600 s after the start: no minute above
1.07%, 0.49-0.55% over the first ten; with the ticker read at 30 s, minutes 2-10 had 3-32% more
large-trade rows than with --no-prior (3 seeds each).

Measured alternatives (3 seeds, first ten minutes): the blend's weight hardly matters (prior_trades
100 / 300 / 1000: 0.527 / 0.528 / 0.537%), since a tier is calibrated only when many of its symbols
are near min_trades anyway. Shrinking towards the prior for much longer (min_trades 3000) keeps
0.34%: 100-230 large-trade rows a minute in minutes 2-10, against ~360 once the live tiers apply.
Unrepresentative starts (--skew 300 0.2: every symbol's first 300 trades at a fifth of their size)
keep 0.73% (worst minute 1.10%, then <= 0.82%) with or without the prior: from min_trades on the own
quantile decides alone, and the small trades stay in its 24 h window until the live tiers; within
the budget, so no guard against it.

Everything here is pure: observations in, thresholds out; no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from collector.pipeline.activity import SymbolActivity
from collector.pipeline.sketch import quantile_of_counts

# Fewest calibrating symbols whatever the share: one outlier symbol must not set everyone's thresholds.
CALIBRATION_MIN_SYMBOLS = 5


@dataclass(frozen=True, slots=True)
class WarmupParams:
    # Own trades from which the symbol's own quantile alone sets its threshold (module docstring).
    min_trades: int = 300
    # Weight of the scaled prior in the blend before min_trades, in trades: log q =
    # (n log own + prior_trades log prior) / (n + prior_trades). Equal to min_trades, so at the
    # switch the own estimate already carries half the weight (no large jump either way).
    prior_trades: float = 300.0
    # Share of the worker's symbols that must have min_trades trades before their ratios calibrate the
    # prior (and at least CALIBRATION_MIN_SYMBOLS); None: the prior never sets a threshold. A share,
    # not a count, so it means the same with 2 workers of 248 symbols or 8 of 62 (the supervisor's
    # snake draft gives every worker the same mix of busy and quiet names); 10% (module docstring).
    calibration_share: float | None = 0.1
    # Which of those ratios (own quantile / prior) scales the prior: a high one, so the prior-based
    # threshold is too low for few symbols when the priors scatter (module docstring).
    calibration_quantile: float = 0.9
    # Calibrate each tier's priors by that tier's symbols (module docstring), or all by all.
    calibrate_per_tier: bool = True

    def __post_init__(self) -> None:
        if self.min_trades < 1:
            raise ValueError("min_trades must be >= 1")
        if not self.prior_trades >= 0:
            raise ValueError("prior_trades must be >= 0")
        if self.calibration_share is not None and not 0.0 <= self.calibration_share <= 1.0:
            raise ValueError("calibration_share must be in [0, 1] (or None: no prior)")
        if not 0.0 <= self.calibration_quantile <= 1.0:
            raise ValueError("calibration_quantile must be in [0, 1]")


class Observed(NamedTuple):
    """A symbol's own trades so far: how many, and their size quantile (USD; nan when none)."""

    count: int  # type: ignore[assignment]  # a field named like tuple.count, on purpose: callers read .count
    quantile: float


class Prior(Protocol):
    """What the warm-up needs from a provisional tier assignment (collector.pipeline.tiers.TierAssignment fits)."""

    @property
    def tier(self) -> int: ...

    @property
    def size_quantile(self) -> float: ...  # the prior size quantile, USD


def _usable(q: float) -> bool:
    return q > 0.0 and math.isfinite(q)


def prior_scale(pairs: Iterable[tuple[float, Observed]], symbols: int,
                params: WarmupParams = WarmupParams()) -> float | None:
    """The calibration_quantile of own quantile / prior quantile over the symbols with min_trades trades.

    `pairs` is (prior quantile, observed) per symbol, out of `symbols` the worker observes. None while
    fewer than calibration_share of them (and CALIBRATION_MIN_SYMBOLS) qualify: the prior is then not
    known to be right within any factor.
    """
    if params.calibration_share is None:
        return None
    needed = max(CALIBRATION_MIN_SYMBOLS, math.ceil(params.calibration_share * symbols - 1e-9))
    ratios = [o.quantile / p for p, o in pairs
              if o.count >= params.min_trades and _usable(p) and _usable(o.quantile)]
    if len(ratios) < needed:
        return None
    ratios.sort()
    return ratios[int(params.calibration_quantile * (len(ratios) - 1))]


def warm_quantile(prior: float, observed: Observed, scale: float | None,
                  params: WarmupParams = WarmupParams()) -> float:
    """The size quantile a provisional threshold multiplies (module docstring); inf = nothing is large."""
    n, own = observed
    if n >= params.min_trades and _usable(own):
        return own
    if scale is None or not _usable(prior) or not _usable(scale):
        return math.inf
    prior_q = prior * scale
    if n <= 0 or not _usable(own):
        return prior_q
    w = params.prior_trades
    return math.exp((n * math.log(own) + w * math.log(prior_q)) / (n + w))


def warm_thresholds(priors: Mapping[str, Prior], observed: Mapping[str, Observed],
                    multipliers: tuple[float, ...], default_tier: int,
                    params: WarmupParams = WarmupParams()) -> dict[str, float]:
    """Threshold (USD) of every observed symbol while the tiers are provisional.

    A symbol without a prior (listed after the ticker was read) is in `default_tier` and relies on
    its own trades alone. Tiers themselves are not touched: the ranking stays the ticker's until
    the supervisor's first tiers from live statistics.
    """
    # Each tier's priors are calibrated by that tier's symbols: the ticker ranks by its own figures,
    # so a tier holds symbols whose priors rest on similar ticker counts, hence similar errors.
    by_tier: dict[int, list[tuple[float, Observed]]] = {}
    for s, o in observed.items():
        a = priors.get(s)
        if a is not None:
            by_tier.setdefault(a.tier, []).append((a.size_quantile, o))
    scales = {t: prior_scale(pairs, len(pairs), params) for t, pairs in by_tier.items()}
    if not params.calibrate_per_tier:
        every = [p for pairs in by_tier.values() for p in pairs]
        scales = dict.fromkeys(by_tier, prior_scale(every, len(every), params))
    out: dict[str, float] = {}
    last = len(multipliers) - 1
    for s, o in observed.items():
        a = priors.get(s)
        tier = a.tier if a is not None else default_tier
        q = warm_quantile(a.size_quantile, o, scales[tier], params) if a is not None else warm_quantile(
            math.nan, o, None, params)
        out[s] = multipliers[min(max(tier, 0), last)] * q
    return out


# A symbol's quantile is recomputed (a histogram walk, ~0.1 ms) once its count grew by this fraction
# since the last computation: a 5% larger sample moves a quantile estimate far less than its own
# sampling error, so refreshing every second costs a count per symbol, not a histogram walk.
RECOMPUTE_GROWTH = 0.05


class Warmup:
    """A worker's provisional thresholds: the priors it was given, refreshed from its own statistics.

    State is only a cache of the last computed quantiles; `refresh` returns what warm_thresholds
    returns for the observations it makes, so the decision itself stays the pure function above.
    """

    def __init__(self, priors: Mapping[str, Prior], multipliers: tuple[float, ...], default_tier: int,
                 quantile: float, params: WarmupParams = WarmupParams()) -> None:
        self.priors = dict(priors)
        self.multipliers = multipliers
        self.default_tier = default_tier
        self.quantile = quantile
        self.params = params
        self._cache: dict[str, Observed] = {}
        self._last_inputs: tuple[int, int, int] | None = None  # refresh(): `trades`, slot, symbols
        self.ended = False
        # From the last refresh: symbols whose threshold came from their own trades, from the scaled
        # prior (blended), and those with none yet (inf); for the worker's log.
        self.sources = (0, 0, 0)

    def end(self) -> None:
        """Tiers from live statistics arrived: they supersede the provisional ones for good."""
        self.ended = True

    def refresh(self, activity: Mapping[str, SymbolActivity], now_ms: int,
                trades: int | None = None) -> dict[str, float]:
        """New thresholds from the symbols' statistics at now_ms; {} once ended.

        `trades`: a count that grows whenever a trade is added to any of `activity` (the worker passes its
        pipeline's received plus backfilled trades). When it, the statistics' current slot and the symbols
        are those of the last refresh, nothing the statistics report can differ from then, so neither can
        the thresholds: {} (nothing to set) without the walk over every symbol, which was most of an idle
        worker's warm-up cost (bench/README)."""
        if self.ended:
            return {}
        inputs = None
        if trades is not None and activity:
            inputs = (trades, now_ms // next(iter(activity.values())).slot_ms, len(activity))
            if inputs == self._last_inputs:
                return {}
        observed: dict[str, Observed] = {}
        for s, act in activity.items():
            n = act.count(now_ms)
            o = self._cache.get(s)
            if o is None or n < o.count or n >= o.count * (1 + RECOMPUTE_GROWTH) + 1 or (
                    o.count < self.params.min_trades <= n):
                o = self._cache[s] = observe(act, now_ms, self.quantile)
                n = o.count
            observed[s] = Observed(n, o.quantile)
        out = warm_thresholds(self.priors, observed, self.multipliers, self.default_tier, self.params)
        self._last_inputs = inputs  # only once computed: a refresh that raised is not skipped next time
        own = sum(1 for o in observed.values() if o.count >= self.params.min_trades and _usable(o.quantile))
        none = sum(1 for t in out.values() if t == math.inf)
        self.sources = (own, len(out) - own - none, none)
        return out


def observe(activity: SymbolActivity, now_ms: int, quantile: float) -> Observed:
    """The symbol's trade count and size quantile over its activity window."""
    s = activity.sketch(now_ms)
    n = s.count
    return Observed(n, quantile_of_counts(s.counts, n, quantile) if n else math.nan)
