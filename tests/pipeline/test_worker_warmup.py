"""The worker's side of the fresh-start thresholds: refined while the tiers are provisional, not after."""

from __future__ import annotations

import math
import multiprocessing
import queue

from collector.config import Config
from collector.feed.endpoints import Endpoints
from collector.pipeline.activity import SymbolActivity
from collector.pipeline.router import Pipeline
from collector.pipeline.tiers import TierAssignment
from collector.runtime.worker import WorkerSpec
from collector.runtime.worker_control import build_trade_filter, build_warmup, read_control

T0 = 1_767_225_600_000
PRIOR = {"BTCUSDT": TierAssignment(0, 2.0 * 100.0, 100.0, 1.0)}


def _spec(provisional: bool) -> WorkerSpec:
    return WorkerSpec(index=0, total=1, symbols=["BTCUSDT"], config=Config(),
                      endpoints=Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1"), socket_path="/nonexistent",
                      control=queue.Queue(), stop=multiprocessing.get_context("spawn").Event(),
                      tiers=dict(PRIOR), tiers_provisional=provisional)


def test_live_tiers_get_no_warmup():
    spec = _spec(provisional=False)
    assert build_warmup(spec.config, spec, build_trade_filter(spec.config, spec.tiers)) is None


def test_provisional_thresholds_follow_own_trades_until_live_tiers_arrive():
    spec = _spec(provisional=True)
    tf = build_trade_filter(spec.config, spec.tiers)
    warm = build_warmup(spec.config, spec, tf)
    assert warm is not None and tf.symbol("BTCUSDT").threshold_usd == 200.0  # the ticker's, until a refresh
    pipeline = Pipeline(spec.symbols, ["trades"], tf, lambda batch: None, venue="binance")
    act: SymbolActivity = pipeline.activity["BTCUSDT"]
    tf.set_thresholds(warm.refresh(pipeline.activity, T0))
    assert tf.symbol("BTCUSDT").threshold_usd == math.inf  # no own trades yet, and the prior is not trusted
    for i in range(1000):
        act.add(T0 + i, 1000.0 + i)
    tf.set_thresholds(warm.refresh(pipeline.activity, T0 + 1000))
    own = tf.symbol("BTCUSDT").threshold_usd
    assert 2.0 * 1990 * 0.98 <= own <= 2.0 * 1990 * 1.02  # tier 0's multiplier x own P99 (sketch: 2%)
    spec.control.put(("tiers", {"BTCUSDT": TierAssignment(1, 5000.0, 2500.0, 0.9)}))
    read_control(spec, pipeline, tf, None, None, warm)
    assert warm.ended
    assert warm.refresh(pipeline.activity, T0 + 2000) == {}
    assert (tf.symbol("BTCUSDT").tier, tf.symbol("BTCUSDT").threshold_usd) == (1, 5000.0)
