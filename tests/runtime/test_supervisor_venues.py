"""`supervisor.py` with collection.exchanges [binance, okx] against two simulators: one venue per worker,
rows stored for both venues, each OKX trade stored once and equal to what the OKX simulator sent.

(Binance and OKX name their symbols differently, BTCUSDT and BTC-USDT-SWAP, so both fit the tables before
they gain a venue column.) Candles are not checked here: the encoder refuses the fields OKX does not
publish (taker-buy volumes "", trade count -1) until it stores them as NULL, which is the schema's side."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from helpers import SupervisorProcess, http_get, wait_for, write_config

from collector.db.embedded import free_port
from collector.feed.venue_universe import fetch_venue_universe
from exchange_sim import SimConfig, launch_subprocess

WORKERS = 3


def _db(db_url: str, sql: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql).fetchall()


def _counts(db_url: str, table: str) -> dict[bool, int]:
    """Rows of `table` by venue: True for OKX names (they contain '-'), False for Binance's."""
    rows = _db(db_url, f"SELECT position('-' in symbol) > 0, count(*) FROM {table} GROUP BY 1")  # noqa: S608
    return {okx: n for okx, n in rows}


@pytest.mark.timeout(300)
def test_binance_and_okx_in_one_collector(db_url: str, tmp_path: Path) -> None:
    binance = launch_subprocess(SimConfig(port=0, symbols=12, rate=40, speed=20, seed=3))
    okx = launch_subprocess(SimConfig(venue="okx", port=0, symbols=6, rate=40, speed=20, seed=4, truth_trades=True))
    sup = None
    try:
        port = free_port()
        cfg = write_config(
            tmp_path / "main.yaml",
            database={"url": db_url},
            collection={"exchanges": ["binance", "okx"]},
            exchange={"rest_url": binance.rest_url, "ws_url": binance.ws_url,
                      "okx": {"rest_url": okx.rest_url, "ws_url": okx.ws_url}},
            logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
            writer={"spool_dir": str(tmp_path / "spool")},
            monitoring={"health_check_port": port, "stats_interval": 5},
            filters={"trades": {"keep_all": True}, "open_interest": {"interval_s": 60}},
        )
        sup = SupervisorProcess("--workers", str(WORKERS), "--config", str(cfg), cwd=tmp_path)
        log = tmp_path / "logs" / "supervisor.log"
        wait_for(lambda: log.exists() and "binance: 12 symbols, 2 workers, okx: 6 symbols, 1 workers" in log.read_text(),
                 60, "the venues split across the workers")

        def both(table: str) -> bool:
            c = _counts(db_url, table) if _db(db_url, "SELECT to_regclass('trades')")[0][0] else {}
            return c.get(True, 0) > 0 and c.get(False, 0) > 0
        for table in ("trades", "funding", "open_interest", "liquidations"):
            wait_for(lambda t=table: both(t), 150, f"{table} rows of both venues")
        http_get(okx.rest_url + "/_sim/pause")
        truth = http_get(okx.rest_url + "/_sim/truth")[2]
        sent = {(r["instId"], int(r["tradeId"])): r for r in truth["trades"]}
        wait_for(lambda: _db(db_url, "SELECT count(*) FROM trades WHERE symbol LIKE '%-SWAP'")[0][0] >= len(sent),
                 60, "every OKX trade sent stored")
        code, out = sup.stop()
        sup = None
        assert code == 0, out[-2000:]
        ct = {s.name: Decimal(s.contract.value)
              for s in fetch_venue_universe("okx", okx.rest_url, lambda url: http_get(url)[2])}
    finally:
        if sup is not None:
            sup.stop()
        binance.stop()
        okx.stop()
    stored = _db(db_url, "SELECT symbol, trade_id, price, amount, side, (extract(epoch FROM time) * 1000)::bigint "
                         "FROM trades WHERE symbol LIKE '%-SWAP' ORDER BY symbol, trade_id")
    assert len(stored) == len(sent) > 50
    # pushed open interest (every 3 sim seconds) is stored once per symbol and 60 s window, as configured
    per_window = _db(db_url, "SELECT symbol, floor(extract(epoch FROM time) / 60), count(*) FROM open_interest "
                             "WHERE symbol LIKE '%-SWAP' GROUP BY 1, 2")
    assert per_window and max(n for _, _, n in per_window) == 1
    for sym, tid, price, amount, side, t in stored:
        r = sent[(sym, tid)]
        assert (price, amount, side, str(t)) == (Decimal(r["px"]), Decimal(r["sz"]) * ct[sym], r["side"], r["ts"])


@pytest.mark.timeout(240)
def test_simulate_starts_one_simulator_per_venue(db_url: str, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "main.yaml",
        database={"url": db_url},
        collection={"exchanges": ["okx", "binance"]},
        logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
        writer={"spool_dir": str(tmp_path / "spool")},
        monitoring={"health_check_port": free_port()},
        filters={"trades": {"keep_all": True}},
    )
    sup = SupervisorProcess("--workers", "2", "--config", str(cfg), "--simulate", "--sim-symbols", "5",
                            "--sim-rate", "40", "--sim-speed", "20", cwd=tmp_path)
    try:
        log = tmp_path / "logs" / "supervisor.log"
        wait_for(lambda: log.exists() and "okx simulator on http://127.0.0.1:" in log.read_text(), 60,
                 "the OKX simulator started")
        wait_for(lambda: "okx: 5 symbols, 1 workers, binance: 5 symbols, 1 workers" in log.read_text(), 60,
                 "one worker per venue")

        def both() -> bool:
            c = _counts(db_url, "trades") if _db(db_url, "SELECT to_regclass('trades')")[0][0] else {}
            return c.get(True, 0) > 0 and c.get(False, 0) > 0
        wait_for(both, 120, "trades of both venues")
    finally:
        code, out = sup.stop()
    assert code == 0, out[-2000:]
