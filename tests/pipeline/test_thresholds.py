import math

import pytest

from collector.pipeline.activity import SymbolActivity
from collector.pipeline.sketch import bucket_index, bucket_value
from collector.pipeline.thresholds import (
    Observed,
    Warmup,
    WarmupParams,
    observe,
    prior_scale,
    warm_quantile,
    warm_thresholds,
)
from collector.pipeline.tiers import TierAssignment
from collector.pipeline.trade_filter import LARGE_TRADE, TIME_INTERVAL, TradeFilter

P = WarmupParams(min_trades=300, prior_trades=300.0, calibration_share=0.1, calibration_quantile=0.9)
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
    q = warm_quantile(1000.0, Observed(299, 8000.0), 2.0, WarmupParams(300, 299.0))
    assert q == pytest.approx(math.sqrt(8000.0 * 2000.0))
    # n = 100 of prior_trades = 300: a quarter of the log weight on own
    q = warm_quantile(1000.0, Observed(100, 16_000.0), 1.0, P)
    assert q == pytest.approx(math.exp((100 * math.log(16_000.0) + 300 * math.log(1000.0)) / 400))


def test_prior_scale_needs_a_share_of_the_symbols_with_min_trades():
    good = [(100.0, Observed(300 + i, 200.0 + i)) for i in range(4)]
    young = [(100.0, Observed(299, 900.0))] * 10
    unusable = [(math.inf, Observed(500, 400.0)), (100.0, Observed(500, math.nan))]
    assert prior_scale(good + young + unusable, 16, P) is None  # 4 qualify: fewer than the minimum of 5
    five = good + [(100.0, Observed(1000, 300.0))]
    assert prior_scale(five + young, 15, P) is not None
    # 10% of 60 symbols is 6: five are not enough
    assert prior_scale(five, 60, P) is None
    assert prior_scale(five + [(50.0, Observed(400, 150.0))], 60, P) is not None


def test_prior_scale_takes_the_calibration_quantile_of_the_ratios():
    pairs = [(100.0, Observed(300 + i, 100.0 * r)) for i, r in enumerate([5, 1, 3, 2, 4, 6, 7, 8, 9, 10, 11])]
    # 11 ratios 1..11; the 0.9 "lower" quantile is sorted[int(0.9 * 10)] = sorted[9] = 10
    assert prior_scale(pairs, 11, P) == 10.0
    assert prior_scale(pairs, 11, WarmupParams(calibration_quantile=0.5)) == 6.0
    assert prior_scale(pairs, 11, WarmupParams(calibration_share=None)) is None


def test_warm_thresholds_multiply_by_the_tier_and_calibrate_within_each_tier():
    priors = {f"B{i}": TierAssignment(3, 1.2 * 100.0, 100.0, 0.2) for i in range(5)}
    priors |= {f"T{i}": TierAssignment(0, 2.0 * 100.0, 100.0, 1.0) for i in range(5)}
    priors["Q"] = TierAssignment(3, 1.2 * 50.0, 50.0, 0.1)
    observed = {f"B{i}": Observed(1000, 400.0 + i) for i in range(5)}  # tier 3 ratios 4.00 .. 4.04
    observed |= {f"T{i}": Observed(1000, 1000.0) for i in range(5)}  # tier 0 ratios all 10
    observed["Q"] = Observed(0, math.nan)
    observed["NEW"] = Observed(400, 700.0)  # no prior: listed after the ticker was read
    out = warm_thresholds(priors, observed, MULT, 3, P)
    assert out["B0"] == 1.2 * 400.0 and out["B4"] == 1.2 * 404.0 and out["T0"] == 2.0 * 1000.0
    # Q is scaled by its own tier's ratios: int(0.9 * 4) = 3, the fourth of 4.00 .. 4.04
    assert out["Q"] == pytest.approx(1.2 * 50.0 * 4.03)
    assert out["NEW"] == 1.2 * 700.0
    # market-wide, the tier 0 ratios take part: 0.9 of the ten ratios is int(0.9 * 9) = 8th, a 10
    wide = warm_thresholds(priors, observed, MULT, 3, WarmupParams(calibrate_per_tier=False))
    assert wide["Q"] == pytest.approx(1.2 * 50.0 * 10.0)
    # one tier-3 calibrator short of five: Q has no threshold, even though tier 0 is calibrated
    observed["B4"] = Observed(10, 404.0)
    assert warm_thresholds(priors, observed, MULT, 3, P)["Q"] == math.inf


