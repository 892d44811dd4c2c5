"""`supervisor.py` with collection.exchanges [binance, okx] against two simulators: one venue per worker,
rows stored for both venues under their own venue, each OKX trade and closed 1m candle stored once and
equal to what the OKX simulator sent (candles without the trade count and taker-buy volumes OKX does not
publish: NULL)."""

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


def _counts(db_url: str, table: str) -> dict[str, int]:
    """Rows of `table` by venue."""
    return dict(_db(db_url, f"SELECT venue, count(*) FROM {table} GROUP BY 1"))  # noqa: S608


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
            return c.get("okx", 0) > 0 and c.get("binance", 0) > 0
        for table in ("trades", "funding", "open_interest", "liquidations", "candles_1m"):
            wait_for(lambda t=table: both(t), 150, f"{table} rows of both venues")
        http_get(okx.rest_url + "/_sim/pause")
        truth = http_get(okx.rest_url + "/_sim/truth")[2]
        sent = {(r["instId"], int(r["tradeId"])): r for r in truth["trades"]}
        closed = {(k["instId"], int(k["candle"][0])): k["candle"] for k in truth["klines"]}

        def okx_candles() -> dict[tuple[str, int], tuple]:
            return {(r[0], r[1]): r[2:] for r in _db(db_url, """
                SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume,
                       quote_volume, trades, taker_buy_volume, taker_buy_quote_volume
                FROM candles_1m WHERE venue = 'okx'""")}

        def all_candles_stored() -> bool:
            """Every closed kline from a symbol's first stored one on (before it, the worker had not
            subscribed yet); a symbol with none stored yet is waited for too."""
            have = set(okx_candles())
            first: dict[str, int] = {}
            for sym, t in have:
                first[sym] = min(t, first.get(sym, t))
            return {(sym, t) for sym, t in closed if sym not in first or t >= first[sym]} <= have
        wait_for(all_candles_stored, 60, "every closed OKX 1m kline stored")
        wait_for(lambda: _db(db_url, "SELECT count(*) FROM trades WHERE venue = 'okx'")[0][0] >= len(sent),
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
                         "FROM trades WHERE venue = 'okx' ORDER BY symbol, trade_id")
    assert len(stored) == len(sent) > 50
    # pushed open interest (every 3 sim seconds) is stored once per symbol and 60 s window, as configured
    per_window = _db(db_url, "SELECT symbol, floor(extract(epoch FROM time) / 60), count(*) FROM open_interest "
                             "WHERE venue = 'okx' GROUP BY 1, 2")
    assert per_window and max(n for _, _, n in per_window) == 1
    got = okx_candles()
    assert set(got) <= set(closed) and {sym for sym, _ in got} == {sym for sym, _ in sent}  # every symbol's
    for (sym, t), row in got.items():
        k = closed[(sym, t)]  # [ts, o, h, l, c, vol (contracts), volCcy (base), volCcyQuote, confirm]
        assert row == (Decimal(k[1]), Decimal(k[2]), Decimal(k[3]), Decimal(k[4]), Decimal(k[6]), Decimal(k[7]),
                       None, None, None), (sym, t)
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
            return c.get("okx", 0) > 0 and c.get("binance", 0) > 0
        wait_for(both, 120, "trades of both venues")
    finally:
        code, out = sup.stop()
    assert code == 0, out[-2000:]
