"""Tiering: rank every symbol by how active it is, and derive its large-trade threshold.

Why tiers at all: "large" means something different for BTCUSDT and for a thin alt, and a busy
symbol can afford sparser time samples per trade than a quiet one. Each symbol's score is a
weighted sum of its percentile ranks (0..1) in volume, trade count, average size and maximum
size; ranks rather than raw values so one metric's heavy tail (BTC volume) cannot drown the
others. Symbols are then cut by score rank into tiers, and each tier multiplies the symbol's
size quantile (filters.trades.threshold_quantile, P99 by default) into a threshold above which a trade counts as large.

Exact rounding rules (tests pin them):
- Only symbols with count > 0 are ranked; N is their number. Symbols without trades get tier
  len(cutoffs) (the last), score 0.0, size_quantile 0.0 and an infinite threshold: no size is "large" for
  a symbol whose sizes are unknown.
- Percentile rank of a value is its mid-rank: (#smaller + (#equal - 1) / 2) / (N - 1), so equal
  values get equal ranks; with N == 1 every rank is 1.0.
- A symbol's position is the number of ranked symbols with a strictly higher score (ties share
  the best position of their group). Tier t is the first t with position < ceil(cutoff_t * N);
  so with N >= 1 at least one symbol is in tier 0, and a tie group straddling a cut-off all gets
  the better tier. Examples with the defaults: N=496 -> 10/40/99/347 symbols in tiers 0/1/2/3;
  N=50 -> 1/4/10/35; N=10 -> 1/0/2/7; N=1 -> tier 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, NamedTuple

from collector.pipeline.activity import EMPTY_SUMMARY, Summary

# Guards ceil(cutoff * N) against float noise: 0.3 * 10 is 3.0000000000000004, and must be 3.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class TierParams:
    # volume, frequency (count), average size, maximum size: volume matters most because it is
    # what the market cares about; count next because it drives our row budget; size terms
    # separate whale-driven symbols from retail noise.
    weights: tuple[float, float, float, float] = (0.4, 0.3, 0.2, 0.1)
    # Cumulative score-rank fractions ending tiers 0, 1, 2: a handful of majors, the next
    # liquid group, the mid caps; the long tail is the last tier.
    cutoffs: tuple[float, ...] = (0.02, 0.10, 0.30)
    # Threshold = multiplier * size quantile. Busy symbols need a higher multiple to keep the
    # large-trade rows affordable; quiet ones a lower one so their notable trades still show.
    multipliers: tuple[float, ...] = (2.0, 1.8, 1.5, 1.2)
    # The size quantile the multipliers apply to (Summary.size_quantile is expected to hold it).
    quantile: float = 0.9
    # Bootstrap only: assumed log-normal spread (sigma of ln size) of trade sizes; see
    # estimate_size_quantiles for why 1.5 and how little the choice matters.
    bootstrap_sigma: float = 1.5

    def __post_init__(self) -> None:
        if len(self.weights) != 4:
            raise ValueError("weights: expected 4 values (volume, count, avg, max)")
        if len(self.multipliers) != len(self.cutoffs) + 1:
            raise ValueError("multipliers: expected one per tier, i.e. len(cutoffs) + 1")
        if list(self.cutoffs) != sorted(self.cutoffs) or not all(0 < c <= 1 for c in self.cutoffs):
            raise ValueError("cutoffs: expected increasing fractions in (0, 1]")
        if not 0 < self.quantile < 1:
            raise ValueError("quantile: expected a fraction in (0, 1)")

    @property
    def last_tier(self) -> int:
        return len(self.cutoffs)


class TierAssignment(NamedTuple):
    tier: int
    threshold_usd: float  # a trade strictly above this is a large trade; inf = none is
    size_quantile: float  # the size quantile (USD) the threshold was derived from
    score: float  # 0..1


def percentile_ranks(values: list[float]) -> list[float]:
    """Mid-rank percentile (0..1) of each value among `values`; equal values rank equally."""
    n = len(values)
    if n == 1:
        return [1.0]
    order = sorted(range(n), key=values.__getitem__)
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[order[j + 1]] == values[order[i]]:
            j += 1
        r = (i + j) / 2 / (n - 1)  # mid-rank of the tie group order[i..j]
        for m in range(i, j + 1):
            ranks[order[m]] = r
        i = j + 1
    return ranks


def tier_of_position(position: int, n: int, cutoffs: Sequence[float]) -> int:
    """Tier of the symbol with `position` strictly better symbols among n ranked ones."""
    for t, c in enumerate(cutoffs):
        if position < math.ceil(c * n - _EPS):
            return t
    return len(cutoffs)


def _threshold(multiplier: float, size_quantile: float) -> float:
    return multiplier * size_quantile if size_quantile > 0 and math.isfinite(size_quantile) else math.inf


def compute_tiers(summaries: Mapping[str, Summary], params: TierParams = TierParams()) -> dict[str, TierAssignment]:
    ranked = [s for s, v in summaries.items() if v.count > 0]
    out = {s: TierAssignment(params.last_tier, math.inf, 0.0, 0.0) for s, v in summaries.items() if v.count <= 0}
    n = len(ranked)
    if n == 0:
        return out
    metrics = ([summaries[s].volume for s in ranked], [float(summaries[s].count) for s in ranked],
               [summaries[s].avg for s in ranked], [summaries[s].max for s in ranked])
    rank_cols = [percentile_ranks(m) for m in metrics]
    scores = [sum(w * col[i] for w, col in zip(params.weights, rank_cols, strict=True)) for i in range(n)]
    # Position = number of strictly higher scores, found from the descending order.
    desc = sorted(range(n), key=scores.__getitem__, reverse=True)
    position = [0] * n
    for p, i in enumerate(desc):
        prev = desc[p - 1] if p else None
        position[i] = position[prev] if prev is not None and scores[prev] == scores[i] else p
    for i, s in enumerate(ranked):
        tier = tier_of_position(position[i], n, params.cutoffs)
        quantile = summaries[s].size_quantile
        out[s] = TierAssignment(tier, _threshold(params.multipliers[tier], quantile), quantile, scores[i])
    return out


def estimate_size_quantiles(avg: float, count: int, params: TierParams = TierParams()) -> tuple[float, float]:
    """(size quantile, max) guessed from the average size when only 24 h totals are known.

    Assumes log-normal trade sizes with sigma = params.bootstrap_sigma, for which
    quantile_q / mean = exp(z_q * sigma - sigma**2 / 2) and the largest of n trades sits near the
    1 - 1/(n+1) quantile. With q = 0.9 the ratio is 2.22 for sigma = 1.5 and stays within
    1.76..2.27 for any sigma in 1..2, so guessing sigma wrong moves the bootstrap threshold by
    under 25% until real statistics (a few hours later) replace it. The guess sits at the high
    end of that range on purpose: a too-high threshold keeps fewer rows, which is the safe error.
    """
    sigma = params.bootstrap_sigma
    z = NormalDist().inv_cdf
    biggest = max(avg, avg * math.exp(z(1.0 - 1.0 / (count + 1)) * sigma - sigma * sigma / 2))
    return min(avg * math.exp(z(params.quantile) * sigma - sigma * sigma / 2), biggest), biggest


def summary_from_ticker_row(row: Mapping[str, Any], params: TierParams = TierParams()) -> Summary:
    """Summary estimated from one /fapi/v1/ticker/24hr row; EMPTY_SUMMARY when unusable."""
    try:
        volume = float(row["quoteVolume"])
        count = int(row["count"])
    except (KeyError, TypeError, ValueError):
        return EMPTY_SUMMARY
    if count <= 0 or not volume > 0 or not math.isfinite(volume):
        return EMPTY_SUMMARY
    avg = volume / count
    quantile, biggest = estimate_size_quantiles(avg, count, params)
    return Summary(volume, count, avg, biggest, quantile)


def bootstrap_from_ticker_24hr(rows: Iterable[Mapping[str, Any]],
                               params: TierParams = TierParams()) -> dict[str, TierAssignment]:
    """Tiers from Binance's 24 h ticker, used until our own statistics cover the window.

    Rows without a string "symbol" are skipped (nothing to assign them to); rows whose volume or
    count is missing, malformed or zero rank as trade-less: last tier, infinite threshold.
    """
    summaries = {row["symbol"]: summary_from_ticker_row(row, params)
                 for row in rows if isinstance(row, Mapping) and isinstance(row.get("symbol"), str)}
    return compute_tiers(summaries, params)
