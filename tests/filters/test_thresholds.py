import math

import pytest

from collector.filters.activity import SymbolActivity
from collector.filters.sketch import bucket_index, bucket_value
from collector.filters.thresholds import (
    Observed,
    Warmup,
    WarmupParams,
    observe,
    prior_scale,
    warm_quantile,
    warm_thresholds,
)
from collector.filters.trades import LARGE_TRADE, TIME_INTERVAL, TradeFilter
from collector.tiers import TierAssignment

P = WarmupParams(min_trades=300, prior_trades=300.0, calibration_symbols=3, calibration_quantile=0.9)
T0 = 1_700_000_000_000
MULT = (2.0, 1.8, 1.5, 1.2)


def test_own_quantile_alone_from_min_trades_on():
    assert warm_quantile(1000.0, Observed(300, 5000.0), 2.0, P) == 5000.0
    assert warm_quantile(1000.0, Observed(10_000, 5000.0), None, P) == 5000.0  # no calibration needed
    assert warm_quantile(math.inf, Observed(300, 5000.0), None, P) == 5000.0  # nor a prior


def test_nothing_is_large_before_min_trades_until_the_prior_is_calibrated():
    assert warm_quantile(1000.0, Observed(299, 5000.0), None, P) == math.inf
    assert warm_quantile(1000.0, Observed(0, math.nan), None, P) == math.inf


def test_without_a_usable_prior_only_own_trades_count():
    for prior in (math.inf, 0.0, math.nan, -1.0):
        assert warm_quantile(prior, Observed(299, 5000.0), 2.0, P) == math.inf


def test_scaled_prior_alone_without_own_trades():
    assert warm_quantile(1000.0, Observed(0, math.nan), 2.5, P) == 2500.0


def test_blend_is_geometric_and_weighted_by_trades():
    # n = prior_trades: the geometric mean of own and scaled prior
    q = warm_quantile(1000.0, Observed(299, 8000.0), 2.0, WarmupParams(300, 299.0, 3, 0.9))
    assert q == pytest.approx(math.sqrt(8000.0 * 2000.0))
    # n = 100 of prior_trades = 300: a quarter of the log weight on own
    q = warm_quantile(1000.0, Observed(100, 16_000.0), 1.0, P)
    assert q == pytest.approx(math.exp((100 * math.log(16_000.0) + 300 * math.log(1000.0)) / 400))


def test_prior_scale_needs_calibration_symbols_with_min_trades():
    few = [(100.0, Observed(300, 200.0)), (100.0, Observed(1000, 300.0)), (100.0, Observed(299, 900.0))]
    assert prior_scale(few, P) is None  # only two qualify
    unusable = few + [(math.inf, Observed(500, 400.0)), (100.0, Observed(500, math.nan))]
    assert prior_scale(unusable, P) is None


def test_prior_scale_takes_the_calibration_quantile_of_the_ratios():
    pairs = [(100.0, Observed(300 + i, 100.0 * r)) for i, r in enumerate([5, 1, 3, 2, 4, 6, 7, 8, 9, 10, 11])]
    # 11 ratios 1..11; the 0.9 "lower" quantile is sorted[int(0.9 * 10)] = sorted[9] = 10
    assert prior_scale(pairs, P) == 10.0
    assert prior_scale(pairs, WarmupParams(300, 300.0, 3, 0.5)) == 6.0
    assert prior_scale(pairs, WarmupParams(300, 300.0, 12, 0.5)) is None


def test_warm_thresholds_multiply_by_the_tier_and_calibrate_across_symbols():
    priors = {f"B{i}": TierAssignment(0, 2 * 100.0, 100.0, 1.0) for i in range(3)}
    priors["Q"] = TierAssignment(3, 1.2 * 50.0, 50.0, 0.1)
    observed = {f"B{i}": Observed(1000, 400.0 + i) for i in range(3)}  # ratios 4.00, 4.01, 4.02
    observed["Q"] = Observed(0, math.nan)
    observed["NEW"] = Observed(400, 700.0)  # no prior: listed after the ticker was read
    out = warm_thresholds(priors, observed, MULT, 3, P)
    assert out["B0"] == 2.0 * 400.0 and out["B2"] == 2.0 * 402.0
    assert out["Q"] == pytest.approx(1.2 * 50.0 * 4.01)  # int(0.9 * 2) = 1: the middle ratio
    assert out["NEW"] == 1.2 * 700.0
    # before calibration the quiet symbol has no threshold
    observed["B2"] = Observed(10, 402.0)
    assert warm_thresholds(priors, observed, MULT, 3, P)["Q"] == math.inf


