"""`supervisor.py` with collection.exchanges [binance, bybit] against two simulators that both list BTCUSDT
(and every other name Bybit has): each venue's rows, tiers and checkpoints are stored under its own venue,
a restart resumes every symbol of both venues from its own venue's checkpoint, and every Bybit trade the
Bybit simulator sent over both runs is stored once and equal, whatever Binance's BTCUSDT did meanwhile."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from helpers import SupervisorProcess, http_get, wait_for, write_config

from collector.db.embedded import free_port
from collector.feed.venues.bybit import trade_id_of
from collector.runtime.coordinator import fetch_venue_names
from exchange_sim import SimConfig, launch_subprocess

WORKERS = 3
TABLES = ("trades", "funding", "open_interest", "liquidations", "candles_1m")


def _db(db_url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, params or None).fetchall()


def _btc_venues(db_url: str, table: str) -> set[str]:
    """The venues with a BTCUSDT row in `table`."""
    if not _db(db_url, "SELECT to_regclass(%s)", table)[0][0]:
        return set()
    return {r[0] for r in _db(db_url, f"SELECT DISTINCT venue FROM {table} WHERE symbol = 'BTCUSDT'")}  # noqa: S608


def _per_venue(db_url: str, sql: str) -> dict[str, set]:
    out: dict[str, set] = {}
    for venue, *rest in _db(db_url, sql):
        out.setdefault(venue, set()).add(rest[0] if len(rest) == 1 else tuple(rest))
    return out


@pytest.mark.timeout(300)
def test_binance_and_bybit_share_btcusdt_in_one_collector(db_url: str, tmp_path: Path) -> None:
    binance = launch_subprocess(SimConfig(port=0, symbols=12, rate=40, speed=20, seed=3))
    bybit = launch_subprocess(SimConfig(venue="bybit", port=0, symbols=6, rate=40, speed=20, seed=4,
                                        truth_trades=True))
    sup = None
    try:
        names = {"binance": set(fetch_venue_names("binance", binance.rest_url)),
                 "bybit": set(fetch_venue_names("bybit", bybit.rest_url))}
        assert len(names["binance"]) == 12 and "BTCUSDT" in names["bybit"] and names["bybit"] <= names["binance"]
        cfg = write_config(
            tmp_path / "main.yaml",
            database={"url": db_url},
            collection={"exchanges": ["binance", "bybit"]},
            exchange={"rest_url": binance.rest_url, "ws_url": binance.ws_url,
                      "bybit": {"rest_url": bybit.rest_url, "ws_url": bybit.ws_url}},
            logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
            writer={"spool_dir": str(tmp_path / "spool")},
            monitoring={"health_check_port": free_port(), "stats_interval": 5},
            filters={"trades": {"keep_all": True, "tier_warmup": "15s"}, "open_interest": {"interval_s": 60}},
        )
        args = ("--workers", str(WORKERS), "--config", str(cfg))
        sup = SupervisorProcess(*args, cwd=tmp_path)
        log = tmp_path / "logs" / "supervisor.log"
        wait_for(lambda: log.exists() and "binance: 12 symbols, 2 workers, bybit: 6 symbols, 1 workers"
                 in log.read_text(), 60, "the venues split across the workers")
        for table in TABLES:
            wait_for(lambda t=table: _btc_venues(db_url, t) == {"binance", "bybit"}, 150,
                     f"{table} rows of both venues' BTCUSDT")
        tiers_sql = "SELECT venue, symbol FROM symbol_tiers"
        wait_for(lambda: _per_venue(db_url, tiers_sql) == names, 90,
                 "tiers stored for every symbol of each venue, under its venue")
        http_get(bybit.rest_url + "/_sim/pause")
        sent = _bybit_sent(db_url, bybit.rest_url)
        streams = _bybit_streams(bybit.rest_url)
        code, out = sup.stop()
        sup = None
        assert code == 0, out[-2000:]
        _check_first_run(db_url, names, sent)

        # a restart: both venues' checkpoints and tiers are loaded (18 symbols: none overwrites another), and
        # Bybit's workers do not take Binance's BTCUSDT checkpoint (its last id would be applied to Bybit's)
        sup = SupervisorProcess(*args, cwd=tmp_path)
        n = len(names["binance"]) + len(names["bybit"])
        wait_for(lambda: f"loaded the checkpoints of {n} symbols saved by the last run" in log.read_text(), 60,
                 "every symbol's checkpoint of both venues loaded")
        assert f"resumed the tiers of {n} symbols" in log.read_text()
        # the Bybit sim stays paused until the worker has subscribed again: no trade is missed, so none gaps
        wait_for(lambda: _bybit_streams(bybit.rest_url) == streams, 60, "the Bybit worker subscribed again")
        before = len(sent)
        http_get(bybit.rest_url + "/_sim/resume")
        wait_for(lambda: len(http_get(bybit.rest_url + "/_sim/truth?klines=0")[2]["trades"]) > before + 50, 60,
                 "Bybit trades after the restart")
        http_get(bybit.rest_url + "/_sim/pause")
        sent = _bybit_sent(db_url, bybit.rest_url)
        code, out = sup.stop()
        sup = None
        assert code == 0, out[-2000:]
    finally:
        if sup is not None:
            sup.stop()
        binance.stop()
        bybit.stop()
    _check_bybit_trades(db_url, sent)
    # no Bybit trade gap: its trade ids have no order to find one in, and Binance's checkpoint was not taken
    assert _db(db_url, "SELECT symbol, kind, from_id, to_id FROM gaps WHERE venue = 'bybit' "
                       "AND kind <> 'liquidations'") == []
    # the restart is a liquidation hole of each Bybit symbol that traded since (nobody received between the
    # runs; the collector cannot know the simulator was paused): at most one per symbol, Bybit's own
    holes = [r[0] for r in _db(db_url, "SELECT symbol FROM gaps WHERE venue = 'bybit' AND kind = 'liquidations'")]
    assert len(holes) == len(set(holes)) and set(holes) <= set(names["bybit"]), holes


def _bybit_sent(db_url: str, rest_url: str) -> dict[tuple[str, int], dict]:
    """Every trade the (paused) Bybit simulator sent, by (symbol, trade id from its UUID), once all are stored."""
    sent = {(r["s"], trade_id_of(r["i"])): r for r in http_get(rest_url + "/_sim/truth?klines=0")[2]["trades"]}
    wait_for(lambda: _db(db_url, "SELECT count(*) FROM trades WHERE venue = 'bybit'")[0][0] >= len(sent),
             60, "every Bybit trade sent stored")
    return sent


def _bybit_streams(rest_url: str) -> int:
    """Streams subscribed on the Bybit simulator's open connections."""
    conns = http_get(rest_url + "/_sim/truth?klines=0")[2]["connections"]
    return sum(c["streams"] for c in conns if not c["closed"])


