#!/usr/bin/env python3
"""The read API under write load: request latency of the three target queries, and Arrow vs JSON to a DataFrame.

Targets (issue 15): p99 < 100 ms for (1) one symbol-day of 1m candles, (2) one hour of one symbol's kept
trades, (3) `latest` for all symbols, measured while the collector writes `--rate` aggTrades/s (5,000 by
default, keep_all so every one is a row) on the same machine; and an Arrow response of 100k rows at least
5x faster to a DataFrame than the JSON one.

One session: a throwaway PostgreSQL; history written ahead with generate_series (`--days` of 1m candles,
the last hour of trades at one a second, funding, open interest and tiers for every simulator symbol, and
`--big-rows` trades of one extra symbol for the format comparison); then the simulator, the real supervisor
(`--workers`) and `python -m collector api` as its own process. Requests are sequential over one keep-alive
connection (httpx); each latency is request sent -> body read. The achieved write rate (trades rows/s
committed during the measurement) is reported beside the latencies: judge them against it.

    python bench/api.py [--quick] [--rate 5000] [--symbols 496] [--days 2] [--requests 300] [--big-rows 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import httpx
import polars as pl
import psycopg
import pyarrow as pa

from bench import common
from collector.db import partitions, rollups, schema, tables, tiers_repo
from collector.pipeline.encode import valid_symbol

ARROW = "application/vnd.apache.arrow.stream"
BIG = "BIGBENCHUSDT"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefill(dsn: str, symbols: list[str], days: int, big_rows: int, now: datetime) -> dict[str, int]:
    """History ending a minute before `now`, so the live collector only appends after it."""
    end = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    start = end - timedelta(days=days)
    hour = end - timedelta(hours=1)
    with psycopg.connect(dsn) as conn:
        schema.ensure_schema(conn, "postgres")
        for table in tables.TIME_TABLES:
            partitions.ensure_partitions_for(conn, table, start, now + timedelta(days=2))
        conn.commit()
        p = {"syms": symbols, "start": start, "end": end, "hour": hour}
        conn.execute("""
            INSERT INTO candles_1m SELECT t, s, t + interval '59.999 seconds', 100 + i, 101 + i, 99 + i, 100.5 + i,
                   10, 1005, 7, 5, 502.5
            FROM unnest(%(syms)s::text[]) WITH ORDINALITY AS u(s, i),
                 generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute',
                                 interval '1 minute') t""", p)
        rollups.rollup_candles(conn, start, end)
        conn.execute("""
            INSERT INTO trades SELECT t, s, n, 100.25, 0.5, 50.125, CASE WHEN n %% 2 = 0 THEN 'buy' ELSE 'sell' END,
                   'time_interval', n * 3, n * 3 + 2
            FROM unnest(%(syms)s::text[]) AS u(s),
                 generate_series(%(hour)s::timestamptz, %(end)s::timestamptz - interval '1 second',
                                 interval '1 second') WITH ORDINALITY AS g(t, n)""", p)
        conn.execute("""
            INSERT INTO trades SELECT %(hour)s::timestamptz + n * (interval '1 hour' / %(big)s), %(sym)s, n,
                   100 + n / 1000.0, 0.001 * (n %% 97 + 1), 0.1 * (n %% 97 + 1), 'buy', 'keep_all', n, n
            FROM generate_series(1, %(big)s) n""", {**p, "big": big_rows, "sym": BIG})
        conn.execute("""
            INSERT INTO funding SELECT t, s, 100.5, 100.4, 0.0001, date_trunc('hour', t) + interval '8 hours'
            FROM unnest(%(syms)s::text[]) AS u(s),
                 generate_series(%(end)s::timestamptz - interval '2 hours', %(end)s::timestamptz, interval '1 minute') t
            """, p)
        conn.execute("""
            INSERT INTO open_interest SELECT t, s, 12345.678
            FROM unnest(%(syms)s::text[]) AS u(s),
                 generate_series(%(start)s::timestamptz, %(end)s::timestamptz, interval '5 minutes') t""", p)
        tiers_repo.store_tiers(conn, {s: tiers_repo.TierRow(i % 4, 1e4, 5e3, 0.5) for i, s in enumerate(symbols)}, end)
        conn.commit()
        conn.execute("ANALYZE")
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                  for t in ("candles_1m", "trades", "funding", "open_interest")}
    return counts


@contextlib.contextmanager
def process(args: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group, stopped (SIGTERM, then SIGKILL of the group) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(common.ROOT)})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def latencies(client: httpx.Client, url: str, params: dict[str, Any], headers: dict[str, str], n: int,
              check: Callable[[httpx.Response], int]) -> dict[str, Any]:
    ms, rows = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url, params=params, headers=headers)
        body = r.content
        ms.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {body[:200]!r}")
        rows = check(r)
    return {"n": n, "rows": rows, "median_ms": statistics.median(ms), "p99_ms": common.percentile(ms, 99),
            "max_ms": max(ms)}


def json_rows(r: httpx.Response) -> int:
    return len(r.json()["data"])


def arrow_rows(r: httpx.Response) -> int:
    return int(pa.ipc.open_stream(r.content).read_all().num_rows)


def formats(client: httpx.Client, base: str, rows: int, runs: int) -> dict[str, Any]:
    """Arrow vs JSON, the same `rows` trades to a polars DataFrame: decode only, and request + decode."""
    url = f"{base}/api/v1/trades"
    params = {"symbol": BIG, "start": 0, "end": "2100-01-01", "limit": rows, "time_format": "ms"}
    out: dict[str, Any] = {}
    for fmt, headers in (("json", {}), ("arrow", {"Accept": ARROW})):
        decode, total = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            body = client.get(url, params=params, headers=headers).content
            t1 = time.perf_counter()
            if fmt == "json":
                df = pl.DataFrame(json.loads(body)["data"])
            else:
                df = pl.from_arrow(pa.ipc.open_stream(body).read_all())
            t2 = time.perf_counter()
            assert isinstance(df, pl.DataFrame) and len(df) == rows, (fmt, len(df))
            decode.append((t2 - t1) * 1000)
            total.append((t2 - t0) * 1000)
        out[fmt] = {"bytes": len(body), "decode_median_ms": statistics.median(decode),
                    "request_and_decode_median_ms": statistics.median(total)}
    out["decode_speedup"] = out["json"]["decode_median_ms"] / out["arrow"]["decode_median_ms"]
    out["request_and_decode_speedup"] = (out["json"]["request_and_decode_median_ms"]
                                         / out["arrow"]["request_and_decode_median_ms"])
    return out


def trades_rows(dsn: str, since: datetime) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM trades WHERE time >= %s", (since,)).fetchone()[0])  # type: ignore[index]


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with common.throwaway_postgres() as admin, common.simulator(args.rate, args.symbols) as sim:
        dsn = common.new_database(admin, "api")
        info = common.http_json(sim.rest_url + "/fapi/v1/exchangeInfo")
        symbols = sorted(s["symbol"] for s in info["symbols"]  # type: ignore[index]
                         if valid_symbol(s["symbol"]) and s.get("contractType", "PERPETUAL") == "PERPETUAL")
        t0 = time.monotonic()
        counts = prefill(dsn, symbols, args.days, args.big_rows, datetime.now(UTC))
        print(f"prefilled in {time.monotonic() - t0:.0f} s: {counts}", flush=True)
        cfg = tmp / "main.yaml"
        cfg.write_text(json.dumps({
            "database": {"url": dsn}, "exchange": {"rest_url": sim.rest_url, "ws_url": sim.ws_url},
            "filters": {"trades": {"keep_all": True}}, "writer": {"spool_dir": str(tmp / "spool")},
            "logging": {"filename": str(tmp / "logs" / "supervisor.log")},
            "monitoring": {"health_check_port": 0}}))
        port = _free_port()
        live_since = datetime.now(UTC)
        with process([sys.executable, str(common.ROOT / "supervisor.py"), "--workers", str(args.workers),
                      "--config", str(cfg)], tmp, tmp / "supervisor.out"), \
             process([sys.executable, "-m", "collector", "api", "--config", str(cfg), "--dsn", dsn,
                      "--port", str(port)], tmp, tmp / "api.out"):
            base = f"http://127.0.0.1:{port}"
            common.wait_for(lambda: trades_rows(dsn, live_since) > 0, 120, "the collector's first trades")

            def api_up() -> bool:
                try:
                    return httpx.get(f"{base}/api/v1/openapi.json", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            common.wait_for(api_up, 60, "the API to listen")
            time.sleep(args.warmup)  # let the write rate settle before measuring (not a synchronisation)
            sym = symbols[0]
            day_end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
            targets = {
                "candles_1m_symbol_day": ("candles", {"symbol": sym, "timeframe": "1m",
                                                      "start": (day_end - timedelta(days=1)).isoformat(),
                                                      "end": day_end.isoformat(), "limit": 2000}),
                "trades_symbol_hour": ("trades", {"symbol": sym, "start": (day_end - timedelta(hours=1)).isoformat(),
                                                  "end": day_end.isoformat(), "limit": 10000}),
                "latest_all_symbols": ("latest", {}),
            }
            before_rows, before_t = trades_rows(dsn, live_since), time.monotonic()
            results: dict[str, Any] = {}
            with httpx.Client(timeout=60) as client:
                for name, (path, params) in targets.items():
                    for fmt, headers, check in (("json", {}, json_rows), ("arrow", {"Accept": ARROW}, arrow_rows)):
                        results[f"{name}/{fmt}"] = latencies(client, f"{base}/api/v1/{path}", params, headers,
                                                             args.requests, check)
                write_rate = (trades_rows(dsn, live_since) - before_rows) / (time.monotonic() - before_t)
                fmts = formats(client, base, args.big_rows, args.format_runs)
        common.drop_database(admin, dsn)
    return {"params": vars(args), "prefill_rows": counts, "write_rate_rows_per_s": write_rate,
            "latency": results, "arrow_vs_json": fmts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small run: 50 symbols, 1 day, 1,000/s, 40 requests")
    p.add_argument("--rate", type=float, default=5000.0, help="aggTrades/s the simulator sends (keep_all)")
    p.add_argument("--symbols", type=int, default=496)
    p.add_argument("--days", type=int, default=2, help="days of 1m candles written ahead")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--requests", type=int, default=300, help="requests per target and format")
    p.add_argument("--big-rows", type=int, default=100_000, help="rows of the Arrow vs JSON comparison")
    p.add_argument("--format-runs", type=int, default=5)
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of writing before measuring")
    args = p.parse_args()
    if args.quick:
        args.symbols, args.days, args.rate, args.requests, args.warmup = 50, 1, 1000.0, 40, 3.0
        args.big_rows, args.format_runs = min(args.big_rows, 20_000), 3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        out = run(args, Path(tmp))
    rows = [{"query": k, **v} for k, v in out["latency"].items()]
    common.print_table(rows, [("query", "query/format"), ("rows", "rows"), ("median_ms", "median ms"),
                              ("p99_ms", "p99 ms"), ("max_ms", "max ms")],
                       f"latency while writing {out['write_rate_rows_per_s']:,.0f} trades rows/s")
    f = out["arrow_vs_json"]
    print(f"\n{args.big_rows:,} rows to a polars DataFrame: JSON {f['json']['decode_median_ms']:.1f} ms decode "
          f"({f['json']['request_and_decode_median_ms']:.1f} ms with the request), Arrow "
          f"{f['arrow']['decode_median_ms']:.1f} ms ({f['arrow']['request_and_decode_median_ms']:.1f} ms): "
          f"{f['decode_speedup']:.1f}x decode, {f['request_and_decode_speedup']:.1f}x end to end")
    path = common.write_results("api-quick" if args.quick else "api", out)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