def test_params_are_validated():
    with pytest.raises(ValueError, match="min_trades"):
        WarmupParams(min_trades=0)
    with pytest.raises(ValueError, match="calibration_quantile"):
        WarmupParams(calibration_quantile=1.5)


def _activity(sizes: list[float], t0: int = T0) -> SymbolActivity:
    a = SymbolActivity()
    for i, usd in enumerate(sizes):
        a.add(t0 + i, usd)
    return a


def test_count_matches_summary():
    a = _activity([float(i + 1) for i in range(1234)])
    assert a.count(T0 + 2000) == a.summary(T0 + 2000).count == 1234
    assert a.count(T0 + 2 * 86_400_000) == 0  # aged out of the window


def test_observe_reads_the_sketch_quantile():
    sizes = [float(i + 1) for i in range(1000)]
    o = observe(_activity(sizes), T0 + 2000, 0.99)
    assert o.count == 1000
    assert o.quantile == bucket_value(bucket_index(sorted(sizes)[int(0.99 * 999)]))
    assert math.isnan(observe(SymbolActivity(), T0, 0.99).quantile)


def test_warmup_refresh_switches_a_symbol_to_its_own_quantile_at_min_trades():
    priors = {"X": TierAssignment(0, 2.0 * 10.0, 10.0, 1.0)}
    warm = Warmup(priors, MULT, 3, 0.99, WarmupParams(300, 300.0, 1, 0.9))
    act = {"X": _activity([100.0] * 299)}
    assert warm.refresh(act, T0 + 1000) == {"X": math.inf}  # no calibration: X is the only symbol
    assert warm.sources == (0, 0, 1)
    act["X"].add(T0 + 300, 100.0)
    out = warm.refresh(act, T0 + 1000)
    assert out == {"X": 2.0 * bucket_value(bucket_index(100.0))}
    assert warm.sources == (1, 0, 0)
    warm.end()
    assert warm.refresh(act, T0 + 1000) == {}


def test_warmup_refresh_is_warm_thresholds_of_fresh_observations():
    # Two symbols; every refresh must equal the pure function applied to freshly observed statistics
    # whenever the counts grew by more than the cache's tolerance.
    priors = {"A": TierAssignment(0, 2.0 * 50.0, 50.0, 1.0), "B": TierAssignment(3, 1.2 * 5.0, 5.0, 0.1)}
    params = WarmupParams(300, 300.0, 1, 0.9)
    warm = Warmup(priors, MULT, 3, 0.99, params)
    act = {"A": SymbolActivity(), "B": SymbolActivity()}
    t = T0
    for step in range(1, 6):
        for i in range(400 * step):
            act["A"].add(t, float(1 + (i * 7919) % 1000))
            t += 1
        for i in range(20 * step):
            act["B"].add(t, float(1 + (i * 104_729) % 300))
            t += 1
        got = warm.refresh(act, t)
        fresh = {s: observe(a, t, 0.99) for s, a in act.items()}
        assert got == warm_thresholds(priors, fresh, MULT, 3, params)


def test_set_thresholds_keeps_tier_and_last_kept_trade():
    tf = TradeFilter()
    tf.set_tiers({"X": TierAssignment(1, 1000.0, 500.0, 0.5)})
    f = tf.symbol("X")
    assert f.decide(100.0, 10.0, T0) == TIME_INTERVAL
    tf.set_thresholds({"X": 50.0})
    assert (f.tier, f.threshold_usd, f.last_price, f.last_ts) == (1, 50.0, 100.0, T0)
    assert f.decide(100.0, 60.0, T0 + 1) == LARGE_TRADE
    tf.set_thresholds({"X": math.inf})
    assert f.decide(100.0, 1e12, T0 + 2) is None


def test_by_default_the_prior_never_sets_a_threshold():
    pairs = [(100.0, Observed(1000, 400.0))] * 50
    assert prior_scale(pairs) is None
    assert warm_quantile(100.0, Observed(299, 400.0), None) == math.inf
    assert warm_quantile(100.0, Observed(300, 400.0), None) == 400.0
