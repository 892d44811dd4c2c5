"""Starting and dying: a broken config stops the start with one line; a killed supervisor leaves no orphans,
and what a SIGKILLed process group leaves in shared memory the next start removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import (
    ROOT,
    SupervisorProcess,
    is_healthy,
    kill_group,
    process_tree,
    wait_for,
    wait_healthy,
    write_config,
)

from collector.db.embedded import free_port
from collector.runtime.run_dir import SHM_DIR
from exchange_sim import SimConfig, SimHandle, run_in_thread


def test_broken_config_fails_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "main.yaml"
    cfg.write_text("monitoring:\n  health_check_port: eighty\n")
    r = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert lines == [f"error: {cfg}: monitoring.health_check_port: Expected `int`, got `str`"]


def _config(tmp_path: Path, db_url: str, sim: SimHandle) -> tuple[Path, int]:
    """A configuration for `sim` and the test's database, and its health port."""
    port = free_port()
    cfg = write_config(tmp_path / "main.yaml", database={"url": db_url},
                       exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                       logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
                       monitoring={"health_check_port": port})
    return cfg, port


@pytest.mark.timeout(180)
def test_children_do_not_outlive_a_killed_supervisor(db_url: str, tmp_path: Path) -> None:
    sim = run_in_thread(SimConfig(port=0, symbols=10, rate=20, speed=1, seed=2))
    cfg, port = _config(tmp_path, db_url, sim)
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


def _shared_names(run_dir_name: str) -> set[str]:
    """What /dev/shm holds under a run directory's name: blocks `<name>-*`, semaphores `sem.<name>-*`."""
    return {n for n in os.listdir(SHM_DIR) if n.removeprefix("sem.").startswith(run_dir_name + "-")}


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="POSIX shared memory is listed in /dev/shm on Linux only")
@pytest.mark.timeout(300)
def test_a_sigkilled_process_group_leaves_nothing_behind_after_the_next_start(db_url: str, tmp_path: Path) -> None:
    # The whole group SIGKILLed (systemd's final SIGKILL after TimeoutStopSec does that) kills
    # multiprocessing's resource tracker too, which would otherwise remove the supervisor's shared memory and
    # semaphores: they stay in /dev/shm (RAM) until the next start removes them with the run directory.
    run_tmp = tmp_path / "tmp"
    run_tmp.mkdir()
    env = {"TMPDIR": str(run_tmp)}  # this test's supervisors alone sweep (and make) run directories here
    sim = run_in_thread(SimConfig(port=0, symbols=10, rate=20, speed=1, seed=2))
    cfg, port = _config(tmp_path, db_url, sim)
    first = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path, env=env)
    second = None
    try:
        wait_healthy(port)
        (run_dir,) = run_tmp.glob("collector-*")
        held = _shared_names(run_dir.name)
        semaphores = {n for n in held if n.startswith("sem.")}
        assert held - semaphores == {f"{run_dir.name}-stats", f"{run_dir.name}-checkpoints"}
        assert len(semaphores) >= 3  # at least the stop event of each child (the writer, 2 workers)
        kill_group(first.proc.pid)
        first.proc.wait(10)
        wait_for(lambda: _group_gone(first.proc.pid), 30, "every process of the killed group to be gone")
        assert _shared_names(run_dir.name) == held  # nothing removed them: the resource tracker died too

        second = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path, env=env)
        wait_healthy(port)
        assert not run_dir.exists()
        assert _shared_names(run_dir.name) == set()
        (run_dir2,) = run_tmp.glob("collector-*")
        assert f"{run_dir2.name}-stats" in _shared_names(run_dir2.name)
        code, out = second.stop()
        assert code == 0, out[-2000:]
        assert _shared_names(run_dir2.name) == set()  # a clean stop removes its own
        assert "removed 1 run directories and" in out
    finally:
        first.stop()
        if second is not None:
            second.stop()
        sim.stop()
