"""The `collector` command as a user runs it (`collector run|check|sim|bench`, also `python -m collector`):
help for every command, a usage mistake in one line with exit code 2, and `check`'s readable report with
exit codes 0 / 1 / 2."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT
from psycopg.conninfo import conninfo_to_dict

from collector.cli import BENCH_SCRIPTS
from collector.config import Config
from collector.db.partitions import ensure_partitions, ensure_partitions_for
from collector.db.schema import ensure_schema

# The console script pip installed for [project.scripts] (make venv / pip install -e . puts it here).
COLLECTOR = Path(sysconfig.get_path("scripts")) / "collector"


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def _collector(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(COLLECTOR), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def test_the_console_script_is_declared_and_installed() -> None:
    (script,) = entry_points(group="console_scripts", name="collector")
    assert script.value == "collector.cli:main"
    assert os.access(COLLECTOR, os.X_OK), f"{COLLECTOR} is missing: reinstall (make venv)"


@pytest.mark.parametrize(("command", "shows"), [
    ([], "{run,check,sim,bench,api}"), (["run"], "--sim-seed"), (["check"], "--embedded"),
    (["sim"], "--weight-limit"), (["bench"], "one of: throughput")])
def test_every_command_has_help(command: list[str], shows: str) -> None:
    r = _collector(*command, "--help")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith(" ".join(["usage: collector", *command])) and shows in r.stdout, r.stdout


def _options(help_text: str) -> list[str]:
    return sorted(set(re.findall(r"--[a-z][a-z-]*", help_text)))


def test_collector_run_and_supervisor_py_take_the_same_options() -> None:
    sup = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--help"], capture_output=True, text=True,
                         timeout=120, check=False)
    run = _collector("run", "--help")
    assert sup.returncode == 0 and run.returncode == 0, sup.stderr + run.stderr
    assert _options(sup.stdout) == _options(run.stdout)
    assert "--workers" in _options(sup.stdout) and "--sim-rate" in _options(sup.stdout)


@pytest.mark.parametrize(("args", "names"), [
    (["bogus"], "invalid choice: 'bogus'"),
    ([], "required: {run,check,sim,bench,api}"),
    (["run", "--workers", "0"], "collector run: error: --workers must be at least 1"),
    (["run", "--workers", "many"], "argument --workers: invalid int value: 'many'"),
    (["check", "--nope"], "unrecognized arguments: --nope"),
    (["sim", "--port", "x"], "collector sim: error: argument --port: invalid int value: 'x'"),
    (["bench", "nope"], "argument NAME: invalid choice: 'nope'"),
    (["bench"], "required: NAME")])
def test_bad_usage_is_one_line_and_exit_2(args: list[str], names: str) -> None:
    r = _collector(*args)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and names in r.stderr, r.stderr


def test_supervisor_py_bad_usage_is_one_line_too() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--workers", "0"], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "supervisor.py: error: --workers must be at least 1 (--help for usage)"], r.stderr


def test_python_m_collector_is_the_same_command() -> None:
    r = subprocess.run([sys.executable, "-m", "collector", "bench", "nope"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 2 and r.stderr.startswith("python -m collector bench: error: argument NAME"), r.stderr


def test_bench_names_are_the_scripts_in_bench() -> None:
    scripts = sorted(p.stem.replace("_", "-") for p in (ROOT / "bench").glob("*.py")
                     if 'if __name__ == "__main__":' in p.read_text())
    assert sorted(BENCH_SCRIPTS) == scripts


def test_bench_runs_the_script_with_the_rest_of_the_arguments() -> None:
    r = _collector("bench", "writer", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: writer.py") and "--rows" in r.stdout, r.stderr
    r = _collector("bench", "writer", "--rows", "many")  # the script's own parser judged this, not ours
    assert r.returncode == 2 and "writer.py: error: argument --rows: invalid int value: 'many'" in r.stderr


def test_bench_without_a_checkout_is_one_line(tmp_path: Path) -> None:
    """As installed from a wheel: the package without the repository's bench/ beside it."""
    shutil.copytree(ROOT / "collector", tmp_path / "collector", ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "collector", "bench", "throughput", "--quick"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, check=False,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stdout + r.stderr
    assert f"there is no {tmp_path / 'bench' / 'throughput.py'}" in r.stderr, r.stderr


def test_sim_serves_until_interrupted() -> None:
    proc = subprocess.Popen([str(COLLECTOR), "sim", "--port", "0", "--symbols", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while not line and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break  # EOF: it exited
        assert re.fullmatch(r"ready port=\d+ rest=http://127\.0\.0\.1:\d+ ws=ws://127\.0\.0\.1:\d+\n", line), (
            line, proc.poll())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _env() -> dict[str, str]:
    """Run from another directory: the package must still import (it is installed editable)."""
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_empty_database_is_a_clear_error_naming_it(db_url: str) -> None:
    r = _check("--dsn", db_url)
    dbname = conninfo_to_dict(db_url)["dbname"]
    assert r.returncode == 2
    assert f'no collector tables in database "{dbname}" at ' in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_no_database_configured_never_starts_a_server(tmp_path: Path) -> None:
    """The default config has no database: check says so instead of creating ./data/postgres."""
    cfg = tmp_path / "main.yaml"
    cfg.write_text(f"database:\n  embedded_dir: {tmp_path / 'pg'}\n")
    r = subprocess.run([sys.executable, "-m", "collector", "check", "--config", str(cfg)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=_env(), check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "configures no database" in r.stderr and "--embedded" in r.stderr and "--dsn" in r.stderr
    # told --embedded, it still refuses to create a cluster where the collector never ran
    r = subprocess.run([sys.executable, "-m", "collector", "check", "--config", str(cfg), "--embedded"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env(), check=False)
    assert r.returncode == 2 and f"no embedded database in {tmp_path / 'pg'}" in r.stderr, r.stderr
    assert not (tmp_path / "pg").exists() and not (tmp_path / "data").exists()


def test_bad_since_is_one_line(db_url: str) -> None:
    r = _check("--dsn", db_url, "--since", "yesterday-ish")
    assert r.returncode == 2 and r.stderr.startswith("error: --since: expected a time") and "Traceback" not in r.stderr


def test_unreachable_database_is_a_clear_error() -> None:
    r = _check("--dsn", "postgresql://collector:s3cret@127.0.0.1:1/none?connect_timeout=2")
    assert r.returncode == 2 and "cannot connect to the database" in r.stderr
    assert "s3cret" not in r.stderr + r.stdout


def test_report_on_collected_data(db_url: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", Config().retention.periods(), now=now)
        for i in range(3):
            conn.execute("INSERT INTO trades (time, venue, symbol, trade_id, price, amount, usd_value, side, save_reason,"
                         " first_trade_id, last_trade_id) VALUES (%s, 'binance', 'BTCUSDT', %s, 100, 1, 100, 'buy', %s, 1, 1)",
                         (now - timedelta(minutes=i), i, ["large_trade", "price_change", "time_interval"][i]))
    r = _check("--dsn", db_url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "large_trade" in r.stdout and "price_change" in r.stdout
    assert "Traceback" not in r.stderr


def _demo(conn: psycopg.Connection, start: datetime, minutes: int) -> None:
    """A clean demo of two symbols over `minutes` closed minutes from `start`: funding and 1m candles."""
    ensure_schema(conn, "postgres", Config().retention.periods(), now=start)
    ensure_partitions(conn, datetime.now(UTC))
    for s in ("BTCUSDT", "ETHUSDT"):
        for m in range(minutes):
            t = start + timedelta(minutes=m)
            conn.execute("INSERT INTO funding (time, venue, symbol, mark_price) VALUES (%s, 'binance', %s, 1)", (t + timedelta(seconds=3), s))
            conn.execute("INSERT INTO candles_1m VALUES (%s, 'binance', %s, %s, 1, 1, 1, 1, 1, 1, 1, 1, 1)",
                         (t, s, t + timedelta(seconds=59.999)))


def _double_funding(conn: psycopg.Connection, start: datetime) -> None:
    conn.execute("INSERT INTO funding (time, venue, symbol, mark_price) VALUES (%s, 'binance', 'ETHUSDT', 1)",
                 (start + timedelta(minutes=2, seconds=30),))


def _drop_candle(conn: psycopg.Connection, start: datetime) -> None:
    conn.execute("DELETE FROM candles_1m WHERE symbol = 'BTCUSDT' AND time = %s", (start + timedelta(minutes=3),))


def _expired_trade(conn: psycopg.Connection, start: datetime) -> None:
    old = start - timedelta(days=30)  # trades keep 7 days
    ensure_partitions_for(conn, "trades", old, old)
    conn.execute("INSERT INTO trades VALUES (%s, 'binance', 'BTCUSDT', 1, 1, 1, 1, 'buy', 'keep_all', 1, 1)", (old,))


def test_collector_check_on_clean_data_exits_0(db_url: str) -> None:
    """The console script against the test database: every check passes on a clean demo."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=15)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _demo(conn, start, 10)
    r = _collector("check", "--dsn", db_url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [line for line in r.stdout.splitlines() if line.startswith("[FAIL]")], r.stdout
    assert "[ok] candles_1m: 2/2 symbols complete" in r.stdout


@pytest.mark.parametrize(("fault", "failed"), [
    (_double_funding, "funding_cap"), (_drop_candle, "candles_1m"), (_expired_trade, "retention")])
def test_each_failure_kind_exits_1(db_url: str, fault: Callable[[psycopg.Connection, datetime], None],
                                   failed: str) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=15)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _demo(conn, start, 10)
        fault(conn, start)
    r = _check("--dsn", db_url)
    fails = [line for line in r.stdout.splitlines() if line.startswith("[FAIL]")]
    assert r.returncode == 1 and [f.split(":")[0] for f in fails] == [f"[FAIL] {failed}"], r.stdout + r.stderr


def test_embedded_attaches_to_a_running_server_or_starts_and_stops_its_own() -> None:
    """`check --embedded` after `make run`: the collector's server may still be up (use it, leave it up) or
    stopped (start it for the check, stop it again)."""
    import shutil
    import tempfile

    from collector.db.embedded import EmbeddedPostgres

    base = Path(tempfile.mkdtemp(prefix="collector-check-"))  # tmp_path is private to root; postgres is not
    os.chmod(base, 0o755)
    server = EmbeddedPostgres(datadir=base / "pg", durable=False, database="collector")
    try:
        server.start()
        with psycopg.connect(server.url, autocommit=True) as conn:
            _demo(conn, datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=15), 10)
        cfg = base / "main.yaml"
        cfg.write_text(f"database:\n  embedded_dir: {base / 'pg'}\n")
        r = _check("--config", str(cfg), "--embedded")
        assert r.returncode == 0 and "[ok] candles_1m: 2/2" in r.stdout, r.stdout + r.stderr
        assert (base / "pg" / "postmaster.pid").exists()  # the collector's server was left running
        server.stop_server(mode="fast")
        assert not (base / "pg" / "postmaster.pid").exists()
        r = _check("--config", str(cfg), "--embedded")
        assert r.returncode == 0 and "[ok] candles_1m: 2/2" in r.stdout, r.stdout + r.stderr
        assert not (base / "pg" / "postmaster.pid").exists()  # the one check started is stopped again
    finally:
        server.stop_server(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
