"""A fresh start's row budget: <= 1.5% of trades kept in every minute, <= 1% over the first ten.

Runs bench/fresh_start.py's measurement (simulated time, no sockets): the simulator's default market
at 1,260 trades/s over 496 symbols from its first millisecond, tiers bootstrapped from its own
/fapi/v1/ticker/24hr as the supervisor does without stored tiers, the worker's warm-up refreshing
thresholds every sim second, and the supervisor's first live tiers at tier_warmup (10 min).
"""

from __future__ import annotations

import importlib.util

from helpers import ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("fresh_start", ROOT / "bench" / "fresh_start.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_scenario_overwhelms_the_ticker_thresholds() -> None:
    """Without the warm-up the ticker's thresholds keep far too much: the scenario tests something."""
    r = _bench().run(seed=7, minutes=1, warmup=False)
    assert r["per_minute"][0]["kept_pct"] > 5.0, r["per_minute"]


def test_fresh_start_keeps_at_most_one_and_a_half_percent_every_minute() -> None:
    r = _bench().run(seed=7, minutes=11)
    minutes = r["per_minute"]
    assert all(m["trades"] > 60_000 for m in minutes), minutes
    assert max(m["kept_pct"] for m in minutes) <= 1.5, [round(m["kept_pct"], 3) for m in minutes]
    assert r["first10_pct"] <= 1.0, r["first10_pct"]
    # Large trades are recorded from the first minute on (the busy symbols' own quantiles), not
    # switched off until the live tiers.
    assert minutes[0]["by_reason"].get("large_trade", 0) > 100, minutes[0]
