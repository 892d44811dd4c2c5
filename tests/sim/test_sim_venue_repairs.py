"""`supervisor.py` with collection.exchanges [okx, bybit] against both simulators: every connection is stalled
across a sim minute's close and then dropped, so each symbol misses that minute's closed candle (a hole the next closed
candle shows) and the trades meanwhile. The workers repair the holes over each venue's REST history: every
closed 1m candle ends up stored, equal value by value to what the simulator's stream sent (OKX: volume =
volCcy in base units; both: NULL trade count and taker volumes, as live), every candle gap row `filled`;
OKX's fill-id gaps are fetched from history-trades (every fill id once, `filled`); Bybit's trades have no
ordered id, so none is recorded as a gap."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from helpers import SupervisorProcess, http_get, miss_a_minute_close, wait_for, write_config

from collector.db.embedded import free_port
from collector.feed.venue_universe import fetch_venue_universe
from exchange_sim import SimConfig, launch_subprocess

# The workers read unfinished repairs back from `gaps` this often (exchange.gap_rescan_s).
RESCAN_S = 2
# Every REST answer takes this long while a test wants repairs still pending when the collector stops.
SLOW_REST_S = 8
CANDLE_SQL = """SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume, quote_volume,
                       trades, taker_buy_volume, taker_buy_quote_volume
                FROM candles_1m WHERE venue = %s"""


def _db(db_url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, params or None).fetchall()


def _truth(rest_url: str, klines: bool = False) -> dict:
    return http_get(f"{rest_url}/_sim/truth?klines={int(klines)}")[2]  # type: ignore[return-value]


def _truth_candles(venue: str, truth: dict) -> dict[tuple[str, int], tuple]:
    """(symbol, open ms) -> the row the collector must store for that closed candle, from what was streamed."""
    out: dict[tuple[str, int], tuple] = {}
    for k in truth["klines"]:
        if venue == "okx":
            ts, o, h, low, c, _contracts, vol_ccy, vol_quote, _ = k["candle"]
            out[(k["instId"], int(ts))] = (*map(Decimal, (o, h, low, c, vol_ccy, vol_quote)), None, None, None)
        else:
            out[(k["symbol"], int(k["start"]))] = (*map(Decimal, (k["open"], k["high"], k["low"], k["close"],
                                                                  k["volume"], k["turnover"])), None, None, None)
    return out


def _stored(db_url: str, venue: str) -> dict[tuple[str, int], tuple]:
    return {(r[0], r[1]): tuple(r[2:]) for r in _db(db_url, CANDLE_SQL, venue)}


def _expected(want: dict[tuple[str, int], tuple], have: dict[tuple[str, int], tuple]) -> set[tuple[str, int]]:
    """The closed candles from each symbol's first stored one on (before it, the worker had not subscribed)."""
    first: dict[str, int] = {}
    for sym, t in have:
        first[sym] = min(t, first.get(sym, t))
    return {(sym, t) for sym, t in want if sym in first and t >= first[sym]}


def _gaps(db_url: str, venue: str, kind: str) -> list[tuple]:
    return _db(db_url, "SELECT symbol, from_id, to_id, state, reason FROM gaps WHERE venue = %s AND kind = %s",
               venue, kind)


@contextmanager
def _venues(db_url: str, tmp_path: Path, seed: int) -> Iterator[tuple[dict, Path]]:
    """The OKX and Bybit simulators (4 symbols each) and a config collecting both on 2 workers; every
    process stopped at the end."""
    okx = launch_subprocess(SimConfig(venue="okx", port=0, symbols=4, rate=30, speed=20, seed=seed,
                                      truth_trades=True))
    bybit = launch_subprocess(SimConfig(venue="bybit", port=0, symbols=4, rate=30, speed=20, seed=seed + 1,
                                        truth_trades=True))
    # not collected: the supervisor checks Binance's endpoint at start whatever collection.exchanges says
    binance = launch_subprocess(SimConfig(port=0, symbols=2, rate=1, speed=20, seed=seed + 2))
    try:
        cfg = write_config(
            tmp_path / "main.yaml",
            database={"url": db_url},
            collection={"exchanges": ["okx", "bybit"]},
            exchange={"rest_url": binance.rest_url, "ws_url": binance.ws_url, "gap_rescan_s": RESCAN_S,
                      "okx": {"rest_url": okx.rest_url, "ws_url": okx.ws_url},
                      "bybit": {"rest_url": bybit.rest_url, "ws_url": bybit.ws_url}},
            logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
            writer={"spool_dir": str(tmp_path / "spool")},
            monitoring={"health_check_port": free_port(), "stats_interval": 5},
            filters={"trades": {"keep_all": True}},
        )
        yield {"okx": okx, "bybit": bybit}, cfg
    finally:
        okx.stop()
        bybit.stop()
        binance.stop()


