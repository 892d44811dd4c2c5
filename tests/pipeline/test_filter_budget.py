"""The default filter's row budget on a realistic market: <= 1% of trades at the seed's rate.

Runs bench/filter_budget.py's measurement at a reduced length: the simulator's market model at
1,260 trades/s over 496 symbols, 10 sim minutes of statistics to tier on, then 5 minutes filtered
with the shipped defaults.
"""

from __future__ import annotations

import importlib.util

from helpers import ROOT

from collector.config import Config


def _bench():
    spec = importlib.util.spec_from_file_location("filter_budget", ROOT / "bench" / "filter_budget.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_defaults_keep_at_most_one_percent() -> None:
    quantile = Config().filters.trades.threshold_quantile
    r = _bench().run(rate=1260, symbols=496, warmup=10, minutes=5, quantile=quantile, seed=7)
    assert r["trades"] > 300_000
    assert r["kept_pct"] <= 1.0, r
    # every rule contributes: the filter is not just sampling
    assert set(r["by_reason_per_min"]) == {"large_trade", "price_change", "time_interval"}
