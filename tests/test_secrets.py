"""The database password never shows: not in any log file, not in /stats, /metrics or the status page.

The throwaway server trusts local connections, so it accepts any password: the test can hand the
collector a real-looking secret and then search everything the collector wrote or serves for it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import SupervisorProcess, http_get, wait_for, wait_healthy, write_config
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.db.embedded import free_port
from exchange_sim import SimConfig, run_in_thread

SECRET = "Sup3r-s3cret-pw"


@pytest.mark.timeout(180)
def test_password_never_appears(db_url: str, tmp_path: Path) -> None:
    params = conninfo_to_dict(db_url)
    params["password"] = SECRET
    sim = run_in_thread(SimConfig(port=0, symbols=8, rate=20, seed=3))
    port = free_port()
    base = dict(database={"url": make_conninfo(**params)},
                exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                logging={"filename": str(tmp_path / "logs" / "supervisor.log"), "level": "DEBUG"},
                monitoring={"health_check_port": port})
    cfg = write_config(tmp_path / "main.yaml", **base)
    sup = SupervisorProcess("--workers", "1", "--config", str(cfg), cwd=tmp_path)
    try:
        wait_healthy(port)
        served = "".join(str(http_get(f"http://127.0.0.1:{port}{path}")[2]) for path in ("/", "/stats", "/metrics"))
        # a reload with a broken file and one with another password: both are logged, neither leaks
        cfg.write_text(cfg.read_text() + "\nbogus: [\n")
        sup.signal(signal.SIGHUP)
        wait_for(lambda: "new configuration rejected" in (tmp_path / "logs" / "supervisor.log").read_text(), 30,
                 "the rejection")
        write_config(cfg, **base)
        sup.signal(signal.SIGHUP)
        code, out = sup.stop()
        assert code == 0, out[-2000:]
    finally:
        sup.stop()
        sim.stop()
    logs = {p.name: p.read_text() for p in (tmp_path / "logs").iterdir()}
    assert {"supervisor.log", "writer.log", "worker-1.log"} <= set(logs)
    for name, text in logs.items():
        assert SECRET not in text, name
    assert SECRET not in out and SECRET not in served
