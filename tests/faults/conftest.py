"""The rig for the writer's fault scenarios (test_db_outage.py, test_writer_crash.py).

`writer_fault_rig` starts a private PostgreSQL (EmbeddedPostgres, so a test can stop and restart it), the
simulator in a subprocess, and `python supervisor.py --workers 2` pointed at both, and waits until rows
are being committed. `WriterFaultRig.verify_against_truth()` then checks the database against the
simulator's ground truth. Everything is named writer_fault_* / WriterFaultRig so it cannot be mistaken
for another fault file's harness.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psutil
import psycopg
import pytest
from helpers import SupervisorProcess, http_get, wait_for, write_config

from collector.db.embedded import EmbeddedPostgres, free_port
from exchange_sim import SimConfig, launch_subprocess

# Few symbols at speed 20 (a sim minute every 3 wall seconds): 1m klines close several times within a
# scenario, and the whole scenario stays well under 90 s of wall time.
WRITER_FAULT_SYMBOLS = 30
WRITER_FAULT_SPEED = 20
WRITER_FAULT_RATE = 60  # aggTrades per sim second across the market: batches flow all the time
WRITER_FAULT_WORKERS = 2


class WriterFaultRig:
    """A private PostgreSQL + the simulator + the collector, with what a scenario needs to poke at them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.spool_dir = tmp_path / "spool"
        # durable: an immediate stop must not lose commits the writer was told about (synchronous_commit on)
        self.pg = EmbeddedPostgres(durable=True)
        self.sim = None
        self.sup: SupervisorProcess | None = None
        self.url = f"http://127.0.0.1:{free_port()}"
        try:
            self.pg.start()
            self.sim = launch_subprocess(SimConfig(port=0, symbols=WRITER_FAULT_SYMBOLS, rate=WRITER_FAULT_RATE,
                                                   speed=WRITER_FAULT_SPEED, seed=11))
        except BaseException:  # the fixture never gets the rig to close: undo what was started here
            self.close()
            raise

    def start_collector(self, workers: int = WRITER_FAULT_WORKERS, **config: dict) -> None:
        """Start `supervisor.py`; `config` adds keys to the rig's sections (e.g. writer={"spool_max_mb": 1})."""
        self.control("pause")  # nothing is generated before the workers listen: the truth is all ours
        sections: dict[str, dict] = {
            "database": {"url": self.pg.url},
            "exchange": {"rest_url": self.sim.rest_url, "ws_url": self.sim.ws_url},
            "logging": {"filename": str(self.tmp_path / "logs" / "supervisor.log")},
            "writer": {"spool_dir": str(self.spool_dir)},
            "monitoring": {"health_check_port": int(self.url.rsplit(":", 1)[1])},
        }
        for name, values in config.items():
            sections[name] = {**sections.get(name, {}), **values}
        cfg = write_config(self.tmp_path / "main.yaml", **sections)
        self.sup = SupervisorProcess("--workers", str(workers), "--config", str(cfg), cwd=self.tmp_path)
        wait_for(lambda: len([c for c in self.truth()["connections"] if not c["closed"]]) >= workers,
                 60, "every worker to connect")
        self.control("resume")
        wait_for(lambda: self.db_count("candles_1m") > 0, 60, "the first 1m candles to be committed")

    def close(self) -> None:
        """Stop everything this rig started, even when a step fails (the supervisor's process group too)."""
        try:
            if self.sup is not None:
                self.sup.stop()
        finally:
            try:
                if self.sim is not None:
                    self.sim.stop()
            finally:
                self.pg.stop()

    # --- looking ------------------------------------------------------------------------------------------------

    def control(self, what: str) -> None:
        http_get(self.sim.rest_url + f"/_sim/{what}")

    def truth(self, klines: bool = False) -> dict:
        return http_get(self.sim.rest_url + f"/_sim/truth?klines={int(klines)}")[2]  # type: ignore[return-value]

    def closed_1m(self) -> int:
        """Closed 1m klines the simulator has sent so far, all symbols together."""
        return sum(s["kline_closed"].get("1m", 0) for s in self.truth()["symbols"].values())

    def query(self, sql: str, *args: object) -> list[tuple]:
        with psycopg.connect(self.pg.url, connect_timeout=5) as conn:
            return conn.execute(sql, args).fetchall()

    def db_count(self, table: str) -> int:
        try:
            return self.query(f"SELECT count(*) FROM {table}")[0][0]
        except psycopg.Error:  # schema not created yet, or the server is down
            return 0

    def health_status(self) -> int:
        try:
            return http_get(self.url + "/health", timeout=5)[0]
        except OSError:
            return 0

    def worker_stats(self) -> list[dict]:
        return http_get(self.url + "/stats", timeout=5)[2]["workers"]  # type: ignore[index]

    def writer_stats(self) -> dict:
        return http_get(self.url + "/stats", timeout=5)[2]["writer"] or {}  # type: ignore[index]

    def spooled_batches(self) -> float:
        return (self.writer_stats().get("spooled") or {}).get("batches", 0)

    def spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("pending-*")) if self.spool_dir.exists() else []

    def children(self) -> dict[str, int]:
        """Collector children by process title -> pid (setproctitle rewrites the command line)."""
        assert self.sup is not None
        out = {}
        for p in psutil.Process(self.sup.proc.pid).children(recursive=True):
            try:
                title = " ".join(p.cmdline()).strip()  # setproctitle pads the old argv with empty strings
            except psutil.NoSuchProcess:
                continue
            if title.startswith("collector: "):
                out[title] = p.pid
        return out

    def writer_pid(self) -> int | None:
        return self.children().get("collector: writer")

    # --- the verdict ----------------------------------------------------------------------------------------------

    def wait_recovered(self, more_closed_klines: int = 2 * WRITER_FAULT_SYMBOLS) -> None:
        """After the fault: more klines close (rows made after the fault count too), then /health is 200
        and the spool is empty."""
        target = self.closed_1m() + more_closed_klines
        wait_for(lambda: self.closed_1m() >= target, 60, "more klines to close after the fault")
        wait_for(lambda: self.health_status() == 200 and self.spooled_batches() == 0 and not self.spool_files(),
                 60, "/health 200 with an empty spool")

    def verify_against_truth(self) -> None:
        """Freeze the market, let everything land, stop the collector (exit 0), compare with the truth."""
        self.control("pause")  # the truth is final from here on
        t = self.truth(klines=True)
        klines_1m = [k for k in t["klines"] if k["i"] == "1m"]
        wait_for(lambda: self.db_count("candles_1m") >= len(klines_1m)
                 and self.db_count("liquidations") >= len(t["liquidations"]),
                 60, "every closed kline and liquidation to be committed")
        assert self.health_status() == 200 and not self.spool_files()
        assert self.sup is not None
        code, out = self.sup.stop()
        assert code == 0, out[-3000:]
        self.sup = None
        self._assert_database_matches(t, klines_1m)

    def _assert_database_matches(self, t: dict, klines_1m: list[dict]) -> None:
        # candles_1m: every closed kline, exactly once, value for value
        rows = self.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume,"
                          " quote_volume, trades FROM candles_1m")
        got = Counter((r[0], r[1]) for r in rows)
        assert got and max(got.values()) == 1
        want = {(k["s"], k["t"]): (Decimal(k["o"]), Decimal(k["h"]), Decimal(k["l"]), Decimal(k["c"]),
                                   Decimal(k["v"]), Decimal(k["q"]), k["n"]) for k in klines_1m}
        assert {(r[0], r[1]): r[2:] for r in rows} == want
        # liquidations: every event the exchange sent, once
        liq = Counter(self.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, side, price, quantity"
                                 " FROM liquidations"))
        want_liq = Counter((x["s"], x["T"], x["S"].lower(), Decimal(x["p"]), Decimal(x["q"]))
                           for x in t["liquidations"])
        assert want_liq and liq == want_liq
        # funding: at most one row per symbol and minute
        per_minute = self.query("SELECT symbol, date_trunc('minute', time), count(*) FROM funding GROUP BY 1, 2")
        assert per_minute and max(n for _, _, n in per_minute) == 1
        # trades: no trade id twice
        dup = self.query("SELECT count(*) FROM (SELECT symbol, trade_id FROM trades GROUP BY 1, 2 "
                         "HAVING count(*) > 1) d")[0][0]
        assert dup == 0 and self.db_count("trades") > 0


@pytest.fixture
def writer_fault_config() -> dict[str, dict]:
    """Configuration the rig adds to its own (a test module overrides this fixture to change it)."""
    return {}


@pytest.fixture
def writer_fault_rig(tmp_path: Path, writer_fault_config: dict[str, dict]) -> Iterator[WriterFaultRig]:
    rig = WriterFaultRig(tmp_path)
    try:
        rig.start_collector(**writer_fault_config)
        yield rig
    finally:
        rig.close()
