"""Changes while running: listings and delistings, and reloads that must restart some children.

Only what must restart restarts: new symbols go to the least loaded worker, a changed data_types
replaces the workers one by one (successor first), a changed writer setting restarts the writer only.
One test per step, in file order, sharing one running collector (tests/runtime/scenario.py).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from helpers import SupervisorProcess, http_get, is_healthy, wait_for, wait_healthy, write_config
from scenario import Scenario, keep_running, module_database

from collector.db.embedded import free_port
from exchange_sim import SimConfig, SimProcess, launch_subprocess


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


TYPES = ["trades", "funding", "candles_1m", "candles_5m", "open_interest"]  # no liquidations


@dataclass
class Product:
    scenario: Scenario
    sim: SimProcess
    sup: SupervisorProcess
    db_url: str
    cfg: Path
    base: dict[str, Any]
    port: int
    log: Path

    def step(self, name: str) -> AbstractContextManager[None]:
        return self.scenario.step(name)


@pytest.fixture(scope="module")
def product(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Product]:
    tmp_path = tmp_path_factory.mktemp("changes")
    with module_database(pg_server_url) as db_url:
        sim = launch_subprocess(SimConfig(port=0, symbols=30, rate=60, speed=10, seed=4))
        sup = None
        try:
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
            keep_running(sup)
            yield Product(Scenario(), sim, sup, db_url, cfg, base, port, tmp_path / "logs" / "supervisor.log")
        finally:
            if sup is not None:
                sup.stop()
            sim.stop()


@pytest.mark.timeout(180)
def test_1_a_listing_is_collected_without_a_restart(product: Product) -> None:
    p = product
    with p.step("a listing: collected without a restart of the whole collector"):
        wait_healthy(p.port)
        http_get(p.sim.rest_url + "/_sim/list?symbol=NEWCOINUSDT&price=2.5")
        wait_for(lambda: _count(p.db_url, "SELECT count(*) FROM funding WHERE symbol = 'NEWCOINUSDT'") > 0, 60,
                 "rows for the new listing")
        assert "1 listed (NEWCOINUSDT)" in p.log.read_text()


@pytest.mark.timeout(180)
def test_2_a_delisting_leaves_its_workers_successor(product: Product) -> None:
    p = product
    with p.step("a delisting: its worker's successor no longer subscribes to it"):
        victim = "BTCUSDT"
        http_get(p.sim.rest_url + f"/_sim/delist?symbol={victim}")
        wait_for(lambda: "1 delisted (BTCUSDT)" in p.log.read_text(), 30, "the delisting to be noticed")
        logs = p.log.parent
        wait_for(lambda: all(victim not in re.findall(r"symbols: (.*)", (logs / f"worker-{i}.log").read_text())[-1]
                             .split() for i in (1, 2)), 60, "successors without the delisted symbol")
        wait_for(lambda: is_healthy(p.port), 60, "healthy after the universe changes")


@pytest.mark.timeout(180)
def test_3_changed_data_types_replace_the_workers_only(product: Product) -> None:
    p = product
    with p.step("a changed data_types: workers replaced, the writer untouched"):
        before = _pids(p.sup.proc.pid)
        writer_pid = before["collector: writer"]
        p.scenario.state["writer_pid"] = writer_pid
        write_config(p.cfg, **{**p.base, "collection": {"data_types": TYPES}})
        p.sup.signal(signal.SIGHUP)
        wait_for(lambda: "replacing the workers" in p.log.read_text(), 30, "the workers to be replaced")

        def replaced() -> bool:
            now = _pids(p.sup.proc.pid)
            workers_now = {t: pid for t, pid in now.items() if t.startswith("collector: worker")}
            return len(workers_now) == 2 and not set(workers_now.values()) & set(
                pid for t, pid in before.items() if t.startswith("collector: worker"))
        wait_for(replaced, 90, "only the successors left")
        assert _pids(p.sup.proc.pid)["collector: writer"] == writer_pid
        t0 = time.time()
        wait_for(lambda: _count(p.db_url, "SELECT count(*) FROM funding WHERE time > to_timestamp(%s)", t0) > 0,
                 60, "data to flow through the successors")


@pytest.mark.timeout(240)
def test_4_a_changed_writer_setting_restarts_the_writer_only(product: Product) -> None:
    p = product
    with p.step("a changed writer setting: the writer alone restarts, and nothing is lost meanwhile"):
        writer_pid = p.scenario.state["writer_pid"]
        spool = p.base["writer"]["spool_dir"]
        write_config(p.cfg, **{**p.base, "collection": {"data_types": TYPES},
                               "writer": {"spool_dir": spool, "batch_rows": 5000}})
        worker_pids = {pid for t, pid in _pids(p.sup.proc.pid).items() if t.startswith("collector: worker")}
        p.sup.signal(signal.SIGHUP)
        wait_for(lambda: _pids(p.sup.proc.pid).get("collector: writer", writer_pid) != writer_pid, 60,
                 "a new writer")
        assert {pid for t, pid in _pids(p.sup.proc.pid).items() if t.startswith("collector: worker")} == worker_pids
        t1 = time.time()
        wait_for(lambda: _count(p.db_url, "SELECT count(*) FROM funding WHERE time > to_timestamp(%s)", t1) > 0,
                 60, "rows through the new writer")
        assert "died" not in p.log.read_text()
        code, out = p.sup.stop()
        assert code == 0, out[-3000:]
