"""Fault scenarios: aggTrade gaps and a mass reconnect, the real collector against the simulator.

`python supervisor.py` collects from an in-process simulator (so the test can see every REST request's
weight as the simulator charges it) into a private PostgreSQL; the database is compared with the
simulator's ground truth. Also the harness the other fault files import (`Collector`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from helpers import SupervisorProcess, http_get, miss_a_minute_close, wait_for, write_config

from collector.db.embedded import free_port
from exchange_sim import SimConfig, run_in_thread
from exchange_sim.ratelimit import weight_of

pytestmark = pytest.mark.faults

# The REST users that spend the workers' weight budget (open interest, trade and candle backfill). The
# few exchangeInfo requests at start-up (weight 1 each, per process) are not budgeted.
BUDGETED = ("/fapi/v1/openInterest", "/fapi/v1/aggTrades", "/fapi/v1/klines")


class Collector:
    """Simulator (in this process) + `supervisor.py` (a child) + the test's database, torn down together."""

    def __init__(self, tmp_path: Path, db_url: str, sim_cfg: SimConfig, workers: int = 2, **config: dict) -> None:
        self.db_url = db_url
        self._stopped: tuple[int, str] | None = None
        self.sim = run_in_thread(sim_cfg)
        self.weights: list[tuple[float, str, int, int]] = []  # (wall time, path, weight, status) per request
        self._watch_weights()
        self.health = f"http://127.0.0.1:{free_port()}"
        sections = {
            "database": {"url": db_url},
            "exchange": {"rest_url": self.sim.rest_url, "ws_url": self.sim.ws_url},
            "logging": {"filename": str(tmp_path / "logs" / "supervisor.log")},
            "writer": {"spool_dir": str(tmp_path / "spool")},
            "monitoring": {"health_check_port": int(self.health.rsplit(":", 1)[1])},
        }
        for name, values in config.items():
            sections[name] = {**sections.get(name, {}), **values}
        cfg = write_config(tmp_path / "main.yaml", **sections)
        self.logs = tmp_path / "logs"
        self.sup: SupervisorProcess | None = None
        try:
            self.control("pause")  # nothing is generated before the workers listen
            self.sup = SupervisorProcess("--workers", str(workers), "--config", str(cfg), cwd=tmp_path)
            wait_for(lambda: len(self.live_connections()) >= workers, 60, "every worker to connect")
            wait_for(lambda: self.query("SELECT to_regclass('gaps')")[0][0], 60, "the writer to create the schema")
            self.control("resume")
        except BaseException:  # the caller never gets the object to stop: stop what was started here
            self.stop()
            raise

    def _watch_weights(self) -> None:
        """Record every REST request the simulator answers: path, its Binance weight, status."""
        sim = self.sim.sim
        handle = sim.handle_http
        lock = threading.Lock()

        def recording(peer: str, method: str, path: str, query: dict, headers: dict):  # noqa: ANN202
            result = handle(peer, method, path, query, headers)
            if not path.startswith("/_sim/"):
                status = result[0] if isinstance(result, tuple) else 0
                with lock:
                    self.weights.append((time.time(), path, weight_of(path, query), status))
            return result

        sim.handle_http = recording

    def max_weight_per_minute(self, since: float = 0.0, paths: tuple[str, ...] = BUDGETED) -> int:
        """Most weight the simulator accepted (status 200) for `paths` in one wall-clock minute, counted
        as Binance counts X-MBX-USED-WEIGHT-1M."""
        per_minute: dict[int, int] = defaultdict(int)
        for t, path, w, status in list(self.weights):
            if t >= since and status == 200 and path in paths:
                per_minute[int(t // 60)] += w
        return max(per_minute.values(), default=0)

    def requests(self, path: str) -> int:
        return sum(1 for _, p, _, _ in list(self.weights) if p == path)

    def control(self, cmd: str, **query: object) -> object:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        status, _, body = http_get(f"{self.sim.rest_url}/_sim/{cmd}" + (f"?{q}" if q else ""))
        assert status == 200, body
        return body

    def truth(self, klines: bool = False) -> dict:
        return http_get(f"{self.sim.rest_url}/_sim/truth?klines={int(klines)}")[2]  # type: ignore[return-value]

    def live_connections(self) -> list[dict]:
        return [c for c in self.truth()["connections"] if not c["closed"]]

    def stats(self) -> dict:
        status, _, body = http_get(self.health + "/stats")
        assert status == 200, body
        return body  # type: ignore[return-value]

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.db_url) as conn:
            return conn.execute(sql, params).fetchall()

    def worker_logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.logs.glob("worker-*.log")))

    def stop(self) -> tuple[int, str]:
        """SIGTERM the collector (exit code, output), then stop the simulator; idempotent."""
        if self._stopped is None:
            try:
                self._stopped = self.sup.stop() if self.sup is not None else (-1, "")
            finally:
                self.sim.stop()
        return self._stopped


