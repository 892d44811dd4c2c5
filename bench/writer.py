#!/usr/bin/env python3
"""The writer alone: rows/s into `trades` through collector.writer.service.Writer vs the raw COPY ceiling vs cryptofeed.

Same synthetic trades (496 symbols, increasing ids, event times around now) through four paths, one
transaction per batch each, table truncated before every run:
- writer:        pre-encoded Batches (the workers' output) -> Writer.add() + Writer.flush(): one binary COPY per
                 flush, what the writer process does. Encoding is excluded: it happens in the workers.
- copy_bytes:    psycopg `copy.write()` of the same pre-encoded bytes: the server's ingest ceiling.
- copy_write_row: psycopg binary COPY with `copy.write_row()` of Python tuples (psycopg adapts each value).
- cryptofeed:    cryptofeed's TradePostgres.write_batch() (its write path: text arrays, INSERT ... SELECT
                 FROM unnest ... ON CONFLICT DO NOTHING, via asyncpg) on its own table layout, fed the dicts
                 its callback builds, in its default batches of 500.

Then the writer's cost per COPY at the shipped configuration's size (`small`): the same Writer.add() + flush()
of SMALL_FLUSHES batches of SMALL_ROWS rows each (a worker's batch of kept trades at the real market's rate is
a few rows), reported as the writer's own CPU (process time: client side, PostgreSQL's not included) per COPY.
Why: at 1,260 aggTrades/s the writer makes tens of small COPYs a second, where the fixed cost of a COPY (the
statement, two round trips, the stats) is what it spends, not the rows.

    python bench/writer.py [--rows 200000 --runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: --src can win

import psycopg

from bench import common
from bench.peer import PEER_DDL, TRADE_COLUMNS
from collector.db.schema import ensure_schema
from collector.pipeline.batches import BatchBuilder
from collector.pipeline.encode import COLUMNS, COPY_HEADER, COPY_TRAILER, RowEncoder
from collector.writer.service import MAX_ROWS, Writer

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them

# Rows per run: ~10 COPY batches of the writer's default size, enough to amortise connection set-up and
# short enough (a few seconds per path) for 3 runs of 4 paths to stay well under 10 minutes.
DEFAULT_ROWS = 200_000
QUICK_ROWS = 60_000
BATCH_ROWS = MAX_ROWS  # the writer's own flush size; the COPY paths use the same batches
SMALL_ROWS = 3  # rows per COPY for `small`: a worker's batch of kept trades at the shipped configuration
SMALL_FLUSHES = 3_000  # COPYs per `small` run (a few seconds)
CRYPTOFEED_BATCH = 500  # cryptofeed's BackendQueue.batch_max default: what its users get
SYMBOLS = 496
SEED = 7  # fixed: every run and every path writes identical rows

TRADE_TYPES = ["timestamptz", "text", "text", "int8", "numeric", "numeric", "float8", "text", "text", "int8", "int8"]


def make_trades(n: int) -> list[tuple]:
    """(time_ms, symbol, id, price, amount, usd, side, reason) - strings as they arrive from the exchange."""
    rnd = random.Random(SEED)
    now = int(time.time() * 1000)
    syms = [f"SYM{i:03d}USDT" for i in range(SYMBOLS)]
    out = []
    for i in range(n):
        price = f"{rnd.uniform(0.01, 60000):.2f}"
        amount = f"{rnd.uniform(0.001, 50):.3f}"
        out.append((now - n + i, syms[i % SYMBOLS], 1_000_000 + i, price, amount, float(price) * float(amount),
                    rnd.choice(("buy", "sell")), "large_trade"))
    return out


def encoded_batches(trades: list[tuple], size: int = BATCH_ROWS) -> list:
    batches = []
    for start in range(0, len(trades), size):
        b = BatchBuilder("trades")
        for t, s, i, p, q, usd, side, reason in trades[start:start + size]:
            b.add(BINANCE.trade(t, s, i, p, q, usd, side, reason, i, i), t)
        batches.append(b.take())
    return batches


def truncate(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {table}")
        conn.execute(f"VACUUM ANALYZE {table}")


def run_writer(dsn: str, batches: list, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of `clock` (wall time by default) for Writer.add() + flush() of each batch, one flush each."""
    w = Writer(dsn, mode="postgres")
    w.connection()  # connect + schema check outside the timing, as in the long-running process
    t0 = clock()
    for b in batches:
        w.add(b)
        assert w.flush(["trades"]), w.stats.last_error
    dt = clock() - t0
    w.close()
    return dt


def run_writer_small(dsn: str, batches: list) -> float:
    """The writer's own CPU seconds (process time) per COPY over `batches` of a few rows."""
    return run_writer(dsn, batches, time.process_time) / len(batches)


