"""Small helpers shared by the end-to-end tests: condition waits (never bare sleeps) and HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.pipeline.batches import Batch, BatchBuilder
from collector.pipeline.encode import RowEncoder

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them

ROOT = Path(__file__).resolve().parents[1]
# The version the stub "installed but not preloaded" TimescaleDB advertises (conftest.ts_not_preloaded_url).
# Here, not in conftest: `from conftest import` finds whichever conftest module was imported first.
STUB_TIMESCALEDB_VERSION = "2.17.2"


def http_get(url: str, timeout: float = 30.0) -> tuple[int, dict, object]:
    """(status, headers, decoded JSON body) without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, dict(resp.headers), json.loads(body) if body[:1] in b"[{" else body
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, dict(e.headers), json.loads(body) if body[:1] in b"[{" else body


def task_wakeups(pid: int, tid: int) -> int:
    """How often thread `tid` of process `pid` has gone to sleep and been woken so far (its voluntary context
    switches, from /proc/<pid>/task/<tid>/status): a thread that waits for nothing does not add to it."""
    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")))


def thread_wakeups(thread: threading.Thread) -> int:
    """task_wakeups() of a thread of this process."""
    assert thread.native_id is not None
    return task_wakeups(os.getpid(), thread.native_id)


def settled_wakeups(thread: threading.Thread, quiet_s: float = 0.3, timeout: float = 10.0) -> int:
    """thread_wakeups() once `thread` has gone `quiet_s` without one: whatever it was doing when asked (going
    to sleep after a request counts once, waiting for the GIL too) is over before a window is measured."""
    deadline = time.monotonic() + timeout
    n = thread_wakeups(thread)
    while True:
        time.sleep(quiet_s)
        m = thread_wakeups(thread)
        if m == n:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"thread {thread.name} never went {quiet_s}s without waking in {timeout}s")
        n = m


