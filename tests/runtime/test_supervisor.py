"""The product as it runs: `supervisor.py --workers 8` over 496 simulated symbols and a real PostgreSQL.

One collector is started and taken through what months of running bring: the HTTP endpoints, process
titles and per-process logs; every symbol on exactly one worker; tiers that follow a change in the
market; SIGHUP with a good and with a broken file; kill -9 of a worker and of the writer; SIGTERM.
Then the database is compared with the simulator's ground truth.
"""

from __future__ import annotations

import os
import re
import signal
import time
from decimal import Decimal
from pathlib import Path

import psutil
import psycopg
import pytest
from helpers import SupervisorProcess, http_get, is_healthy, wait_for, write_config

from collector.db.embedded import free_port
from exchange_sim import SimConfig, launch_subprocess

SYMBOLS = 496
WORKERS = 8


def _children(pid: int) -> dict[str, psutil.Process]:
    """Collector children by their process title (setproctitle rewrites the command line); recursive:
    they are forked by multiprocessing's forkserver, itself a child of the supervisor."""
    out = {}
    for p in psutil.Process(pid).children(recursive=True):
        try:
            title = " ".join(p.cmdline()).strip()  # setproctitle pads the old argv area with empty strings
        except psutil.NoSuchProcess:
            continue
        if title.startswith("collector: "):
            out[title] = p
    return out


