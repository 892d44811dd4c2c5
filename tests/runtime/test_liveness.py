"""The supervisor's liveness rule (gunicorn's murder_workers) and boot errors, with real children.

A hung worker (SIGSTOP: a real hang, nothing mocked) is aborted, killed and replaced; a child that cannot
boot exits with BOOT_ERROR and the supervisor stops with one line instead of respawning it for ever.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import time
from pathlib import Path

import psutil
import pytest
from helpers import SupervisorProcess, task_wakeups, wait_for, wait_healthy, write_config

from collector.db.embedded import free_port
from collector.runtime.arbiter import liveness_action
from collector.runtime.children import IDLE_LOOP_TIMEOUT_S, LOOP_TIMEOUT_S, Child, Retiring, loop_period
from collector.runtime.exitcodes import BOOT_ERROR
from exchange_sim import SimConfig, run_in_thread


@pytest.mark.parametrize(("silent", "aborted", "expected"), [
    (0.0, None, None),
    (120.0, None, None),  # exactly the timeout: still fine
    (120.1, None, "abort"),
    (500.0, 0.0, None),  # aborted just now: give it the grace
    (500.0, 4.9, None),
    (500.0, 5.0, "kill"),
    (1.0, 5.0, "kill"),  # a late beat after SIGABRT does not save it: the abort was sent, the kill follows
])
def test_liveness_action(silent: float, aborted: float | None, expected: str | None) -> None:
    assert liveness_action(silent, 120.0, aborted, 5.0) == expected


def test_loop_period() -> None:
    """The main loop turns every second while a timed step runs, every 5 s (or a quarter of the heartbeat
    timeout) otherwise."""
    idle = [Child("writer", 0), Child("worker", 0), Child("worker", 1)]
    assert loop_period(idle, [], 120.0) == IDLE_LOOP_TIMEOUT_S == 5.0
    assert loop_period(idle, [], 10.0) == 2.5  # a hung child is still caught by timeout + a quarter of it
    assert loop_period([*idle, Child("worker", 2, restart_at=12.0)], [], 120.0) == LOOP_TIMEOUT_S  # back-off
    assert loop_period([*idle, Child("worker", 2, aborted_at=3.0)], [], 120.0) == LOOP_TIMEOUT_S  # abort grace
    retiring = Retiring(mp.get_context("spawn").Process(), mp.get_context("spawn").Event(), since=0.0)
    assert loop_period(idle, [retiring], 120.0) == LOOP_TIMEOUT_S  # a hand-over


def _start(tmp_path: Path, db_url: str, **sections: dict) -> tuple:
    sim = run_in_thread(SimConfig(port=0, symbols=6, rate=20, speed=1, seed=3))
    base = {"database": {"url": db_url}, "exchange": {"rest_url": sim.rest_url, "ws_url": sim.ws_url},
            "logging": {"filename": str(tmp_path / "logs" / "supervisor.log")},
            "writer": {"spool_dir": str(tmp_path / "spool")},
            "monitoring": {"health_check_port": free_port()}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    cfg = write_config(tmp_path / "main.yaml", **base)
    return sim, SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)


def _boot_error_run(sup: SupervisorProcess) -> str:
    """Wait for the supervisor to stop on its own; its output."""
    code = sup.proc.wait(90)
    out = sup.stop()[1]
    assert code == BOOT_ERROR, out[-3000:]
    return out


@pytest.mark.timeout(180)
def test_a_writer_that_cannot_boot_again_stops_the_collector(db_url: str, tmp_path: Path) -> None:
    """The writer dies and its spool directory has meanwhile become a file (a path a human replaced): the
    successor cannot boot, and restarting it again would only fail again, so the collector stops."""
    sim, sup = _start(tmp_path, db_url)
    try:
        wait_for(lambda: (tmp_path / "spool").is_dir(), 60, "the writer to boot (it creates its spool)")
        writer = wait_for(lambda: next((p for p in psutil.Process(sup.proc.pid).children(recursive=True)
                                        if " ".join(p.cmdline()).strip() == "collector: writer"), None),
                          60, "the writer process")
        shutil.rmtree(tmp_path / "spool")  # (not rmdir: under load the writer may have spooled a batch)
        (tmp_path / "spool").write_text("not a directory any more")
        writer.kill()
        out = _boot_error_run(sup)
    finally:
        sim.stop()
    lines = [ln for ln in out.splitlines() if "collector.runtime.arbiter" in ln and "could not boot" in ln]
    assert len(lines) == 1, out[-3000:]
    assert "writer could not boot (exit code 3, BOOT_ERROR): FileExistsError" in lines[0]
    assert "/spool" in lines[0] and "Stopping the collector instead of restarting it" in lines[0]
    assert out.count("started writer") == 2 and out.count("restarting in") == 1  # the kill -9 only


@pytest.mark.timeout(120)
def test_a_worker_that_cannot_boot_stops_the_collector(db_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """exchange.ws_client: picows on a host where picows cannot be imported (here: shadowed by a broken
    package on PYTHONPATH, which only the workers import): the workers fail at boot, every time."""
    shadow = tmp_path / "shadow" / "picows"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('picows is broken on this host')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "shadow"))  # the supervisor and its children inherit it
    sim, sup = _start(tmp_path, db_url, exchange={"ws_client": "picows"})
    try:
        out = _boot_error_run(sup)
    finally:
        sim.stop()
    lines = [ln for ln in out.splitlines() if "collector.runtime.arbiter" in ln and "could not boot" in ln]
    assert len(lines) == 1, out[-3000:]
    assert "could not boot (exit code 3, BOOT_ERROR): ImportError: picows is broken on this host" in lines[0]
    assert "restarting in" not in out
    assert sum(out.count(f"started worker {i}") for i in (1, 2)) == 2  # none respawned
    log = (tmp_path / "logs").glob("worker-*.log")
    assert any("Traceback" in p.read_text() for p in log)  # the full story is in the worker's own log


@pytest.mark.timeout(180)
def test_an_idle_supervisor_wakes_on_events_not_every_second(db_url: str, tmp_path: Path) -> None:
    """Nothing under way (no restart, hand-over or abort): the supervisor's main thread sleeps until an event
    or the idle period, so in a 6 s window it wakes at most 3 times (the 1 s loop it had woke 6 times)."""
    port = free_port()
    sim, sup = _start(tmp_path, db_url, monitoring={"health_check_port": port})
    try:
        wait_healthy(port)
        pid = sup.proc.pid
        wait_for(lambda: sum(" ".join(p.cmdline()).startswith(("collector: writer", "collector: worker"))
                             for p in psutil.Process(pid).children(recursive=True)) == 3, 60,
                 "the writer and both workers")
        before = task_wakeups(pid, pid)
        time.sleep(6.0)  # the window measured, not a wait for something to happen
        woke = task_wakeups(pid, pid) - before
        assert sup.proc.poll() is None
    finally:
        sup.stop()
        sim.stop()
    assert woke <= 3, f"the supervisor's main thread woke {woke} times in 6 s"
