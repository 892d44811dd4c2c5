"""Starting and dying: a broken config stops the start with one line; a killed supervisor leaves no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import ROOT, SupervisorProcess, is_healthy, process_tree, wait_for, wait_healthy, write_config

from collector.db.embedded import free_port
from exchange_sim import SimConfig, run_in_thread


def test_broken_config_fails_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "main.yaml"
    cfg.write_text("monitoring:\n  health_check_port: eighty\n")
    r = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert lines == [f"error: {cfg}: monitoring.health_check_port: Expected `int`, got `str`"]


@pytest.mark.timeout(180)
def test_children_do_not_outlive_a_killed_supervisor(db_url: str, tmp_path: Path) -> None:
    sim = run_in_thread(SimConfig(port=0, symbols=10, rate=20, speed=1, seed=2))
    port = free_port()
    cfg = write_config(tmp_path / "main.yaml", database={"url": db_url},
                       exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                       logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
                       monitoring={"health_check_port": port})
    sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)
    try:
        def healthy() -> bool:
            return is_healthy(port)
        wait_healthy(port)
        def titled() -> list[psutil.Process] | None:
            found = [p for p in psutil.Process(sup.proc.pid).children(recursive=True)
                     if " ".join(p.cmdline()).startswith("collector: ")]
            return found if len(found) == 4 else None  # the forkserver, the writer, 2 workers
        # /health 200 means every child published statistics after setting its title; two CI runs under load
        # found none at that moment (cause not found): wait for them, and if they never show, say what was there
        try:
            children = wait_for(titled, 30, "4 titled children")
        except AssertionError as e:
            raise AssertionError(f"{e}; supervisor alive: {sup.proc.poll() is None}; tree: {process_tree()}") from None
        os.kill(sup.proc.pid, signal.SIGKILL)
        sup.proc.wait(10)
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children), 60,
                 "every child to exit after the supervisor died")
    finally:
        sup.stop()
        sim.stop()