def _db(db_url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.mark.timeout(420)
def test_supervisor_runs_the_product(db_url: str, tmp_path: Path) -> None:
    # speed 10: klines close every 6 wall seconds; 150 trades/s of sim time = 1,500 trades/s on the wire
    sim = launch_subprocess(SimConfig(port=0, symbols=SYMBOLS, rate=150, speed=10, seed=9))
    port = free_port()
    base = dict(
        database={"url": db_url},
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
        logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
        writer={"spool_dir": str(tmp_path / "spool")},
        monitoring={"health_check_port": port, "stats_interval": 5},
        filters={"trades": {"tier_interval": "8s"}},
    )
    cfg = write_config(tmp_path / "main.yaml", **base)
    sup = SupervisorProcess("--workers", str(WORKERS), "--config", str(cfg), cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    try:
        def healthy() -> bool:
            return is_healthy(port)

        wait_for(healthy, 120, "/health to answer 200")

        # --- titles, logs, endpoints ---------------------------------------------------------------------
        titles = _children(sup.proc.pid)
        assert "collector: writer" in titles
        workers = sorted(t for t in titles if t.startswith("collector: worker "))
        assert len(workers) == WORKERS and all(re.fullmatch(r"collector: worker \d/8 \(62 symbols\)", t) for t in workers)
        assert {f"worker-{i}.log" for i in range(1, WORKERS + 1)} | {"writer.log", "supervisor.log"} <= {
            p.name for p in logs.iterdir()}
        status, headers, stats = http_get(url + "/stats")
        assert status == 200 and len(stats["workers"]) == WORKERS
        assert sum(w["symbols"] for w in stats["workers"]) == SYMBOLS
        wait_for(lambda: http_get(url + "/stats")[2]["totals"]["trades_count"] > 0, 60, "committed trades")
        status, headers, metrics = http_get(url + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = metrics.decode()
        assert re.search(r'^collector_worker_received_total\{type="trades",worker="1"\} [1-9]', text, re.M) or \
            re.search(r'^collector_\w*received\w*\{[^}]*worker="1"[^}]*\} [1-9]', text, re.M), text[:2000]

        # --- every symbol on exactly one worker (from what the exchange sent on each connection) -----------
        def owners() -> dict[str, list[int]]:
            out: dict[str, list[int]] = {}
            for c in http_get(sim.rest_url + "/_sim/truth?klines=0")[2]["connections"]:
                if not c["closed"]:
                    for stream in c["sent"]:
                        out.setdefault(stream.split("@")[0].upper(), []).append(c["id"])
            return out

        wait_for(lambda: len(owners()) == SYMBOLS, 60, "frames for every symbol")
        own = owners()
        assert all(len(set(ids)) == 1 for ids in own.values())
        assert len({i for ids in own.values() for i in ids}) == WORKERS

        # --- tiers follow the market -----------------------------------------------------------------------
        wait_for(lambda: _db(db_url, "SELECT count(DISTINCT computed_at) FROM symbol_tiers")[0][0] >= 1, 60,
                 "tiers computed from the workers' statistics")
        first = dict(_db(db_url, "SELECT DISTINCT ON (symbol) symbol, tier FROM symbol_tiers "
                                 "ORDER BY symbol, computed_at DESC"))
        assert len(first) == SYMBOLS and set(first.values()) == {0, 1, 2, 3}
        quiet = sorted(s for s, t in first.items() if t == 3)[len([s for s, t in first.items() if t == 3]) // 4]
        http_get(sim.rest_url + f"/_sim/activity?symbol={quiet}&factor=400")

        def promoted() -> bool:
            rows = _db(db_url, "SELECT tier FROM symbol_tiers WHERE symbol = %s ORDER BY computed_at DESC LIMIT 1",
                       quiet)
            return rows[0][0] <= 1
        wait_for(promoted, 90, f"{quiet} to move up from tier 3")
        wait_for(lambda: any("tiers updated" in (logs / f"worker-{i}.log").read_text()
                             for i in range(1, WORKERS + 1)), 30, "workers to receive tiers")

        # --- SIGHUP: a changed filter parameter applies live; a broken file is rejected ---------------------
        write_config(cfg, **{**base, "filters": {"trades": {"tier_interval": "8s", "keep_all": True}}})
        sup.signal(signal.SIGHUP)
        wait_for(lambda: _db(db_url, "SELECT count(*) FROM trades WHERE save_reason = 'keep_all'")[0][0] > 0, 60,
                 "keep_all rows after SIGHUP")
        cfg.write_text("filters:\n  trades:\n    keep_all: maybe\n")
        sup.signal(signal.SIGHUP)
        wait_for(lambda: "new configuration rejected" in (logs / "supervisor.log").read_text(), 30,
                 "the broken file to be rejected")
        assert "filters.trades.keep_all" in (logs / "supervisor.log").read_text()
        assert sup.proc.poll() is None and healthy()
        write_config(cfg, **base)
        sup.signal(signal.SIGHUP)

        # --- kill -9 a worker: restarted, its symbols resume -----------------------------------------------
        victim_title = next(t for t in workers if t.startswith("collector: worker 3/"))
        victim = titles[victim_title]
        victim_symbols = set(re.search(r"symbols: (.*)", (logs / "worker-3.log").read_text()).group(1).split())
        assert len(victim_symbols) == 62
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        wait_for(lambda: http_get(url + "/stats")[2]["workers"][2]["restarts"] >= 1, 60, "worker 3 restarted")
        sym = sorted(victim_symbols)[0]
        wait_for(lambda: _db(db_url, "SELECT count(*) FROM funding WHERE symbol = %s AND time > to_timestamp(%s)",
                             sym, killed_at + 2)[0][0] > 0, 90, f"{sym}'s data to flow again")

        # --- kill -9 the writer: restarted, nothing it had not committed is lost ----------------------------
        writer = _children(sup.proc.pid)["collector: writer"]
        os.kill(writer.pid, signal.SIGKILL)
        wait_for(lambda: http_get(url + "/stats")[2]["supervisor"]["restarts"].get("writer", 0) >= 1
                 if isinstance(http_get(url + "/stats")[2]["supervisor"].get("restarts"), dict) else
                 "collector: writer" in _children(sup.proc.pid) and
                 _children(sup.proc.pid)["collector: writer"].pid != writer.pid, 60, "writer restarted")
        wait_for(healthy, 90, "healthy again after both kills")

        # --- stop: freeze the market, let everything land, SIGTERM ------------------------------------------
        http_get(sim.rest_url + "/_sim/pause")
        truth = http_get(sim.rest_url + "/_sim/truth")[2]
        start = min(c["opened_sim"] for c in truth["connections"])
        klines = {(k["s"], k["t"]): k for k in truth["klines"] if k["i"] == "1m" and k["t"] >= start}

        def landed() -> int:
            return _db(db_url, "SELECT count(*) FROM candles_1m WHERE symbol <> ALL(%s)", list(victim_symbols))[0][0]
        expected_others = sum(1 for (s, _) in klines if s not in victim_symbols)
        wait_for(lambda: landed() >= expected_others, 90, "every closed kline of the unharmed workers")
        code, out = sup.stop()
        assert code == 0, out[-3000:]
    finally:
        sup.stop()
        sim.stop()

    rows = _db(db_url, "SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume,"
                       " trades FROM candles_1m")
    got = {(r[0], r[1]): r[2:] for r in rows}
    for key, k in klines.items():
        want = (Decimal(k["o"]), Decimal(k["h"]), Decimal(k["l"]), Decimal(k["c"]), Decimal(k["v"]), k["n"])
        if key[0] in victim_symbols:
            # the killed worker may have lost what it held in memory, never stored anything wrong
            assert got.get(key, want) == want
        else:
            assert got.get(key) == want, key
    assert set(got) <= set(klines) | {k for k in got if k[1] < start}
    dup = _db(db_url, "SELECT count(*) FROM (SELECT symbol, trade_id FROM trades GROUP BY 1, 2 HAVING count(*) > 1) d")
    assert dup[0][0] == 0
