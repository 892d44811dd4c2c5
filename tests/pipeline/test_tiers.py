import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.pipeline.activity import Summary
from collector.pipeline.tiers import (
    TierAssignment,
    TierParams,
    bootstrap_from_ticker_24hr,
    compute_tiers,
    estimate_size_quantiles,
    percentile_ranks,
    tier_of_position,
)


def ladder(n: int) -> dict[str, Summary]:
    """n symbols S0000 (busiest) .. S{n-1}: every metric strictly decreasing, so scores are too."""
    return {f"S{i:04d}": Summary(1e6 * (n - i), 1000 * (n - i), 10.0 * (n - i), 100.0 * (n - i), 20.0 * (n - i))
            for i in range(n)}


def tier_sizes(tiers: dict[str, TierAssignment]) -> list[int]:
    c = Counter(a.tier for a in tiers.values())
    return [c[t] for t in range(4)]


def test_percentile_ranks_hand_computed():
    assert percentile_ranks([5.0]) == [1.0]
    assert percentile_ranks([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    # Ties share the mid-rank: 1 is alone at 0; the three 2s occupy positions 1..3 -> 2/4.
    assert percentile_ranks([2.0, 1.0, 2.0, 2.0, 9.0]) == [0.5, 0.0, 0.5, 0.5, 1.0]
    assert percentile_ranks([4.0, 4.0]) == [0.5, 0.5]


@pytest.mark.parametrize(("n", "sizes"), [
    (1, [1, 0, 0, 0]),
    (2, [1, 0, 0, 1]),
    (3, [1, 0, 0, 2]),
    (4, [1, 0, 1, 2]),  # ceil(0.3 * 4) = 2
    (10, [1, 0, 2, 7]),  # 0.3 * 10 is 3.0000000000000004 in floats: must still be 3
    (50, [1, 4, 10, 35]),
    (100, [2, 8, 20, 70]),
    (496, [10, 40, 99, 347]),
])
def test_tier_sizes(n, sizes):
    assert tier_sizes(compute_tiers(ladder(n))) == sizes


@pytest.mark.parametrize(("n", "position", "tier"), [
    (496, 9, 0), (496, 10, 1), (496, 49, 1), (496, 50, 2), (496, 148, 2), (496, 149, 3), (496, 495, 3),
    (50, 0, 0), (50, 1, 1), (50, 4, 1), (50, 5, 2), (50, 14, 2), (50, 15, 3),
    (1, 0, 0),
])
def test_tier_edges(n, position, tier):
    cut = TierParams().cutoffs
    assert tier_of_position(position, n, cut) == tier
    assert compute_tiers(ladder(n))[f"S{position:04d}"].tier == tier


def test_single_symbol_is_tier_zero_with_full_score():
    t = compute_tiers({"BTCUSDT": Summary(1e9, 10, 1e8, 1e8, 5e7)})
    assert t == {"BTCUSDT": TierAssignment(0, 2.0 * 5e7, 5e7, pytest.approx(1.0))}


def test_hand_computed_scores():
    s = {
        # volume, count, avg, max, size_quantile
        "A": Summary(300.0, 30, 10.0, 50.0, 20.0),
        "B": Summary(200.0, 10, 20.0, 90.0, 30.0),
        "C": Summary(100.0, 20, 5.0, 10.0, 8.0),
    }
    t = compute_tiers(s)
    # ranks  A: vol 1, cnt 1, avg .5, max .5 -> .4 + .3 + .1 + .05 = .85
    #        B: vol .5, cnt 0, avg 1, max 1  -> .2 + 0 + .2 + .1   = .50
    #        C: vol 0, cnt .5, avg 0, max 0  -> 0 + .15            = .15
    assert [t[k].score for k in "ABC"] == pytest.approx([0.85, 0.50, 0.15])
    # N=3: one symbol in tier 0, none in 1 or 2 (ceil(.3) = 1), the rest in tier 3.
    assert [t[k].tier for k in "ABC"] == [0, 3, 3]
    assert t["A"].threshold_usd == pytest.approx(40.0)
    assert t["B"].threshold_usd == pytest.approx(1.2 * 30.0)
    assert t["B"].size_quantile == 30.0


def test_thresholds_use_each_tiers_multiplier():
    t = compute_tiers(ladder(100))
    for name, a in t.items():
        assert a.threshold_usd == pytest.approx([2.0, 1.8, 1.5, 1.2][a.tier] * ladder(100)[name].size_quantile)


def test_all_ties_share_tier_zero():
    s = {f"S{i}": Summary(1.0, 1, 1.0, 1.0, 1.0) for i in range(10)}
    assert {a.tier for a in compute_tiers(s).values()} == {0}


def test_tie_group_straddling_a_cutoff_gets_the_better_tier():
    s = ladder(100)  # tier 0 holds positions 0 and 1
    s["S0002"] = s["S0001"]
    t = compute_tiers(s)
    assert [t[f"S{i:04d}"].tier for i in range(4)] == [0, 0, 0, 1]


def test_symbols_without_trades_are_last_tier_and_not_ranked():
    s = {"A": Summary(5.0, 1, 5.0, 5.0, 5.0), "Z": Summary(0.0, 0, 0.0, 0.0, 0.0)}
    t = compute_tiers(s)
    assert t["A"].tier == 0 and t["A"].score == 1.0  # N counts only A
    assert t["Z"] == TierAssignment(3, math.inf, 0.0, 0.0)
    assert compute_tiers({}) == {}


def test_unknown_size_quantile_means_no_large_trades():
    t = compute_tiers({"A": Summary(5.0, 1, 5.0, 5.0, 0.0), "B": Summary(5.0, 1, 5.0, 5.0, math.nan)})
    assert t["A"].threshold_usd == math.inf and t["B"].threshold_usd == math.inf


def test_parameters_change_cutoffs_and_multipliers():
    p = TierParams(cutoffs=(0.5,), multipliers=(3.0, 1.0), weights=(1.0, 0.0, 0.0, 0.0))
    t = compute_tiers(ladder(4), p)
    assert [t[f"S{i:04d}"].tier for i in range(4)] == [0, 0, 1, 1]
    assert t["S0000"].threshold_usd == pytest.approx(3.0 * 80.0)


@pytest.mark.parametrize("bad", [
    dict(weights=(1.0, 0.0)), dict(multipliers=(1.0, 2.0)), dict(cutoffs=(0.3, 0.1, 0.5)), dict(quantile=1.0),
])
def test_bad_params_are_rejected(bad):
    with pytest.raises(ValueError):
        TierParams(**bad)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e9), st.integers(1, 10**6), st.floats(0, 1e6)), min_size=1, max_size=60))
