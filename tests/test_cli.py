"""`python -m collector check` as a user runs it: a readable report, exit codes 0 / 1 / 2."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT
from psycopg.conninfo import conninfo_to_dict

from collector.config import Config
from collector.db.partitions import ensure_partitions, ensure_partitions_for
from collector.db.schema import ensure_schema


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


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
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "configures no database" in r.stderr and "--embedded" in r.stderr and "--dsn" in r.stderr
    # told --embedded, it still refuses to create a cluster where the collector never ran
    r = subprocess.run([sys.executable, "-m", "collector", "check", "--config", str(cfg), "--embedded"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())
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
            conn.execute("INSERT INTO trades (time, symbol, trade_id, price, amount, usd_value, side, save_reason,"
                         " first_trade_id, last_trade_id) VALUES (%s, 'BTCUSDT', %s, 100, 1, 100, 'buy', %s, 1, 1)",
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
            conn.execute("INSERT INTO funding (time, symbol, mark_price) VALUES (%s, %s, 1)", (t + timedelta(seconds=3), s))
            conn.execute("INSERT INTO candles_1m VALUES (%s, %s, %s, 1, 1, 1, 1, 1, 1, 1, 1, 1)",
                         (t, s, t + timedelta(seconds=59.999)))


def _double_funding(conn: psycopg.Connection, start: datetime) -> None:
    conn.execute("INSERT INTO funding (time, symbol, mark_price) VALUES (%s, 'ETHUSDT', 1)",
                 (start + timedelta(minutes=2, seconds=30),))


def _drop_candle(conn: psycopg.Connection, start: datetime) -> None:
    conn.execute("DELETE FROM candles_1m WHERE symbol = 'BTCUSDT' AND time = %s", (start + timedelta(minutes=3),))


def _expired_trade(conn: psycopg.Connection, start: datetime) -> None:
    old = start - timedelta(days=30)  # trades keep 7 days
    ensure_partitions_for(conn, "trades", old, old)
    conn.execute("INSERT INTO trades VALUES (%s, 'BTCUSDT', 1, 1, 1, 1, 'buy', 'keep_all', 1, 1)", (old,))


@pytest.mark.parametrize(("fault", "failed"), [
    (None, None), (_double_funding, "funding_cap"), (_drop_candle, "candles_1m"), (_expired_trade, "retention")])
def test_each_failure_kind_exits_1(db_url: str, fault, failed: str | None) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=15)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _demo(conn, start, 10)
        if fault is not None:
            fault(conn, start)
    r = _check("--dsn", db_url)
    fails = [line for line in r.stdout.splitlines() if line.startswith("[FAIL]")]
    if failed is None:
        assert r.returncode == 0 and not fails, r.stdout + r.stderr
        assert "[ok] candles_1m: 2/2 symbols complete" in r.stdout
    else:
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
