"""Fault scenario over both venues: a SIGHUP that replaces every OKX and Bybit worker (a changed exchange
setting, collector.runtime.reload) while the markets keep trading. Each successor starts before its
predecessor retires, holds what it receives, and continues from the predecessor's final checkpoint
(collector.runtime.handover), so the hand-over is exact: every trade, closed 1m candle, liquidation and
funding minute of both venues stored once and equal to the venue's truth, and no gap row at all. Every
funding row carries the rate the venue published last before it: an OKX successor resumes the rate its
predecessor was sent (OKX pushes it only every 30-90 s), so its first rows are not left without one."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml
from helpers import wait_for, write_config
from venue_rig import VENUES, VenueRig

pytestmark = pytest.mark.faults

# Three workers over two venues of four symbols each: one venue is split over two workers.
WORKERS = 3


@pytest.mark.timeout(150)
def test_sighup_hands_every_venue_worker_over_exactly(db_url: str, tmp_path: Path) -> None:
    rig = VenueRig(tmp_path, db_url, workers=WORKERS)
    try:
        for venue in VENUES:
            wait_for(lambda v=venue: rig.count("candles_1m", v) >= 8, 60, f"{venue} candles stored")
        doc = yaml.safe_load(rig.config_path.read_text())
        doc["exchange"]["silent_timeout_s"] = 61  # an exchange setting: every worker is replaced
        write_config(rig.config_path, **doc)
        before = set(rig.worker_pids().values())
        assert len(before) == WORKERS
        rig.sup.signal(signal.SIGHUP)
        wait_for(lambda: len(rig.worker_pids()) == WORKERS and not before & set(rig.worker_pids().values()), 90,
                 "every predecessor to retire")
        logs = lambda: "".join(rig.worker_log(i) for i in range(1, WORKERS + 1))  # noqa: E731
        wait_for(lambda: logs().count("the predecessor has handed over") == WORKERS, 30, "every hand-over")
        for venue in VENUES:
            wait_for(lambda v=venue: rig.subscribed(v), 30, f"{venue} subscribed by the successors")
        sim_ms = {v: rig.truth(v)["sim_ms"] for v in VENUES}
        for venue in VENUES:  # the successors collect a while: their rows count too
            wait_for(lambda v=venue: rig.truth(v)["sim_ms"] > sim_ms[v] + 90_000, 30, f"{venue}: more sim time")
        for venue in VENUES:
            t = rig.settle(venue)
            assert rig.gaps(venue, "trades") == [] and rig.gaps(venue, "candles_1m") == [], venue
            assert rig.gaps(venue, "liquidations") == [], venue  # the successors received before the retirement
            assert rig.trade_problems(venue, t, complete=True) == []
            assert rig.candle_problems(venue, t) == []
            rig.assert_liquidations(venue, t)
            rig.assert_funding(venue, t)
        code, out = rig.stop()
        assert code == 0, out[-3000:]
    finally:
        rig.stop()
