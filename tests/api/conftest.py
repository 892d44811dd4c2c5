"""One database filled by the real collector on the simulator, and the read API serving it over real HTTP.

Session-scoped: filling takes a short collector run (tens of seconds), and every API test only reads.
The simulator's clock starts 30 minutes in the past, so everything it produces is history by the time the
API is asked (closed candle views compare with now()).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import uvicorn
from helpers import SupervisorProcess, http_get, wait_for, write_config
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.api.app import ApiSettings, create_app
from collector.db.tiers_repo import TierRow, store_tiers
from exchange_sim import SimConfig, launch_subprocess

SYMBOLS = 6
TIE_SYMBOL = "TIEUSDT"  # trades sharing milliseconds, so pages must split inside one millisecond
SUBMS_SYMBOL = "SUBMSUSDT"  # trades with microseconds (the collector stores whole ms; PostgreSQL allows µs)
# trades whose text holds the Arrow path's separator (collector.api.columnar.SEPARATOR), so pages that hold
# one are fetched again with lengths
SEP_SYMBOL = "SEPUSDT"


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def _create_db(server_url: str) -> str:
    name = f"api_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_url)
    params["dbname"] = name
    return make_conninfo(**params)


def _fill_with_collector(url: str, tmp: Path) -> None:
    start_ms = (int(time.time()) // 60 - 30) * 60_000
    sim = launch_subprocess(SimConfig(port=0, symbols=SYMBOLS, rate=60, speed=30, seed=11, start_ms=start_ms))
    sup = None
    try:
        http_get(sim.rest_url + "/_sim/pause")
        cfg = write_config(tmp / "main.yaml", database={"url": url},
                           exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                           filters={"open_interest": {"interval_s": 20}},
                           logging={"filename": str(tmp / "logs" / "supervisor.log")},
                           writer={"spool_dir": str(tmp / "spool")}, monitoring={"health_check_port": 0})
        sup = SupervisorProcess("--workers", "1", "--config", str(cfg), cwd=tmp)
        wait_for(lambda: any(not c["closed"] for c in http_get(sim.rest_url + "/_sim/truth")[2]["connections"]),
                 60, "the worker to connect")
        http_get(sim.rest_url + "/_sim/resume")

        def enough() -> bool:
            try:
                return (_count(url, "SELECT count(DISTINCT symbol) FROM candles_5m") >= SYMBOLS
                        and _count(url, "SELECT min(n) FROM (SELECT count(*) n FROM candles_1m GROUP BY symbol) c")
                        >= 8
                        and _count(url, "SELECT count(*) FROM open_interest") >= SYMBOLS
                        and _count(url, "SELECT count(*) FROM liquidations") >= 1
                        and _count(url, "SELECT count(*) FROM funding") >= SYMBOLS)
            except psycopg.errors.UndefinedTable:
                return False

        wait_for(enough, 120, "candles, open interest, liquidations and funding from every symbol", poll=1)
        http_get(sim.rest_url + "/_sim/pause")
        code, out = sup.stop()
        assert code == 0, out[-3000:]
    finally:
        if sup is not None:
            sup.stop()
        sim.stop()


def _add_tiers_and_ties(url: str) -> None:
    """Tiers as the supervisor stores them (it computes them only after tier_warmup, longer than this run),
    a symbol whose trades share milliseconds (five per millisecond), one with microseconds and one whose
    side text holds the Arrow path's separator in its 4th trade of 6."""
    with psycopg.connect(url) as conn:
        symbols = [r[0] for r in conn.execute("SELECT DISTINCT symbol FROM candles_1m ORDER BY 1")]
        store_tiers(conn, "binance", {s: TierRow(i % 4, 1000.0 + i, None if i == 1 else 500.5 + i, None if i == 0 else 0.25 * i)
                           for i, s in enumerate(symbols)}, datetime(2025, 1, 1, tzinfo=UTC))
        store_tiers(conn, "binance", {s: TierRow(3, 1.0, None, None) for s in symbols[:2]}, datetime(2024, 1, 1, tzinfo=UTC))
        row = conn.execute("SELECT min(time) FROM trades").fetchone()
        assert row is not None and row[0] is not None
        t0: datetime = row[0]
        conn.cursor().executemany(
            "INSERT INTO trades (time, venue, symbol, trade_id, price, amount, usd_value, side, save_reason, "
            "first_trade_id, last_trade_id) VALUES (%s, 'binance', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(t0 + timedelta(milliseconds=7 * (i // 5)), TIE_SYMBOL, 1000 + i, f"{100 + i}.5", "0.25", 25.0 + i,
              "buy" if i % 2 else "sell", "large_trade" if i % 3 == 0 else "time_interval", 10 * i,
              None if i == 4 else 10 * i + 1) for i in range(40)]
            + [(t0 + timedelta(microseconds=us), SUBMS_SYMBOL, i, "1.5", "1", 1.5, "buy", "time_interval", i, i)
               for i, us in enumerate((0, 200, 600, 999, 1000, 1400, 2000, 2600))]
            + [(t0 + timedelta(seconds=i), SEP_SYMBOL, i, "2.5", "1", 2.5, "b\x1fuy" if i == 3 else "sell€",
                "time_interval", i, i) for i in range(6)])
        conn.commit()


@pytest.fixture(scope="session")
def filled_db(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = _create_db(pg_server_url)
    try:
        _fill_with_collector(url, tmp_path_factory.mktemp("collector"))
        _add_tiers_and_ties(url)
        yield url
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{conninfo_to_dict(url)["dbname"]}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving create_app(settings) on 127.0.0.1 in a thread: real HTTP, real lifespan and pool."""

    def __init__(self, settings: ApiSettings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "the API server to start", poll=0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the API server did not stop"


@pytest.fixture(scope="session")
def api_url(filled_db: str) -> Iterator[str]:
    with ServerThread(ApiSettings(dsn=filled_db, max_rows=5000, default_rows=1000)) as srv:
        yield srv.url


@pytest.fixture(scope="session")
def api_schema(api_url: str) -> object:
    import schemathesis

    return schemathesis.openapi.from_url(f"{api_url}/api/v1/openapi.json")