def wait_for(pred: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
    """Poll a condition until it holds (returning its value), or fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def miss_a_minute_close(rest_url: str) -> float:
    """Make every stream connection of the simulator at `rest_url` miss a sim minute's close: stall them all
    (nothing more is sent on them), wait until the sim clock is past the next minute boundary, then drop them
    and wait until as many new ones are open. That minute's closed klines and the trades meanwhile were never
    sent, however loaded the machine. (A drop timed from a truth read shortly before the boundary once came
    late enough on a loaded CI machine for the worker to stream again before the close: no hole.) Returns the
    wall time of the drop."""
    def truth() -> dict:
        return http_get(f"{rest_url}/_sim/truth?klines=0")[2]  # type: ignore[return-value]
    live = {c["id"] for c in truth()["connections"] if not c["closed"]}
    stall: dict = http_get(f"{rest_url}/_sim/fault/stall")[2]  # type: ignore[assignment]
    assert set(stall["stalled"]) == live, (stall, live)
    # the sim closes a minute's klines as its clock passes the boundary; 5 sim s of margin
    closed_by = (stall["sim_ms"] // 60_000 + 1) * 60_000 + 5_000
    wait_for(lambda: truth()["sim_ms"] >= closed_by, 30, "the stalled minute to close", poll=0.05)
    dropped_at = time.time()
    http_get(f"{rest_url}/_sim/fault/drop")
    wait_for(lambda: len([c for c in truth()["connections"] if c["id"] not in live and not c["closed"]])
             >= len(live), 30, "every connection back")
    return dropped_at


def is_healthy(port: int) -> bool:
    """True when the collector on this port answers /health with 200."""
    try:
        return http_get(f"http://127.0.0.1:{port}/health", timeout=5)[0] == 200
    except OSError:
        return False


def wait_healthy(port: int, timeout: float = 90) -> None:
    wait_for(lambda: is_healthy(port), timeout, "/health 200")


def process_tree() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process: what a failed wait for the collector's children saw."""
    out = []
    for q in psutil.process_iter(["pid", "ppid", "cmdline"]):
        out.append((q.info["pid"], q.info["ppid"], " ".join(q.info["cmdline"] or []).strip()[:80]))
    return out


def dead_owner_record() -> str:
    """An owner record (collector.runtime.run_dir.owner_record's format) naming a process that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return f"{p.pid} 12345\n"


def write_config(path: Path, **sections: dict) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


class SupervisorProcess:
    """`python supervisor.py ...` as a child process of the test, in its own process group.

    Every instance is registered until stopped; tests/conftest.py's autouse fixture stops whatever a test
    left running (a failed wait, an exception in a harness's constructor), so a failing test never leaves
    a supervisor, its writer and workers behind. stop() ends the whole group: SIGTERM to the supervisor
    (which drains its children), SIGKILL to every process of the group if that does not finish in time.
    """

    running: set[SupervisorProcess] = set()

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), *args], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                                     start_new_session=True)
        SupervisorProcess.running.add(self)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 120.0) -> tuple[int, str]:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                out, _ = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid)
                out, _ = self.proc.communicate()
            kill_group(self.proc.pid)  # children that outlived their supervisor (it was killed, or hung)
        finally:
            SupervisorProcess.running.discard(self)
        return self.proc.returncode, out


def kill_group(pgid: int) -> None:
    """SIGKILL every process still in the process group `pgid` (the supervisor's own session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group


# Writer-level test data, shared by the writer and transport tests.
def now_ms() -> int:
    return int(time.time() * 1000)


def trades_batch(start_id: int, n: int, t0: int | None = None, step_ms: int = 10, reason: str = "keep_all") -> Batch:
    t0 = now_ms() if t0 is None else t0
    b = BatchBuilder("trades")
    for i in range(start_id, start_id + n):
        t = t0 + (i - start_id) * step_ms
        b.add(BINANCE.trade(t, "BTCUSDT", i, f"{40000 + i}.10", "0.001", 40.0 + i, "buy" if i % 2 else "sell",
                           reason, i * 10, i * 10 + 2), t)
    batch = b.take()
    assert batch is not None
    return batch


def trade_ids(db_url: str) -> list[int]:
    with psycopg.connect(db_url) as conn:
        return [r[0] for r in conn.execute("SELECT trade_id FROM trades ORDER BY trade_id").fetchall()]


def partition_names(conn: psycopg.Connection, table: str) -> list[str]:
    """The partitions of `table`, sorted, read from the catalog (not through the code under test)."""
    return sorted(r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass", (table,)).fetchall())


@contextmanager
def fresh_database(pg_server_url: str) -> Iterator[str]:
    """A new, empty database on `pg_server_url`, dropped afterwards (one test's, or one module's)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_server_url)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The primary keys version 5 code created (before every table gained the venue in schema version 6).
V5_KEYS = {"trades": "symbol, time, trade_id", "funding": "symbol, time", "liquidations": "symbol, time, side, price, "
           "quantity", "open_interest": "symbol, time", "candles_1m": "symbol, time", "candles_5m": "symbol, time",
           "candles_30m": "symbol, time", "candles_4h": "symbol, time", "candles_1d": "symbol, time",
           "gaps": "symbol, kind, from_id, to_id", "symbol_tiers": "computed_at, symbol", "checkpoints": "symbol"}


def to_version_6_layout(conn: psycopg.Connection) -> None:
    """Turn a freshly created (current) schema back into what version 6 code left: checkpoints without the
    funding rate and its settlement time (schema version 7), schema_version at 6."""
    conn.execute("ALTER TABLE checkpoints DROP COLUMN funding_rate, DROP COLUMN next_funding_ms")
    conn.execute("DELETE FROM schema_version WHERE version > 6")


def to_version_5_layout(conn: psycopg.Connection) -> None:
    """Turn a freshly created (current) plain-PostgreSQL schema back into what version 5 code left: no venue
    column anywhere, the old keys and indexes, no instruments table, schema_version at 5."""
    from collector.db.schema import TIMEFRAMES, _closed_view_ddl, closed_view

    to_version_6_layout(conn)
    for view in TIMEFRAMES:
        conn.execute(f"DROP VIEW {closed_view(view)}")
    for table, key in V5_KEYS.items():
        conn.execute(f"ALTER TABLE {table} DROP COLUMN venue")  # drops the key and indexes holding it
        conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
    for table in ("candles_1m", "candles_5m", "candles_30m", "candles_4h", "candles_1d"):  # Binance's fields only
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN trades SET NOT NULL, ALTER COLUMN taker_buy_volume SET NOT "
                     "NULL, ALTER COLUMN taker_buy_quote_volume SET NOT NULL")
    conn.execute("CREATE INDEX gaps_open ON gaps (symbol) WHERE state IN ('detected', 'filling')")
    conn.execute("CREATE INDEX symbol_tiers_symbol_latest ON symbol_tiers (symbol, computed_at DESC)")
    conn.execute("DROP TABLE instruments")
    for view in TIMEFRAMES:
        conn.execute(_closed_view_ddl(view))
    conn.execute("DELETE FROM schema_version WHERE version > 5")