def _check_first_run(db_url: str, names: dict[str, set[str]], sent: dict[tuple[str, int], dict]) -> None:
    assert {s for s, _ in sent} == names["bybit"]
    _check_bybit_trades(db_url, sent)
    # both BTCUSDT tiers are ranked within their own venue: each venue has its own tier 0
    top = _per_venue(db_url, "SELECT venue, symbol FROM symbol_tiers WHERE tier = 0")
    assert set(top) == {"binance", "bybit"}
    # checkpoints saved on stop: one per symbol of each venue; Binance's with its last aggTrade id, Bybit's
    # with none (its ids have no order: collector.pipeline.router.TRADE_ID_RULES)
    saved = _per_venue(db_url, "SELECT venue, symbol, last_trade_id FROM checkpoints")
    last = _per_venue(db_url, "SELECT venue, symbol, max(trade_id) FROM trades GROUP BY 1, 2")
    assert {v: {s for s, _ in rows} for v, rows in saved.items()} == names
    assert [tid for _, tid in saved["bybit"]] == [None] * len(names["bybit"])
    assert dict(saved["binance"])["BTCUSDT"] == dict(last["binance"])["BTCUSDT"]


def _check_bybit_trades(db_url: str, sent: dict[tuple[str, int], dict]) -> None:
    """Every Bybit trade sent is stored once, equal; no other row is stored as Bybit's."""
    stored = _db(db_url, "SELECT symbol, trade_id, price, amount, side, (extract(epoch FROM time) * 1000)::bigint "
                         "FROM trades WHERE venue = 'bybit'")
    assert len(stored) == len(sent) > 50  # stored once: no duplicate, and none of Binance's BTCUSDT here
    for sym, tid, price, amount, side, t in stored:
        r = sent[(sym, tid)]
        assert (price, amount, side, t) == (Decimal(r["p"]), Decimal(r["v"]), r["S"].lower(), r["T"]), (sym, tid)
