"""The whole product against the simulator and a real PostgreSQL: what the rules say to keep is there.

`python supervisor.py --workers 2` (writer + 2 worker processes) collects from the simulator; the
simulator is paused so its ground truth is final, the database is compared with it, and SIGTERM must
exit 0 having lost nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from helpers import SupervisorProcess, http_get, wait_for, write_config

from collector import native
from exchange_sim import SimConfig, launch_subprocess

SYMBOLS = 40


def _dec(s: str) -> Decimal:
    return Decimal(s)


@pytest.mark.timeout(240)
def test_collector_matches_ground_truth(db_url: str, tmp_path: Path) -> None:
    # speed 30: a sim minute every 2 wall seconds, so 1m and 5m klines close within the test.
    sim = launch_subprocess(SimConfig(port=0, symbols=SYMBOLS, rate=60, speed=30, seed=5))
    sup = None
    try:
        http_get(sim.rest_url + "/_sim/pause")  # nothing is generated until the collector listens
        cfg = write_config(
            tmp_path / "main.yaml",
            database={"url": db_url},
            exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
            logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
            writer={"spool_dir": str(tmp_path / "spool")},
            monitoring={"health_check_port": 0},
        )
        sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)

        def truth(klines: bool = False) -> dict:
            return http_get(sim.rest_url + f"/_sim/truth?klines={int(klines)}")[2]

        wait_for(lambda: len([c for c in truth()["connections"] if not c["closed"]]) >= 2, 60,
                 "both workers to connect")
        http_get(sim.rest_url + "/_sim/resume")
        wait_for(lambda: all(s["kline_closed"].get("5m", 0) >= 1 and s["kline_closed"].get("1m", 0) >= 6
                             for s in truth()["symbols"].values()), 90, "6 closed 1m klines per symbol")
        http_get(sim.rest_url + "/_sim/pause")
        t = truth(klines=True)
        klines_1m = [k for k in t["klines"] if k["i"] == "1m"]
        klines_5m = [k for k in t["klines"] if k["i"] == "5m"]

        def db_count(table: str) -> int:
            with psycopg.connect(db_url) as conn:
                return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

        wait_for(lambda: db_count("candles_1m") >= len(klines_1m) and db_count("liquidations") >= len(t["liquidations"]),
                 60, "every closed kline and liquidation to be committed")
        code, out = sup.stop()
        assert code == 0, out[-3000:]

        with psycopg.connect(db_url) as conn:
            # candles_1m: exactly the closed klines the exchange sent, value for value
            rows = conn.execute("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume,"
                                " quote_volume, trades FROM candles_1m").fetchall()
            got = {(r[0], r[1]): r[2:] for r in rows}
            want = {(k["s"], k["t"]): (_dec(k["o"]), _dec(k["h"]), _dec(k["l"]), _dec(k["c"]), _dec(k["v"]),
                                             _dec(k["q"]), k["n"]) for k in klines_1m}
            assert got == want
            # higher timeframes: every 5m kline the exchange closed equals our roll-up of the 1m candles
            rows = conn.execute("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume,"
                                " trades FROM candles_5m").fetchall()
            got5 = {(r[0], r[1]): r[2:] for r in rows}
            assert klines_5m
            for k in klines_5m:
                assert got5[(k["s"], k["t"])] == (_dec(k["o"]), _dec(k["h"]), _dec(k["l"]), _dec(k["c"]),
                                                        _dec(k["v"]), k["n"]), k
            # liquidations: every event
            rows = conn.execute("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, side, price, quantity"
                                " FROM liquidations").fetchall()
            want_liq = Counter((x["s"], x["T"], x["S"].lower(), _dec(x["p"]), _dec(x["q"]))
                               for x in t["liquidations"])
            assert Counter(rows) == want_liq and want_liq
            # funding: at most one row per symbol per minute, and one for every minute with mark prices
            per_minute = conn.execute("SELECT symbol, date_trunc('minute', time), count(*) FROM funding GROUP BY 1, 2"
                                      ).fetchall()
            assert per_minute and max(n for _, _, n in per_minute) == 1
            minutes = defaultdict(int)
            for sym, _, _ in per_minute:
                minutes[sym] += 1
            assert set(minutes) == set(t["symbols"])
            assert min(minutes.values()) >= 6
            # trades: every kept row says why, and no row is duplicated
            reasons = dict(conn.execute("SELECT save_reason, count(*) FROM trades GROUP BY 1").fetchall())
            assert reasons and set(reasons) <= {"large_trade", "price_change", "time_interval"}
            sent_trades = sum(s["aggTrade"] for s in t["symbols"].values())
            assert sum(reasons.values()) < sent_trades
            dup = conn.execute("SELECT count(*) FROM (SELECT symbol, trade_id FROM trades GROUP BY 1, 2 "
                               "HAVING count(*) > 1) d").fetchone()[0]
            assert dup == 0
        # one log file per process
        logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
        assert {"supervisor.log", "writer.log", "worker-1.log", "worker-2.log"} <= set(logs)
        # which pipeline ran, compiled or the source, says so at start (collector.native)
        assert f"pipeline: {native.STATUS.detail}" in (tmp_path / "logs" / "supervisor.log").read_text()
    finally:
        if sup is not None:
            sup.stop()
        sim.stop()
