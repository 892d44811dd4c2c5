"""A 429 is per IP: when one worker is told to back off, every worker backs off."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SupervisorProcess, http_get, is_healthy, wait_for, wait_healthy, write_config

from collector.db.embedded import free_port
from exchange_sim import SimConfig, run_in_thread


@pytest.mark.timeout(180)
def test_rate_limit_seen_by_one_worker_pauses_all(db_url: str, tmp_path: Path) -> None:
    sim = run_in_thread(SimConfig(port=0, symbols=20, rate=40, speed=1, seed=6))
    port = free_port()
    cfg = write_config(tmp_path / "main.yaml", database={"url": db_url},
                       exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                       filters={"open_interest": {"interval_s": 10}},  # a REST request a second per worker
                       logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
                       monitoring={"health_check_port": port})
    sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)
    logs = tmp_path / "logs"
    try:
        def healthy() -> bool:
            return is_healthy(port)
        wait_healthy(port)
        sim.set_rest_fault(429, 1, 0.0, 0.0, 20)  # the next REST answer: 429, Retry-After 20 s
        wait_for(lambda: "every worker pauses REST" in (logs / "supervisor.log").read_text(), 60,
                 "the supervisor to spread the pause")
        wait_for(lambda: all("REST paused for" in (logs / f"worker-{i}.log").read_text() for i in (1, 2)), 30,
                 "both workers to pause")
        wait_for(lambda: all(w["rest_paused_until"] for w in http_get(f"http://127.0.0.1:{port}/stats")[2]["workers"]),
                 10, "both workers to publish the pause")
        code, out = sup.stop()
        assert code == 0, out[-2000:]
    finally:
        sup.stop()
        sim.stop()
