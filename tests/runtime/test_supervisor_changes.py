"""Changes while running: listings and delistings, and reloads that must restart some children.

Only what must restart restarts: new symbols go to the least loaded worker, a changed data_types
replaces the workers one by one (successor first), a changed writer setting restarts the writer only.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from helpers import SupervisorProcess, http_get, is_healthy, wait_for, wait_healthy, write_config

from collector.db.embedded import free_port
from exchange_sim import SimConfig, launch_subprocess


def _pids(pid: int) -> dict[str, int]:
    out = {}
    for p in psutil.Process(pid).children(recursive=True):
        try:
            title = " ".join(p.cmdline()).strip()
        except psutil.NoSuchProcess:
            continue
        if title.startswith("collector: "):
            out.setdefault(title, p.pid)
    return out


def _count(db_url: str, sql: str, *args: object) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, args).fetchone()[0]


@pytest.mark.timeout(300)
def test_universe_changes_and_partial_restarts(db_url: str, tmp_path: Path) -> None:
    sim = launch_subprocess(SimConfig(port=0, symbols=30, rate=60, speed=10, seed=4))
    port = free_port()
    base = dict(
        database={"url": db_url},
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "universe_refresh_s": 2},
        logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
        writer={"spool_dir": str(tmp_path / "spool")},
        monitoring={"health_check_port": port},
    )
    cfg = write_config(tmp_path / "main.yaml", **base)
    sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)
    log = tmp_path / "logs" / "supervisor.log"
    try:
        def healthy() -> bool:
            return is_healthy(port)
        wait_healthy(port)

        # a listing: collected without a restart of the whole collector
        http_get(sim.rest_url + "/_sim/list?symbol=NEWCOINUSDT&price=2.5")
        wait_for(lambda: _count(db_url, "SELECT count(*) FROM funding WHERE symbol = 'NEWCOINUSDT'") > 0, 60,
                 "rows for the new listing")
        assert "1 listed (NEWCOINUSDT)" in log.read_text()
        # a delisting: its worker's successor no longer subscribes to it
        victim = "BTCUSDT"
        http_get(sim.rest_url + f"/_sim/delist?symbol={victim}")
        wait_for(lambda: "1 delisted (BTCUSDT)" in log.read_text(), 30, "the delisting to be noticed")
        wait_for(lambda: all(victim not in re.findall(r"symbols: (.*)", (tmp_path / "logs" / f"worker-{i}.log")
                                                      .read_text())[-1].split() for i in (1, 2)), 60,
                 "successors without the delisted symbol")
        wait_for(healthy, 60, "healthy after the universe changes")

        # a changed data_types: workers replaced, the writer untouched
        before = _pids(sup.proc.pid)
        writer_pid = before["collector: writer"]
        types = ["trades", "funding", "candles_1m", "candles_5m", "open_interest"]  # no liquidations
        write_config(cfg, **{**base, "collection": {"data_types": types}})
        sup.signal(signal.SIGHUP)
        wait_for(lambda: "replacing the workers" in log.read_text(), 30, "the workers to be replaced")

        def replaced() -> bool:
            now = _pids(sup.proc.pid)
            workers_now = {t: p for t, p in now.items() if t.startswith("collector: worker")}
            return len(workers_now) == 2 and not set(workers_now.values()) & set(
                p for t, p in before.items() if t.startswith("collector: worker"))
        wait_for(replaced, 90, "only the successors left")
        assert _pids(sup.proc.pid)["collector: writer"] == writer_pid
        t0 = time.time()
        wait_for(lambda: _count(db_url, "SELECT count(*) FROM funding WHERE time > to_timestamp(%s)", t0) > 0, 60,
                 "data to flow through the successors")

        # a changed writer setting: the writer alone restarts, and nothing is lost meanwhile
        write_config(cfg, **{**base, "collection": {"data_types": types}, "writer": {"spool_dir": str(tmp_path / "spool"),
                                                                                    "batch_rows": 5000}})
        worker_pids = {p for t, p in _pids(sup.proc.pid).items() if t.startswith("collector: worker")}
        sup.signal(signal.SIGHUP)
        wait_for(lambda: _pids(sup.proc.pid).get("collector: writer", writer_pid) != writer_pid, 60,
                 "a new writer")
        assert {p for t, p in _pids(sup.proc.pid).items() if t.startswith("collector: worker")} == worker_pids
        t1 = time.time()
        wait_for(lambda: _count(db_url, "SELECT count(*) FROM funding WHERE time > to_timestamp(%s)", t1) > 0, 60,
                 "rows through the new writer")
        assert "died" not in log.read_text()
        code, out = sup.stop()
        assert code == 0, out[-3000:]
    finally:
        sup.stop()
        sim.stop()