def test_params_are_validated():
    with pytest.raises(ValueError, match="min_trades"):
        WarmupParams(min_trades=0)
    with pytest.raises(ValueError, match="calibration_quantile"):
        WarmupParams(calibration_quantile=1.5)
    with pytest.raises(ValueError, match="calibration_share"):
        WarmupParams(calibration_share=-0.1)


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
    warm = Warmup(priors, MULT, 3, 0.99, WarmupParams(300, 300.0))
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
    # Five busy symbols calibrate the prior of a quiet one of their tier; every refresh must equal the pure function
    # applied to freshly observed statistics (the cache recomputes on every count change below 300
    # and on each 5% growth, which each step here exceeds).
    busy = [f"A{i}" for i in range(5)]
    priors = {s: TierAssignment(3, 1.2 * 50.0, 50.0, 0.2) for s in busy} | {"B": TierAssignment(3, 6.0, 5.0, 0.1)}
    params = WarmupParams(300, 300.0)
    warm = Warmup(priors, MULT, 3, 0.99, params)
    act = {s: SymbolActivity() for s in priors}
    t = T0
    seen = set()
    for step in range(1, 6):
        for k, s in enumerate(busy):
            for i in range(100 * step):
                act[s].add(t, float(1 + (i * 7919 * (k + 1)) % 1000))
                t += 1
        for i in range(20 * step):
            act["B"].add(t, float(1 + (i * 104_729) % 300))
            t += 1
        got = warm.refresh(act, t)
        fresh = {s: observe(a, t, 0.99) for s, a in act.items()}
        assert got == warm_thresholds(priors, fresh, MULT, 3, params)
        seen.add(warm.sources)
    assert (0, 0, 6) in seen and (5, 1, 0) in seen  # before and after the calibration


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


def test_without_calibration_the_prior_never_sets_a_threshold():
    params = WarmupParams(calibration_share=None)
    pairs = [(100.0, Observed(1000, 400.0))] * 50
    assert prior_scale(pairs, 50, params) is None
    priors = {f"S{i}": TierAssignment(1, 180.0, 100.0, 0.5) for i in range(50)}
    observed = {s: Observed(1000, 400.0) for s in priors} | {"S0": Observed(299, 400.0)}
    out = warm_thresholds(priors, observed, MULT, 3, params)
    assert out["S0"] == math.inf and out["S1"] == 1.8 * 400.0


def test_warmup_refresh_skips_the_walk_only_while_its_inputs_are_unchanged():
    """With `trades`, a refresh whose trade count, activity slot and symbols are the last refresh's returns {}
    (nothing to set); any of them changing gives what the pure function gives for fresh observations."""
    priors = {s: TierAssignment(3, 1.2 * 50.0, 50.0, 0.2) for s in ("A", "B")}
    params = WarmupParams(3, 3.0)
    warm = Warmup(priors, MULT, 3, 0.99, params)
    act = {s: SymbolActivity() for s in priors}
    trades = 0
    for i in range(10):
        act["A"].add(T0 + i, 100.0 + i)
        trades += 1

    def fresh(now_ms: int) -> dict[str, float]:
        return warm_thresholds(priors, {s: observe(a, now_ms, 0.99) for s, a in act.items()}, MULT, 3, params)

    first = warm.refresh(act, T0 + 1000, trades)
    assert first == fresh(T0 + 1000) and first
    assert warm.refresh(act, T0 + 2000, trades) == {}  # same count, same slot: nothing can have moved
    for i in range(3):  # B reaches min_trades: its own quantile sets its threshold
        act["B"].add(T0 + 2500 + i, 5_000.0)
        trades += 1
    after_trade = warm.refresh(act, T0 + 3000, trades)
    assert after_trade == fresh(T0 + 3000) and after_trade["B"] != first["B"]
    slot_ms = act["A"].slot_ms
    next_slot = (T0 + 3000) // slot_ms * slot_ms + slot_ms
    assert warm.refresh(act, next_slot, trades) == fresh(next_slot)  # a new slot: recomputed
    assert warm.refresh(act, next_slot + 1, None) == fresh(next_slot + 1)  # without a count: always
