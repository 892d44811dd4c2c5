"""Fault scenario: a worker hangs (SIGSTOP: its event loop really stops, nothing is mocked).

Its heartbeat (the stats slot it publishes every 1 s) goes stale; after monitoring.heartbeat_timeout_s the
supervisor sends SIGABRT (which a stopped process cannot act on), then SIGKILL, and respawns it. The
successor publishes heartbeats again and resumes from the shared-memory slots: the trades nobody read while
it hung are a gap, backfilled over REST, so with keep_all every aggTrade is stored once, and every closed 1m
kline is stored exactly as the exchange sent it.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import wait_for
from test_gaps import Collector, assert_every_id_once, trade_ids
from test_worker_crash import _worker_pids

from exchange_sim import SimConfig

pytestmark = pytest.mark.faults

TIMEOUT_S = 10  # the smallest heartbeat_timeout_s the configuration accepts


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.timeout(300)
def test_a_hung_worker_is_killed_and_replaced_and_nothing_is_lost(db_url: str, tmp_path: Path) -> None:
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=16, rate=80, speed=10, seed=13), workers=2,
                  filters={"trades": {"keep_all": True}}, monitoring={"heartbeat_timeout_s": TIMEOUT_S})
    try:
        wait_for(lambda: all(len(trade_ids(c, s)) > 30 for s in ("BTCUSDT", "ETHUSDT")), 60, "trades stored")
        # a closed 1m kline of every symbol stored: the resume points published next include one, so the
        # successor can tell which candles the hang cost (before any, there is nothing to resume from)
        wait_for(lambda: c.query("SELECT count(DISTINCT symbol) FROM candles_1m")[0][0] == 16, 60,
                 "a 1m candle of every symbol")
        flowing = (datetime.now(UTC) + timedelta(seconds=4.5)).isoformat()
        wait_for(lambda: (c.stats()["workers"][0]["activity_published_at"] or "") > flowing[:23], 30,
                 "worker 1 to publish its acknowledged resume points")
        victim = _worker_pids(c)["1/2"]
        os.kill(victim, signal.SIGSTOP)
        hung_at = time.monotonic()
        wait_for(lambda: _gone(victim), TIMEOUT_S + 30, "the supervisor to kill the hung worker")
        assert time.monotonic() - hung_at >= TIMEOUT_S  # not before its heartbeat was stale for the timeout
        log = (c.logs / "supervisor.log").read_text()
        assert f"worker 1 (pid {victim}) has published no heartbeat" in log and "sending SIGABRT" in log
        assert f"worker 1 (pid {victim}) is still there" in log  # SIGSTOP'd: only SIGKILL ends it
        wait_for(lambda: _worker_pids(c).get("1/2", victim) != victim, 30, "a replacement worker 1")
        successor = _worker_pids(c)["1/2"]

        def beat() -> str:
            w = c.stats()["workers"][0]
            return w["stats_updated_at"] if w["pid"] == successor else ""
        first = wait_for(beat, 60, "the replacement's first heartbeat")
        wait_for(lambda: beat() > first, 10, "the replacement's heartbeat to advance")

        wait_for(lambda: (c.logs / "worker-1.log").read_text().count("resumed the checkpoints of") >= 2, 60,
                 "the successor to resume from its predecessor's slots")

        def closed_1m() -> int:
            return sum(v["kline_closed"].get("1m", 0) for v in c.truth()["symbols"].values())
        target = closed_1m() + 2 * 16  # two more minutes close live: the successor sees the hang's candle hole
        wait_for(lambda: closed_1m() >= target, 60, "two more 1m klines per symbol")
        c.control("pause")
        t = c.truth(klines=True)
        symbols = [s for s, v in t["symbols"].items() if v["agg_ids"]["last"] >= 0]
        last = {s: t["symbols"][s]["agg_ids"]["last"] for s in symbols}
        wait_for(lambda: c.query("SELECT count(*) FROM gaps WHERE filled_at IS NULL AND kind <> 'liquidations'")[0][0] == 0 and
                 all(max(trade_ids(c, s), default=-1) >= a for s, a in last.items()), 120,
                 "every trade up to the pause, the hang's gap included")
        assert_every_id_once(c, t, symbols)
        # every closed 1m kline since each symbol's first one, once, value for value
        first_open = dict(c.query("SELECT symbol, (extract(epoch FROM min(time)) * 1000)::bigint FROM candles_1m "
                                  "GROUP BY 1"))
        want = {(k["s"], k["t"]): (Decimal(k["o"]), Decimal(k["h"]), Decimal(k["l"]), Decimal(k["c"]),
                                   Decimal(k["v"]))
                for k in t["klines"] if k["i"] == "1m" and k["t"] >= first_open[k["s"]]}

        def candles() -> dict:
            rows = c.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, "
                           "volume FROM candles_1m")
            return {(r[0], r[1]): r[2:] for r in rows}
        wait_for(lambda: candles().keys() >= want.keys(), 60, "every closed 1m kline, the hang's included")
        assert candles() == want
        code, out = c.stop()
        assert code == 0, out[-3000:]
    finally:
        c.stop()