def _wait_for_candles_and_drop(db_url: str, sims: dict) -> None:
    """Once every symbol has a closed candle stored (the next closed one can show a hole), make every
    connection of both simulators miss a minute's close."""
    def closed_candles(venue: str) -> int:
        if not _db(db_url, "SELECT to_regclass('candles_1m')")[0][0]:
            return 0
        return _db(db_url, "SELECT count(DISTINCT symbol) FROM candles_1m WHERE venue = %s", venue)[0][0]
    for venue in sims:
        wait_for(lambda v=venue: closed_candles(v) == 4, 120, f"a closed {venue} candle of every symbol")
    for sim in sims.values():
        miss_a_minute_close(sim.rest_url)


def _assert_candles_match_truth(db_url: str, venue: str, truth: dict) -> None:
    """Every closed candle from each symbol's first stored one on is stored and equal to the truth, the
    recorded holes among them."""
    want = _truth_candles(venue, truth)
    wait_for(lambda: _expected(want, _stored(db_url, venue)) <= set(_stored(db_url, venue)), 60,
             f"every closed {venue} candle stored")
    have = _stored(db_url, venue)
    expected = _expected(want, have)
    assert set(have) <= set(want), f"{venue}: candles stored that the simulator never closed"
    assert {k: have[k] for k in expected} == {k: want[k] for k in expected}
    holes = {(sym, t) for sym, lo, hi, _, _ in _gaps(db_url, venue, "candles_1m") for t in range(lo, hi + 1, 60_000)}
    assert holes and holes <= expected  # the repaired minutes are among those compared


@pytest.mark.timeout(300)
def test_okx_and_bybit_holes_are_repaired_over_rest(db_url: str, tmp_path: Path) -> None:
    sup = None
    with _venues(db_url, tmp_path, seed=5) as (sims, cfg):
        okx = sims["okx"]
        try:
            sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)
            _wait_for_candles_and_drop(db_url, sims)
            for venue in sims:
                wait_for(lambda v=venue: len(_gaps(db_url, v, "candles_1m")) >= 4, 60, f"{venue} candle holes recorded")
                wait_for(lambda v=venue: {g[3] for g in _gaps(db_url, v, "candles_1m")} == {"filled"}, 60,
                         f"{venue} candle holes filled")
            wait_for(lambda: _gaps(db_url, "okx", "trades")
                     and {g[3] for g in _gaps(db_url, "okx", "trades")} == {"filled"}, 60,
                     "OKX trade gaps recorded and filled")
            for sim in sims.values():
                http_get(sim.rest_url + "/_sim/pause")
            truths = {venue: _truth(sim.rest_url, klines=True) for venue, sim in sims.items()}
            for venue in sims:
                _assert_candles_match_truth(db_url, venue, truths[venue])
            ct = {s.name: Decimal(s.contract.value)
                  for s in fetch_venue_universe("okx", okx.rest_url, lambda url: http_get(url)[2])}
            sent = {(r["instId"], int(r["tradeId"])): r for r in truths["okx"]["trades"]}
            wait_for(lambda: _db(db_url, "SELECT count(*) FROM trades WHERE venue = 'okx'")[0][0] >= len(sent), 60,
                     "every OKX trade stored")
            code, out = sup.stop()
            sup = None
            assert code == 0, out[-2000:]
        finally:
            if sup is not None:
                sup.stop()
    # OKX: every fill id between each symbol's first and last stored once: a streamed row covers its push's
    # fills first_trade_id..trade_id (`count` of them), a repaired row one fill (history-trades serves fills);
    # each streamed one equal to what was sent, amounts in base units (sz x ctVal)
    rows = _db(db_url, "SELECT symbol, trade_id, price, amount, side, first_trade_id, last_trade_id FROM trades "
                       "WHERE venue = 'okx'")
    stored = {(s, i): (p, a, side) for s, i, p, a, side, _, _ in rows}
    assert len(stored) == len(rows) and all(i == last for _, i, *_, last in rows)
    for sym in {s for s, _ in stored}:
        fills = sorted(f for s, _, _, _, _, first, last in rows if s == sym for f in range(first, last + 1))
        assert fills == list(range(fills[0], fills[-1] + 1)), f"{sym}: fill ids missing or twice"
    for (sym, tid), r in sent.items():
        assert stored[(sym, tid)][:2] == (Decimal(r["px"]), Decimal(r["sz"]) * ct[sym])
    covered = {(s, i) for s, _, _, _, _, first, last in rows for i in range(first, last + 1)}
    repaired = [(s, t) for s, lo, hi, _, _ in _gaps(db_url, "okx", "trades") for t in range(lo, hi + 1)]
    assert repaired and all(k in covered for k in repaired)
    # Bybit: its trades carry no ordered id (collector.pipeline.router.TRADE_ID_RULES): no trade gap is made up
    assert _gaps(db_url, "bybit", "trades") == []