def trade_ids(c: Collector, symbol: str) -> list[int]:
    return [r[0] for r in c.query("SELECT trade_id FROM trades WHERE symbol = %s ORDER BY trade_id", symbol)]


def ids_complete(c: Collector, truth: dict, symbols: list[str]) -> bool:
    try:
        assert_every_id_once(c, truth, symbols)
    except AssertionError:
        return False
    return True



def assert_liquidations(c: Collector, t: dict) -> dict[str, int]:
    """Every liquidation the simulator sent is stored once and equal, or lies inside a `liquidations` gap row
    of its symbol (unfillable, its reason saying why); nothing stored that was not sent. Returns the rows per
    symbol. The market is paused and every trade stored by now, but the writer commits each table in its own
    transaction, so the last liquidations may still be on their way: waited for, with a deadline."""
    want = Counter((x["s"], int(x["T"]), x["S"].lower(), Decimal(x["p"]), Decimal(x["q"])) for x in t["liquidations"])
    assert want, "no liquidation was sent: the scenario proves nothing about them"
    holes = c.query("SELECT symbol, from_id, to_id, state, reason FROM gaps WHERE kind = 'liquidations'")
    assert {(h[3], h[4]) for h in holes} <= {("unfillable", "no liquidation history on Binance")}, holes

    def stored() -> Counter:
        return Counter(c.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, side, price, quantity "
                               "FROM liquidations"))

    def missing() -> list[tuple]:
        return [k for k in want - stored() if not any(h[0] == k[0] and h[1] <= k[1] <= h[2] for h in holes)]

    try:
        wait_for(lambda: not missing(), 30, "every liquidation sent outside the holes to be stored")
    except AssertionError:  # say which
        raise AssertionError(f"not stored and outside every liquidations gap row {holes}: {missing()}") from None
    assert not stored() - want, f"stored but not sent (or twice): {stored() - want}"
    lost = sum(n for k, n in (want - stored()).items())
    print(f"liquidations: {sum(want.values())} sent, {lost} not stored, all inside the {len(holes)} gap rows")
    return dict(Counter(h[0] for h in holes))


def assert_every_id_once(c: Collector, truth: dict, symbols: list[str]) -> None:
    """With keep_all, the trades table holds every aggTrade id the exchange sent or skipped from the first
    one the collector received (earlier ones predate its subscription) to the last, each exactly once."""
    for sym in symbols:
        ids = truth["symbols"][sym]["agg_ids"]
        got = trade_ids(c, sym)
        assert got, sym
        assert len(got) == len(set(got)), f"{sym}: duplicated trade ids"
        assert got == list(range(got[0], ids["last"] + 1)), (sym, len(got), ids)


@pytest.mark.timeout(180)
def test_skipped_ids_are_one_filled_gap_and_trades_complete(db_url: str, tmp_path: Path) -> None:
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=20, rate=100, speed=20, seed=11), workers=2,
                  filters={"trades": {"keep_all": True}})
    try:
        sym = "BTCUSDT"
        # the collector's own first trade, not the simulator's count: trades generated before the workers
        # subscribed count there too, and a skip before the first trade received is no gap anyone can see
        wait_for(lambda: trade_ids(c, sym), 30, "a stored BTCUSDT trade")
        c.control("fault/skip", symbol=sym, count=25)
        wait_for(lambda: c.truth()["symbols"][sym]["agg_ids"]["skipped"], 30, "the skip to happen")
        # a few more trades after the jump, then freeze the truth
        skipped_to = c.truth()["symbols"][sym]["agg_ids"]["skipped"][0][1]
        wait_for(lambda: c.truth()["symbols"][sym]["agg_ids"]["last"] >= skipped_to + 5, 30, "trades after the skip")
        c.control("pause")
        t = c.truth()
        (skip,) = t["symbols"][sym]["agg_ids"]["skipped"]
        wait_for(lambda: c.query("SELECT 1 FROM gaps WHERE symbol = %s AND filled_at IS NOT NULL", sym), 30,
                 "the gap to be filled and stored")
        last = {s: v["agg_ids"]["last"] for s, v in t["symbols"].items() if v["agg_ids"]["last"] >= 0}
        wait_for(lambda: all(max(trade_ids(c, s), default=-1) >= a for s, a in last.items()), 30,
                 "every trade up to the pause to be committed")
        gaps = c.query("SELECT symbol, from_id, to_id, filled_at >= detected_at FROM gaps")
        assert gaps == [(sym, skip[0], skip[1], True)], (gaps, skip)
        assert trade_ids(c, sym)[0] < skip[0]  # the skip happened after collection started
        assert_every_id_once(c, t, list(last))
        code, out = c.stop()
        assert code == 0, out[-3000:]
        assert f"{sym}: aggTrade ids {skip[0]}..{skip[1]} missing" in c.worker_logs()
    finally:
        c.stop()


