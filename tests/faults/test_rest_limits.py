"""Fault scenario: REST answers 429 with Retry-After: every REST user of the worker (open-interest poller,
backfill) waits it out, nothing retries early, and both resume: OI rows keep coming and the gap is filled."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import wait_for
from test_gaps import BUDGETED, Collector

from exchange_sim import SimConfig

pytestmark = pytest.mark.faults

RETRY_AFTER_S = 4
# A request sent before a 429 answer reached the worker reaches the simulator right after it.
IN_FLIGHT_S = 0.05


@pytest.mark.timeout(180)
def test_429_retry_after_honoured_then_oi_and_backfill_resume(db_url: str, tmp_path: Path) -> None:
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=20, rate=100, speed=20, seed=14), workers=1,
                  filters={"trades": {"keep_all": True}, "open_interest": {"interval_s": 5}})
    try:
        wait_for(lambda: c.query("SELECT count(*) FROM open_interest")[0][0] >= 5, 60, "open interest rows")
        c.control("fault/rest", status=429, count=3, retry_after=RETRY_AFTER_S)
        c.control("fault/skip", symbol="ETHUSDT", count=10)  # a gap whose backfill meets the 429s
        wait_for(lambda: c.truth()["rest_status"].get("429", 0) >= 3, 30, "the three 429 answers")
        oi_after = c.query("SELECT count(*) FROM open_interest")[0][0]
        wait_for(lambda: c.query("SELECT 1 FROM gaps WHERE symbol = 'ETHUSDT' AND filled_at IS NOT NULL"), 60,
                 "the gap to be filled after the 429s")
        wait_for(lambda: c.query("SELECT count(*) FROM open_interest")[0][0] >= oi_after + 5, 60,
                 "open interest to resume")
        # after every 429, no budgeted request until Retry-After has passed; one already in flight when
        # the 429 arrived (the poller and the backfill run side by side) is handled within milliseconds
        reqs = [(t, s) for t, p, _, s in list(c.weights) if p in BUDGETED]
        throttled = [t for t, s in reqs if s == 429]
        assert len(throttled) == 3
        early = [(u - t) for t in throttled for u, _ in reqs if t + IN_FLIGHT_S < u < t + RETRY_AFTER_S - 0.05]
        assert early == [], early
        waits = [min((u - t for u, _ in reqs if u > t + IN_FLIGHT_S), default=None) for t in throttled]
        assert c.truth()["rest_status"].get("418", 0) == 0
        code, out = c.stop()
        assert code == 0, out[-3000:]
        print(f"next request after each 429: {[w and round(w, 2) for w in waits]} s")
    finally:
        c.stop()
