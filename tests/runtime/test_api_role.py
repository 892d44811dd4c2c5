"""`--api`: the supervisor runs the read API as a supervised child, shows it on /stats (the status page's
link), restarts it when it dies, and refuses to start with one line when the API's configuration is unsafe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT, SupervisorProcess, http_get, wait_for, wait_healthy, write_config

from collector.db.embedded import free_port
from exchange_sim import SimConfig, run_in_thread


def test_an_api_bound_off_loopback_without_a_token_stops_the_start_with_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "main.yaml", api={"host": "0.0.0.0"},
                       logging={"filename": str(tmp_path / "logs" / "supervisor.log")})
    r = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(cfg), "--api"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert (r.stdout + r.stderr).strip().splitlines() == [
        "error: api.host 0.0.0.0 is not a loopback address: set api.token, api.token_file or the environment "
        "variable named by api.token_env, or bind 127.0.0.1"]


@pytest.mark.timeout(240)
def test_the_api_child_serves_the_collected_rows_and_is_restarted_when_killed(db_url: str, tmp_path: Path) -> None:
    sim = run_in_thread(SimConfig(port=0, symbols=6, rate=30, speed=1, seed=4))
    port, api_port = free_port(), free_port()
    cfg = write_config(tmp_path / "main.yaml", database={"url": db_url},
                       exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                       logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
                       monitoring={"health_check_port": port}, api={"port": api_port})
    sup = SupervisorProcess("--workers", "1", "--config", str(cfg), "--api", cwd=tmp_path)
    try:
        wait_healthy(port)

        def api() -> dict:
            return http_get(f"http://127.0.0.1:{port}/stats")[2]["api"]  # type: ignore[index]

        wait_for(lambda: api()["alive"], 60, "the API child to be alive")
        first = api()
        assert first["url"] == f"http://127.0.0.1:{api_port}" and first["restarts"] == 0
        assert first["docs"] == f"http://127.0.0.1:{api_port}/api/v1/docs"

        def served_symbols() -> list[str]:
            try:
                status, _, body = http_get(f"http://127.0.0.1:{api_port}/api/v1/latest?format=json", timeout=5)
            except OSError:  # not listening yet
                return []
            return sorted(r["symbol"] for r in body["data"]) if status == 200 else []  # type: ignore[index]

        with psycopg.connect(db_url) as conn:
            wait_for(lambda: conn.execute("SELECT count(*) FROM funding").fetchone()[0] > 0, 90, "funding rows")
            stored = sorted(r[0] for r in conn.execute("SELECT DISTINCT symbol FROM funding").fetchall())
        wait_for(lambda: set(stored) <= set(served_symbols()), 60, "the API to serve every stored symbol")

        os.kill(first["pid"], signal.SIGKILL)
        wait_for(lambda: api()["restarts"] == 1 and api()["alive"] and api()["pid"] != first["pid"], 60,
                 "the API child to be restarted")
        wait_for(lambda: set(stored) <= set(served_symbols()), 60, "the restarted API to serve again")
        code, _ = sup.stop()
        assert code == 0
    finally:
        sup.stop()
        sim.stop()