def run_copy_bytes(dsn: str, batches: list) -> float:
    cols = ", ".join(COLUMNS["trades"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        for b in batches:
            with conn.transaction(), conn.cursor() as cur, \
                    cur.copy(f"COPY trades ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(COPY_HEADER + b.data + COPY_TRAILER)
        return time.perf_counter() - t0


def run_copy_write_row(dsn: str, trades: list[tuple]) -> float:
    cols = ", ".join(COLUMNS["trades"])
    rows = [(datetime.fromtimestamp(t / 1000, UTC), "binance", s, i, Decimal(p), Decimal(q), usd, side, reason, i, i)
            for t, s, i, p, q, usd, side, reason in trades]
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        for start in range(0, len(rows), BATCH_ROWS):
            with conn.transaction(), conn.cursor() as cur, \
                    cur.copy(f"COPY trades ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(TRADE_TYPES)
                for row in rows[start:start + BATCH_ROWS]:
                    cp.write_row(row)
        return time.perf_counter() - t0


async def _cryptofeed(dsn: str, trades: list[tuple]) -> float:
    from cryptofeed.backends.postgres import TradePostgres
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(dsn)
    be = TradePostgres(host=p["host"], port=int(p["port"]), user=p["user"], db=p["dbname"],
                       custom_columns=TRADE_COLUMNS, table="cf_trades")
    await be.connect()
    # the dicts TradePostgres's __call__ builds from a Trade (numeric_type=float), before they are queued
    dicts = [{"exchange": "BINANCE_FUTURES", "symbol": s, "side": side, "amount": float(q), "price": float(p_),
              "id": str(i), "type": None, "timestamp": t / 1000, "receipt_timestamp": t / 1000 + 0.01}
             for t, s, i, p_, q, _usd, side, _r in trades]
    t0 = time.perf_counter()
    for start in range(0, len(dicts), CRYPTOFEED_BATCH):
        await be.write_batch(dicts[start:start + CRYPTOFEED_BATCH])
    dt = time.perf_counter() - t0
    await be.close()
    return dt


def prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_schema(conn, "postgres")
        conn.execute(PEER_DDL[0].replace("CREATE TABLE trades", "CREATE TABLE cf_trades"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} rows, one run")
    p.add_argument("--src", default=None, help="product directory (default: a snapshot of HEAD)")
    a = p.parse_args()
    common.stop_on_signals()
    if "BENCH_SRC" not in os.environ:  # re-run against the chosen product source (see common.product_source)
        with common.product_source(a.src) as (src, what):
            env = dict(os.environ, PYTHONPATH=str(src), BENCH_SRC=what, BENCH_RESULTS_DIR=str(common.RESULTS))
            sys.exit(subprocess.run([sys.executable, *sys.argv], env=env, check=False).returncode)
    import collector.writer.service

    print(f"product: {os.environ['BENCH_SRC']} ({collector.writer.service.__file__})")
    if a.quick:
        a.rows, a.runs = QUICK_ROWS, 1
    trades = make_trades(a.rows)
    batches = encoded_batches(trades)
    paths = {
        "writer": lambda dsn: run_writer(dsn, batches),
        "copy_bytes": lambda dsn: run_copy_bytes(dsn, batches),
        "copy_write_row": lambda dsn: run_copy_write_row(dsn, trades),
        "cryptofeed": lambda dsn: asyncio.run(_cryptofeed(dsn, trades)),
    }
    small = encoded_batches(make_trades(SMALL_ROWS * SMALL_FLUSHES), SMALL_ROWS)
    times: dict[str, list[float]] = {k: [] for k in paths}
    small_cpu: list[float] = []
    with common.throwaway_postgres() as admin:
        dsn = common.new_database(admin, "writer")
        prepare(dsn)
        for _ in range(a.runs):
            for name, fn in paths.items():  # interleaved, so drift (checkpoints, other load) hits every path
                truncate(dsn, "cf_trades" if name == "cryptofeed" else "trades")
                times[name].append(fn(dsn))
            truncate(dsn, "trades")
            small_cpu.append(run_writer_small(dsn, small))
    rows = []
    for name, ts in times.items():
        med = common.median(ts)
        rows.append({"path": name, "rows_s": a.rows / med if med else None, "seconds": med,
                     "runs": [round(a.rows / t) for t in ts]})
    by = {r["path"]: r["rows_s"] for r in rows}
    for r in rows:
        r["vs_write_row"] = r["rows_s"] / by["copy_write_row"]
        r["vs_copy_bytes"] = r["rows_s"] / by["copy_bytes"]
    common.print_table(rows, [("path", "path"), ("rows_s", "rows/s (median)"), ("seconds", "s"),
                              ("vs_write_row", "/ write_row"), ("vs_copy_bytes", "/ raw bytes")],
                       f"writer: {a.rows:,} trades rows, batches of {BATCH_ROWS:,} (cryptofeed {CRYPTOFEED_BATCH}), "
                       f"{a.runs} runs")
    print(f"  target: writer >= 90% of raw COPY (write_row): {by['writer'] / by['copy_write_row']:.0%}")
    small_us = [round(x * 1e6, 1) for x in small_cpu]
    print(f"  small: the writer's CPU per COPY of {SMALL_ROWS} rows ({SMALL_FLUSHES:,} COPYs per run): "
          f"{common.median(small_us)} µs (median; runs {small_us})")
    name = "writer-quick" if a.quick else "writer"
    path = common.write_results(name, {"command": " ".join(sys.argv), "product": os.environ["BENCH_SRC"],
                                       "rows": a.rows, "results": rows,
                                       "small": {"rows_per_copy": SMALL_ROWS, "copies": SMALL_FLUSHES,
                                                 "cpu_us_per_copy": small_us}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