@pytest.mark.timeout(300)
def test_venue_repairs_left_by_a_stop_are_taken_over_by_the_next_start(db_url: str, tmp_path: Path) -> None:
    """SIGTERM while both venues' candle holes (and OKX's trade gaps) wait for slow REST: they stay detected
    in `gaps`; the next start reads them back (gaps_repo.open_gaps for its venue) and fills them, equal to
    the truth."""
    sup = None
    with _venues(db_url, tmp_path, seed=15) as (sims, cfg):
        try:
            sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)
            # slow REST from when the workers run: the supervisor's start-up probe of each venue has passed
            wait_for(lambda: len(list((tmp_path / "logs").glob("worker-*.log"))) == 2, 60, "the workers started")
            for sim in sims.values():
                http_get(f"{sim.rest_url}/_sim/fault/rest?fraction=1&delay={SLOW_REST_S}")
            _wait_for_candles_and_drop(db_url, sims)

            def pending(venue: str, kind: str) -> int:
                return len([g for g in _gaps(db_url, venue, kind) if g[3] in ("detected", "filling")])
            for venue in sims:
                wait_for(lambda v=venue: pending(v, "candles_1m") >= 4, 60, f"{venue} candle holes recorded")
            for sim in sims.values():
                http_get(sim.rest_url + "/_sim/pause")  # the truth is final from here on, across the restart
            truths = {venue: _truth(sim.rest_url, klines=True) for venue, sim in sims.items()}
            code, out = sup.stop()
            sup = None
            assert code == 0, out[-2000:]
            left = {venue: pending(venue, "candles_1m") for venue in sims}
            assert min(left.values()) >= 2, left  # a slow request may have finished before the stop
            assert pending("okx", "trades") >= 1
            for sim in sims.values():
                http_get(sim.rest_url + "/_sim/fault/rest")
            sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)
            for venue in sims:
                wait_for(lambda v=venue: pending(v, "candles_1m") == 0 and pending(v, "trades") == 0, 60,
                         f"the next start to finish {venue}'s repairs")
                assert {g[3] for g in _gaps(db_url, venue, "candles_1m")} == {"filled"}
                _assert_candles_match_truth(db_url, venue, truths[venue])
            assert {g[3] for g in _gaps(db_url, "okx", "trades")} == {"filled"}
            code, out = sup.stop()
            sup = None
            assert code == 0, out[-2000:]
        finally:
            if sup is not None:
                sup.stop()
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("worker-*.log"))
    assert "unfinished repairs from the gaps table" in log