@pytest.mark.timeout(420)
def test_mass_reconnect_fills_gaps_and_candles_within_budget(db_url: str, tmp_path: Path) -> None:
    """Every connection dropped at once: every symbol's first trade after reconnect jumps. Trades and
    1m candles are complete afterwards, and the backfill burst stays within the REST weight budget."""
    budget = 600  # exchange.rest_weight_per_min: small, so 40 gaps x 20 weight must be paced
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=40, rate=200, speed=30, seed=12), workers=2,
                  filters={"trades": {"keep_all": True}, "open_interest": {"interval_s": 20}},
                  exchange={"rest_weight_per_min": budget})
    try:
        wait_for(lambda: all(s["kline_closed"].get("1m", 0) >= 2 for s in c.truth()["symbols"].values()), 60,
                 "two closed 1m klines per symbol")
        # every connection misses a minute's closed kline on every symbol, so candles must come from REST
        dropped_at = miss_a_minute_close(c.sim.rest_url)
        wait_for(lambda: all(s["kline_closed"].get("1m", 0) >= 5 for s in c.truth()["symbols"].values()), 60,
                 "three more closed 1m klines per symbol")
        c.control("pause")
        t = c.truth(klines=True)
        symbols = [s for s, v in t["symbols"].items() if v["agg_ids"]["last"] >= 0]
        gaps_wanted = 30  # most symbols trade during the reconnect; the check below is on what happened
        # The budget's arithmetic: up to 40 trade pages of weight 20 (800). Per clock minute trade pages may
        # use 80% of the 600 (backfill.TRADES_RESERVE keeps 20% for candle repairs), and open interest
        # (40 symbols every 20 s, weight 1) takes up to 120 of that: >= 360 a minute, so the pages need at
        # most 3 clock minutes after the drop; 200 s from the drop leaves 20 s for the writer.
        fill_deadline = dropped_at + 200
        wait_for(lambda: c.query("SELECT count(*) FROM gaps WHERE filled_at IS NOT NULL")[0][0] >= gaps_wanted,
                 fill_deadline - time.time(), f"{gaps_wanted} filled gaps")
        repairs = "FROM gaps WHERE kind <> 'liquidations'"  # those are unfillable by nature: checked below
        wait_for(lambda: c.query(f"SELECT count(*) {repairs}")[0][0]  # noqa: S608
                 == c.query(f"SELECT count(*) {repairs} AND filled_at IS NOT NULL")[0][0],  # noqa: S608
                 max(1.0, fill_deadline - time.time()), "every gap filled")
        wait_for(lambda: ids_complete(c, t, symbols), 60, "every trade up to the pause, gaps backfilled")
        assert_every_id_once(c, t, symbols)
        assert c.query(f"SELECT count(*) {repairs}")[0][0] >= gaps_wanted  # noqa: S608
        # liquidations: the drop is one hole per symbol (each worker's connection reported its loss once),
        # and every liquidation sent is stored or inside its symbol's
        assert assert_liquidations(c, t) == {s: 1 for s in t["symbols"]}
        # candles_1m: every closed 1m kline of the truth, including the minutes the drop cost
        want = {(k["s"], k["t"]) for k in t["klines"] if k["i"] == "1m"}
        wait_for(lambda: want <= {(s, int(ms)) for s, ms in c.query(
            "SELECT symbol, (extract(epoch FROM time) * 1000)::bigint FROM candles_1m")}, 60, "every 1m candle")
        # the REST weight the simulator charged stayed within the budget in every minute
        assert t["rest_status"].get("429", 0) == 0 and t["rest_status"].get("418", 0) == 0
        heaviest = c.max_weight_per_minute(since=dropped_at - 60)
        assert 0 < heaviest <= budget, heaviest
        assert c.requests("/fapi/v1/aggTrades") >= gaps_wanted and c.requests("/fapi/v1/klines") > 0
        everything = c.max_weight_per_minute(paths=tuple({p for _, p, _, _ in c.weights}))
        code, out = c.stop()
        assert code == 0, out[-3000:]
        logs = c.worker_logs()
        assert "filled from REST" in logs and "missing (" in logs
        print(f"heaviest minute: {heaviest} budgeted weight, {everything} in all (budget {budget}); "
              f"{c.requests('/fapi/v1/aggTrades')} aggTrades and {c.requests('/fapi/v1/klines')} klines requests")
    finally:
        c.stop()