def test_tier_order_follows_score_and_sizes_respect_cutoffs(rows):
    s = {f"S{i}": Summary(v, c, v / c, a, a) for i, (v, c, a) in enumerate(rows)}
    t = compute_tiers(s)
    n = len(s)
    for x in t.values():
        for y in t.values():
            if x.score > y.score:
                assert x.tier <= y.tier
    assert any(a.tier == 0 for a in t.values())
    # Without ties, tiers hold exactly the ceil() quotas.
    if len({a.score for a in t.values()}) == n:
        quotas = [math.ceil(c * n - 1e-9) for c in (0.02, 0.10, 0.30)]
        sizes = tier_sizes(t)
        assert [sum(sizes[:k + 1]) for k in range(3)] == quotas


# --- bootstrap from /fapi/v1/ticker/24hr --------------------------------------------------------

def test_size_estimates_follow_the_lognormal_rule():
    p90, biggest = estimate_size_quantiles(1000.0, 1_000_000)
    assert p90 == pytest.approx(1000.0 * math.exp(1.2815516 * 1.5 - 1.125), rel=1e-6)
    assert p90 / 1000.0 == pytest.approx(2.22, abs=0.01)
    assert biggest > p90
    # One trade: its size is the average, the maximum and the quantile.
    assert estimate_size_quantiles(50.0, 1) == (50.0, 50.0)


def test_bootstrap_from_ticker_rows():
    rows = [
        {"symbol": "BTCUSDT", "quoteVolume": "15000000000.50", "count": 3000000, "lastPrice": "60000"},
        {"symbol": "ETHUSDT", "quoteVolume": "8000000000", "count": "2000000", "lastPrice": "3000"},
        {"symbol": "DEADUSDT", "quoteVolume": "0", "count": 0, "lastPrice": "1"},
        {"symbol": "NOCOUNT", "quoteVolume": "1000"},
        {"symbol": "GARBAGE", "quoteVolume": "n/a", "count": 5},
        {"symbol": "NULLS", "quoteVolume": None, "count": None},
        {"symbol": "NANUSDT", "quoteVolume": "nan", "count": 5},
        {"quoteVolume": "1", "count": 1},  # no symbol: nothing to assign
        {"symbol": 7, "quoteVolume": "1", "count": 1},
    ]
    t = bootstrap_from_ticker_24hr(rows)
    assert set(t) == {"BTCUSDT", "ETHUSDT", "DEADUSDT", "NOCOUNT", "GARBAGE", "NULLS", "NANUSDT"}
    for dead in ("DEADUSDT", "NOCOUNT", "GARBAGE", "NULLS", "NANUSDT"):
        assert t[dead] == TierAssignment(3, math.inf, 0.0, 0.0)
    # Two valid symbols: BTC is top in volume, count and max; ETH has the larger average.
    assert t["BTCUSDT"].tier == 0 and t["ETHUSDT"].tier == 3
    avg = 15000000000.50 / 3000000
    assert t["BTCUSDT"].size_quantile == pytest.approx(estimate_size_quantiles(avg, 3000000)[0])
    assert t["BTCUSDT"].threshold_usd == pytest.approx(2.0 * t["BTCUSDT"].size_quantile)


def test_bootstrap_realistic_universe_has_the_right_tier_sizes():
    rows = [{"symbol": f"S{i:04d}", "quoteVolume": str(1e9 / (i + 1)), "count": 10**6 // (i + 1)} for i in range(496)]
    assert tier_sizes(bootstrap_from_ticker_24hr(rows)) == [10, 40, 99, 347]
