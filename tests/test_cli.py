"""`python -m collector check` as a user runs it: a readable report, exit codes 0 / 1 / 2."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
from helpers import ROOT

from collector import storage
from collector.config import Config


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_empty_database_is_a_clear_error(db_url: str) -> None:
    r = _check("--dsn", db_url)
    assert r.returncode == 2
    assert "no collector tables in this database" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_database_is_a_clear_error() -> None:
    r = _check("--dsn", "postgresql://collector:s3cret@127.0.0.1:1/none?connect_timeout=2")
    assert r.returncode == 2 and "cannot connect to the database" in r.stderr
    assert "s3cret" not in r.stderr + r.stdout


def test_report_on_collected_data(db_url: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        storage.ensure_schema(conn, "postgres", Config().retention.periods(), now=now)
        for i in range(3):
            conn.execute("INSERT INTO trades (time, symbol, trade_id, price, amount, usd_value, side, save_reason,"
                         " first_trade_id, last_trade_id) VALUES (%s, 'BTCUSDT', %s, 100, 1, 100, 'buy', %s, 1, 1)",
                         (now - timedelta(minutes=i), i, ["large_trade", "price_change", "time_interval"][i]))
    r = _check("--dsn", db_url)
    assert r.returncode in (0, 1), r.stderr
    assert "large_trade" in r.stdout and "price_change" in r.stdout
    assert "Traceback" not in r.stderr
