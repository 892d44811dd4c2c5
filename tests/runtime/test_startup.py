"""First-run traps, each answered at start with one line naming the config key, and exit code 2.

Real obstacles, no mocks: a socket really listening on the health port, a directory nobody may write in
(/sys: sysfs refuses new files to every user, root included, so the test means the same as root or not),
a loopback port nothing listens on, and a PostgreSQL 18 where TimescaleDB is installed but not preloaded.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT, SupervisorProcess, http_get, wait_for, write_config

from collector.db.embedded import free_port
from exchange_sim import SimConfig, run_in_thread

# A directory no process may create files in (see the module docstring).
UNWRITABLE = Path("/sys")


def _start(tmp_path: Path, **sections: dict) -> subprocess.CompletedProcess[str]:
    base = {"logging": {"filename": str(tmp_path / "logs" / "supervisor.log")},
            "writer": {"spool_dir": str(tmp_path / "spool")},
            "monitoring": {"health_check_port": free_port()},
            "exchange": {"rest_url": f"http://127.0.0.1:{free_port()}", "ws_url": "ws://127.0.0.1:1"}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    cfg = write_config(tmp_path / "main.yaml", **base)
    return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--workers", "1", "--config", str(cfg)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_health_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line(_start(tmp_path, monitoring={"health_check_port": port}))
    assert line == (f"error: monitoring.health_check_port: port {port} on 127.0.0.1 is in use by another program: "
                    "stop that program or choose another port")


def test_unwritable_log_directory(tmp_path: Path) -> None:
    line = _one_line(_start(tmp_path, logging={"filename": str(UNWRITABLE / "supervisor.log")}))
    assert line.startswith(f"error: logging.filename: cannot write in {UNWRITABLE}: ")


def test_unwritable_spool_directory(tmp_path: Path) -> None:
    line = _one_line(_start(tmp_path, writer={"spool_dir": str(UNWRITABLE / "collector-spool")}))
    assert line.startswith(f"error: writer.spool_dir: cannot write in {UNWRITABLE / 'collector-spool'}: ")


def test_unwritable_embedded_database_directory(tmp_path: Path) -> None:
    sim = run_in_thread(SimConfig(port=0, symbols=4, rate=10, seed=1))
    try:
        r = _start(tmp_path, database={"embedded_dir": str(UNWRITABLE / "collector-pg")},
                   exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url})
    finally:
        sim.stop()
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    named = [ln for ln in (r.stdout + r.stderr).splitlines() if "database.embedded_dir" in ln]
    assert len(named) == 1 and (f"error: database.embedded_dir: cannot start the embedded PostgreSQL in "
                                f"{UNWRITABLE / 'collector-pg'}: ") in named[0], r.stdout + r.stderr


def test_unreachable_exchange(tmp_path: Path) -> None:
    closed = free_port()  # bound and released: nothing listens there
    line = _one_line(_start(tmp_path, exchange={"rest_url": f"http://127.0.0.1:{closed}"}))
    assert line == (f"error: exchange.rest_url: cannot reach http://127.0.0.1:{closed}/fapi/v1/ping: "
                    "[Errno 111] Connection refused")


def test_binance_not_probed_when_not_collected(tmp_path: Path) -> None:
    # exchanges [okx, bybit]: Binance's REST is nobody's business, so its (unreachable) endpoint stops nothing
    from collector.config import config_from_dict
    from collector.runtime.startup import check_machine

    closed = free_port()
    cfg = config_from_dict({"collection": {"exchanges": ["okx", "bybit"]},
                            "exchange": {"rest_url": f"http://127.0.0.1:{closed}", "ws_url": "ws://127.0.0.1:1"},
                            "logging": {"filename": str(tmp_path / "logs" / "supervisor.log")},
                            "writer": {"spool_dir": str(tmp_path / "spool")},
                            "monitoring": {"health_check_port": free_port()}})
    check_machine(cfg, simulate=False)  # raised StartupError "cannot reach .../fapi/v1/ping" before


def _database(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + "/" + name


def _drop(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.timeout(120)
def test_timescaledb_mode_on_a_server_that_has_not_preloaded_it(ts_not_preloaded_url: str, tmp_path: Path) -> None:
    sim = run_in_thread(SimConfig(port=0, symbols=4, rate=10, seed=1))
    try:
        r = _start(tmp_path, database={"url": _database(ts_not_preloaded_url, "trap_mode"), "mode": "timescaledb"},
                   exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url})
    finally:
        sim.stop()
        _drop(ts_not_preloaded_url, "trap_mode")
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    named = [ln for ln in (r.stdout + r.stderr).splitlines() if "database.mode" in ln]
    assert len(named) == 1, r.stdout + r.stderr
    assert "ERROR" in named[0] and named[0].endswith(
        "error: database.mode is timescaledb, but TimescaleDB 2.17.2 is installed but not preloaded: add "
        "timescaledb to shared_preload_libraries in postgresql.conf and restart PostgreSQL (or set "
        "database.mode: auto to use plain PostgreSQL)")
    assert not (tmp_path / "logs" / "writer.log").exists()  # refused before anything was started


@pytest.mark.timeout(240)
def test_auto_mode_on_a_server_that_has_not_preloaded_it(ts_not_preloaded_url: str, tmp_path: Path) -> None:
    """`make run`'s situation on such a machine: rows are stored in plain PostgreSQL, one warning says how
    to get TimescaleDB, and the missing database is created (the role is a superuser)."""
    sim = run_in_thread(SimConfig(port=0, symbols=6, rate=40, speed=20, seed=4))
    port = free_port()
    name = "trap_auto"
    sup = None
    try:
        cfg = write_config(tmp_path / "main.yaml", database={"url": _database(ts_not_preloaded_url, name)},
                           exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                           logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
                           writer={"spool_dir": str(tmp_path / "spool")}, monitoring={"health_check_port": port})
        sup = SupervisorProcess("--workers", "1", "--config", str(cfg), cwd=tmp_path)

        def count(table: str) -> int:
            try:
                with psycopg.connect(_database(ts_not_preloaded_url, name), connect_timeout=5) as conn:
                    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except psycopg.Error:
                return 0

        wait_for(lambda: all(count(t) > 0 for t in ("trades", "funding", "candles_1m")), 150,
                 "trades, funding and 1m candles committed")
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/health", timeout=5)[0] == 200, 60, "/health 200")
        with psycopg.connect(_database(ts_not_preloaded_url, name)) as conn:
            assert conn.execute("SELECT DISTINCT mode FROM schema_version").fetchall() == [("postgres",)]
            assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == (0,)
        code, out = sup.stop()
        assert code == 0, out[-3000:]
    finally:
        if sup is not None:
            sup.stop()
        sim.stop()
        _drop(ts_not_preloaded_url, name)
    warnings = [ln for p in sorted((tmp_path / "logs").glob("*.log")) for ln in p.read_text().splitlines()
                if " WARNING " in ln and "timescaledb" in ln.lower()]
    assert len(warnings) == 1, warnings
    assert ("TimescaleDB 2.17.2 is installed but not preloaded: using plain PostgreSQL partitions. To use "
            "TimescaleDB, add timescaledb to shared_preload_libraries in postgresql.conf and restart PostgreSQL"
            in warnings[0])
    assert "Traceback" not in out


@pytest.mark.timeout(240)
def test_missing_database_the_role_may_not_create(pg_server_url: str, tmp_path: Path) -> None:
    """The server's own words and the fix reach the console, writer.log, /health and /stats; once an
    administrator creates the database the collector carries on without a restart."""
    import uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    role = f"collector_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")  # no CREATEDB
    params = conninfo_to_dict(pg_server_url)
    params.update(user=role, dbname=role)
    sim = run_in_thread(SimConfig(port=0, symbols=4, rate=20, speed=10, seed=6))
    port = free_port()
    sup = None
    try:
        cfg = write_config(tmp_path / "main.yaml", database={"url": make_conninfo(**params)},
                           exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                           logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
                           writer={"spool_dir": str(tmp_path / "spool")}, monitoring={"health_check_port": port})
        sup = SupervisorProcess("--workers", "1", "--config", str(cfg), cwd=tmp_path)
        server_says = f'FATAL: database "{role}" does not exist'
        remedy = f'have an administrator run CREATE DATABASE "{role}" OWNER "{role}", or ALTER ROLE "{role}" CREATEDB'

        def writer_reason() -> str | None:
            try:
                status, _, body = http_get(f"http://127.0.0.1:{port}/health", timeout=5)
            except OSError:
                return None
            return next((r for r in body["reasons"] if r.startswith("writer: no database for")), None)

        reason = wait_for(writer_reason, 60, "/health to give the writer's reason")
        assert server_says in reason and remedy in reason
        status, _, stats = http_get(f"http://127.0.0.1:{port}/stats")
        assert server_says in stats["writer"]["last_error"] and remedy in stats["writer"]["last_error"]
        logs = tmp_path / "logs"
        assert server_says in (logs / "writer.log").read_text()
        setup_lines = [ln for ln in (logs / "supervisor.log").read_text().splitlines() if server_says in ln]
        assert len(setup_lines) == 1 and " ERROR " in setup_lines[0] and remedy in setup_lines[0]

        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{role}" OWNER {role}')

        def rows() -> int:
            try:
                with psycopg.connect(make_conninfo(**params), connect_timeout=5) as conn:
                    return conn.execute("SELECT count(*) FROM trades").fetchone()[0]
            except psycopg.Error:
                return 0

        wait_for(rows, 90, "trades committed once the database exists")
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/health", timeout=5)[0] == 200, 90, "/health 200")
        code, out = sup.stop()
        assert code == 0, out[-3000:]
    finally:
        if sup is not None:
            sup.stop()
        sim.stop()
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{role}" WITH (FORCE)')
            admin.execute(f"DROP ROLE IF EXISTS {role}")
