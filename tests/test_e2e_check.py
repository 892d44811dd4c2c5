"""A clean short demo ends with `python -m collector check` exit 0.

The product (`supervisor.py`, writer + 2 workers) collects from the simulator running at real speed (so
event times are wall-clock times, as in `make run`) until every symbol has two closed 1m candles, is
stopped with SIGTERM, and check is then run as a user would: a subprocess reading the same config.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT, SupervisorProcess, http_get, wait_for, write_config

from exchange_sim import SimConfig, launch_subprocess

SYMBOLS = 12


@pytest.mark.timeout(420)
def test_short_demo_passes_check(db_url: str, tmp_path: Path) -> None:
    sim = launch_subprocess(SimConfig(port=0, symbols=SYMBOLS, rate=40, speed=1, seed=11))
    sup = None
    try:
        cfg = write_config(
            tmp_path / "main.yaml",
            database={"url": db_url},
            exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
            logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
            writer={"spool_dir": str(tmp_path / "spool")},
            monitoring={"health_check_port": 0},
        )
        sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)

        def closed_minutes() -> int:
            """Fewest 1m candles any of the symbols has (0 until every symbol has one)."""
            with psycopg.connect(db_url) as conn:
                if conn.execute("SELECT to_regclass('candles_1m')").fetchone()[0] is None:
                    return 0
                rows = conn.execute("SELECT count(*) FROM candles_1m GROUP BY symbol").fetchall()
            return min((n for (n,) in rows), default=0) if len(rows) == SYMBOLS else 0

        # two closed minutes: the newest may be inside check's delivery grace, the other is judged
        wait_for(lambda: closed_minutes() >= 2, 240, "two closed 1m candles for every symbol", poll=1.0)
        code, out = sup.stop()
        assert code == 0, out[-3000:]
        http_get(sim.rest_url + "/_sim/pause")

        r = subprocess.run([sys.executable, "-m", "collector", "check", "--config", str(cfg)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"[ok] candles_1m: {SYMBOLS}/{SYMBOLS} symbols complete" in r.stdout, r.stdout
        assert f"[ok] funding: {SYMBOLS}/{SYMBOLS} symbols" in r.stdout, r.stdout
        assert "[ok] funding_cap: at most one row per symbol per minute" in r.stdout, r.stdout
        # and the same database with one funding minute doubled fails: check can fail on this data
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("""INSERT INTO funding (time, venue, symbol, mark_price)
                            SELECT time + INTERVAL '1 millisecond', venue, symbol, mark_price FROM funding
                            WHERE extract(second FROM time) < 59 ORDER BY time DESC LIMIT 1""")
        r = subprocess.run([sys.executable, "-m", "collector", "check", "--config", str(cfg)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "[FAIL] funding_cap" in r.stdout, r.stdout + r.stderr
    finally:
        if sup is not None:
            sup.stop()
        sim.stop()
