"""Fault scenario: 1% of frames malformed and some for unknown symbols; nothing bad is stored, every
bad frame is counted in /stats, no connection is dropped for it, and samples are logged."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import wait_for
from test_gaps import Collector

from exchange_sim import SimConfig

pytestmark = pytest.mark.faults


def rejected(c: Collector) -> dict[str, float]:
    total: dict[str, float] = {}
    for w in c.stats()["workers"]:
        for kind, n in w["rejected"].items():
            total[kind] = total.get(kind, 0) + n
    return total


@pytest.mark.timeout(180)
def test_malformed_frames_counted_never_stored_connections_kept(db_url: str, tmp_path: Path) -> None:
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=20, rate=100, speed=20, seed=13), workers=2,
                  filters={"trades": {"keep_all": True}})
    try:
        conns = {x["id"] for x in c.live_connections()}
        c.control("fault/malformed_rate", rate=0.01)
        wait_for(lambda: rejected(c).get("malformed_json", 0) >= 20, 60, "20 malformed frames counted")
        c.control("fault/malformed_rate", rate=0.01, kind="unknown_symbol")
        wait_for(lambda: rejected(c).get("unknown_symbol", 0) >= 5, 60, "5 unknown-symbol frames counted")
        c.control("fault/malformed_rate", rate=0)
        c.control("pause")
        t = c.truth()
        assert {x["id"] for x in c.live_connections()} == conns  # no connection was dropped
        assert t["injected"]["malformed"] >= 20
        # only the simulator's symbols are stored, and keep_all trades have no holes or duplicates
        symbols = set(t["symbols"])
        for table in ("trades", "funding", "candles_1m"):
            stored = {r[0] for r in c.query(f"SELECT DISTINCT symbol FROM {table}")}
            assert stored <= symbols, (table, stored - symbols)
        assert c.query("SELECT count(*) FROM gaps")[0][0] == 0
        dup = c.query("SELECT count(*) FROM (SELECT symbol, trade_id FROM trades GROUP BY 1, 2 "
                      "HAVING count(*) > 1) d")[0][0]
        assert dup == 0
        code, out = c.stop()
        assert code == 0, out[-3000:]
        logs = c.worker_logs()
        assert "skipped a frame (malformed_json, 1 so far)" in logs
        assert "skipped an event (unknown_symbol, 1 so far)" in logs
        assert "skipped a frame (malformed_json, 4 so far)" not in logs  # samples are rate-limited
    finally:
        c.stop()
