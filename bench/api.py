#!/usr/bin/env python3
"""The read API under write load: request latency of the three target queries, and Arrow vs JSON to a DataFrame.

Targets (issue 15): p99 < 100 ms for (1) one symbol-day of 1m candles, (2) one hour of one symbol's kept
trades, (3) `latest` for all symbols, measured while the collector writes `--rate` aggTrades/s (5,000 by
default, keep_all so every one is a row) on the same machine; and an Arrow response of 100k rows at least
5x faster to a DataFrame than the JSON one.

One session: a throwaway PostgreSQL; history written ahead with generate_series, in time order as the
collector appends (`--days` of 1m candles, the last hour of trades at one a second, funding, open interest
and tiers for every simulator symbol, and `--big-rows` trades of one extra symbol for the format
comparison); then `python -m collector api` as its own process, the simulator and the real supervisor
(`--workers`). Requests are sequential over one keep-alive connection (httpx); each latency is request
sent -> body read. The achieved write rate (trades rows/s committed during the measurement) is reported
beside the latencies: judge them against it.

The format comparison runs after the collector stopped: `--big-rows` trades requested as JSON (epoch-ms
times) and as Arrow and turned into a polars and a pandas DataFrame, the four cases interleaved run by run,
medians of `--format-runs`; besides wall time, the CPU seconds each request cost the API process,
PostgreSQL and this process (/proc), which other jobs on a shared machine distort far less.

    python bench/api.py [--quick] [--formats-only] [--rate 5000] [--symbols 496] [--days 2] [--requests 300]
                        [--big-rows 100000] [--format-runs 7]
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
import orjson
import pandas as pd
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
            INSERT INTO candles_1m SELECT t, 'binance', s, t + interval '59.999 seconds', 100 + i, 101 + i, 99 + i, 100.5 + i,
                   10, 1005, 7, 5, 502.5
            FROM unnest(%(syms)s::text[]) WITH ORDINALITY AS u(s, i),
                 generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute',
                                 interval '1 minute') t
            ORDER BY t, s""", p)  # time order, as the collector appends (the time BRINs rely on it)
        rollups.rollup_candles(conn, start, end)
        conn.execute("""
            INSERT INTO trades SELECT t, 'binance', s, n, 100.25, 0.5, 50.125, CASE WHEN n %% 2 = 0 THEN 'buy' ELSE 'sell' END,
                   'time_interval', n * 3, n * 3 + 2
            FROM unnest(%(syms)s::text[]) AS u(s),
                 generate_series(%(hour)s::timestamptz, %(end)s::timestamptz - interval '1 second',
                                 interval '1 second') WITH ORDINALITY AS g(t, n)
            ORDER BY t, s""", p)
        conn.execute("""
            INSERT INTO trades SELECT %(hour)s::timestamptz + n * (interval '1 hour' / %(big)s), 'binance', %(sym)s, n,
                   100 + n / 1000.0, 0.001 * (n %% 97 + 1), 0.1 * (n %% 97 + 1), 'buy', 'keep_all', n, n
            FROM generate_series(1, %(big)s) n""", {**p, "big": big_rows, "sym": BIG})
        conn.execute("""
            INSERT INTO funding SELECT t, 'binance', s, 100.5, 100.4, 0.0001, date_trunc('hour', t) + interval '8 hours'
            FROM unnest(%(syms)s::text[]) AS u(s),
                 generate_series(%(end)s::timestamptz - interval '2 hours', %(end)s::timestamptz, interval '1 minute') t
            ORDER BY t, s""", p)
        conn.execute("""
            INSERT INTO open_interest SELECT t, 'binance', s, 12345.678
            FROM unnest(%(syms)s::text[]) AS u(s),
                 generate_series(%(start)s::timestamptz, %(end)s::timestamptz, interval '5 minutes') t
            ORDER BY t, s""", p)
        tiers_repo.store_tiers(conn, "binance", {s: tiers_repo.TierRow(i % 4, 1e4, 5e3, 0.5) for i, s in enumerate(symbols)}, end)
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


def _to_frame(fmt: str, kind: str, body: bytes) -> Any:
    """A response body -> a DataFrame the way a notebook would: orjson (the fastest JSON parser at hand, so
    the comparison is not against a slow JSON path) into polars/pandas, or Arrow IPC into polars/pandas.
    JSON times stay epoch-ms integers (not converted to timestamps): again the cheaper side for JSON."""
    if fmt == "json":
        data = orjson.loads(body)["data"]
        return pl.DataFrame(data) if kind == "polars" else pd.DataFrame(data)
    table = pa.ipc.open_stream(body).read_all()
    return pl.from_arrow(table) if kind == "polars" else table.to_pandas()


def formats(client: httpx.Client, base: str, rows: int, runs: int, api_pid: int, pg_pid: int) -> dict[str, Any]:
    """Arrow vs JSON, the same `rows` trades to a polars and a pandas DataFrame, runs interleaved (JSON, Arrow,
    JSON, ...) so both see the same machine. Per run: wall time of the request + conversion and of the
    conversion alone, and the CPU seconds it cost the API process, PostgreSQL and this process (/proc: what
    contention from other jobs distorts least)."""
    url = f"{base}/api/v1/trades"
    params = {"symbol": BIG, "start": 0, "end": "2100-01-01", "limit": rows, "time_format": "ms"}
    cases = [(fmt, kind) for kind in ("polars", "pandas") for fmt in ("json", "arrow")]
    samples: dict[tuple[str, str], dict[str, list[float]]] = {
        c: {"total": [], "decode": [], "cpu": [], "api_cpu": [], "pg_cpu": []} for c in cases}
    sizes: dict[str, int] = {}
    for _ in range(runs):
        for fmt, kind in cases:
            headers = {"Accept": ARROW} if fmt == "arrow" else {}
            api0, pg0, me0 = common.cpu_seconds(api_pid), common.tree_cpu(pg_pid), time.process_time()
            t0 = time.perf_counter()
            body = client.get(url, params=params, headers=headers).content
            t1 = time.perf_counter()
            df = _to_frame(fmt, kind, body)
            t2 = time.perf_counter()
            api_cpu = common.cpu_seconds(api_pid) - api0
            pg_cpu = common.cpu_delta(pg0, common.tree_cpu(pg_pid))
            assert len(df) == rows, (fmt, kind, len(df))
            sizes[fmt] = len(body)
            got = samples[(fmt, kind)]
            got["total"].append((t2 - t0) * 1000)
            got["decode"].append((t2 - t1) * 1000)
            got["api_cpu"].append(api_cpu * 1000)
            got["pg_cpu"].append(pg_cpu * 1000)
            got["cpu"].append((api_cpu + pg_cpu + time.process_time() - me0) * 1000)
    out: dict[str, Any] = {"rows": rows, "runs": runs, "bytes": sizes}
    for kind in ("polars", "pandas"):
        med = {fmt: {k: statistics.median(v) for k, v in samples[(fmt, kind)].items()} for fmt in ("json", "arrow")}
        out[kind] = {
            **{f"{fmt}_{k}_median_ms": med[fmt][k] for fmt in ("json", "arrow") for k in med[fmt]},
            "request_to_frame_speedup": med["json"]["total"] / med["arrow"]["total"],
            "cpu_speedup": med["json"]["cpu"] / med["arrow"]["cpu"],
            "decode_speedup": med["json"]["decode"] / med["arrow"]["decode"],
        }
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
        base = f"http://127.0.0.1:{port}"
        results: dict[str, Any] = {}
        write_rate = None
        with process([sys.executable, "-m", "collector", "api", "--config", str(cfg), "--dsn", dsn,
                      "--port", str(port)], tmp, tmp / "api.out") as api, httpx.Client(timeout=60) as client:

            def api_up() -> bool:
                try:
                    return httpx.get(f"{base}/api/v1/openapi.json", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            common.wait_for(api_up, 60, "the API to listen")
            load = {"start": os.getloadavg()}  # the machine is shared: every figure is judged beside its load
            if not args.formats_only:
                results, write_rate = under_load(args, tmp, cfg, dsn, base, client, symbols[0])
                load["after_latency"] = os.getloadavg()
            # after the collector stopped: the format comparison is about the API's own cost
            fmts = formats(client, base, args.big_rows, args.format_runs, api.pid, common.postmaster_pid(admin))
            load["after_formats"] = os.getloadavg()
        common.drop_database(admin, dsn)
    return {"params": vars(args), "prefill_rows": counts, "write_rate_rows_per_s": write_rate,
            "latency": results, "arrow_vs_json": fmts, "load_average_1_5_15": load}


def under_load(args: argparse.Namespace, tmp: Path, cfg: Path, dsn: str, base: str, client: httpx.Client,
               sym: str) -> tuple[dict[str, Any], float]:
    """The three target queries, each format, while the real supervisor writes every simulator trade."""
    live_since = datetime.now(UTC)
    with process([sys.executable, str(common.ROOT / "supervisor.py"), "--workers", str(args.workers),
                  "--config", str(cfg)], tmp, tmp / "supervisor.out"):
        common.wait_for(lambda: trades_rows(dsn, live_since) > 0, 120, "the collector's first trades")
        time.sleep(args.warmup)  # let the write rate settle before measuring (not a synchronisation)
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
        for name, (path, params) in targets.items():
            for fmt, headers, check in (("json", {}, json_rows), ("arrow", {"Accept": ARROW}, arrow_rows)):
                results[f"{name}/{fmt}"] = latencies(client, f"{base}/api/v1/{path}", params, headers,
                                                     args.requests, check)
        write_rate = (trades_rows(dsn, live_since) - before_rows) / (time.monotonic() - before_t)
    return results, write_rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small run: 50 symbols, 1 day, 1,000/s, 40 requests")
    p.add_argument("--rate", type=float, default=5000.0, help="aggTrades/s the simulator sends (keep_all)")
    p.add_argument("--symbols", type=int, default=496)
    p.add_argument("--days", type=int, default=2, help="days of 1m candles written ahead")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--requests", type=int, default=300, help="requests per target and format")
    p.add_argument("--big-rows", type=int, default=100_000, help="rows of the Arrow vs JSON comparison")
    p.add_argument("--format-runs", type=int, default=7, help="interleaved runs of each format (medians)")
    p.add_argument("--formats-only", action="store_true", help="only the Arrow vs JSON comparison (no collector)")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of writing before measuring")
    args = p.parse_args()
    common.stop_on_signals()
    if args.quick:
        args.symbols, args.days, args.rate, args.requests, args.warmup = 50, 1, 1000.0, 40, 3.0
        args.big_rows, args.format_runs = min(args.big_rows, 20_000), 3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        out = run(args, Path(tmp))
    if out["latency"]:
        rows = [{"query": k, **v} for k, v in out["latency"].items()]
        common.print_table(rows, [("query", "query/format"), ("rows", "rows"), ("median_ms", "median ms"),
                                  ("p99_ms", "p99 ms"), ("max_ms", "max ms")],
                           f"latency while writing {out['write_rate_rows_per_s']:,.0f} trades rows/s")
    f = out["arrow_vs_json"]
    print("\nLike for like, each path as fast as this code base makes it: both formats are fetched the same way "
          "(whole columns, per venue); JSON then makes a dict per row, encoded by orjson and decoded by orjson "
          "into polars/pandas, times left as epoch-ms integers; Arrow is sent as the columns and read without a "
          "Python object per value. Same rows, same request, same client, runs interleaved.")
    print(f"{args.big_rows:,} trades rows, request to DataFrame (medians of {f['runs']} interleaved runs; "
          f"JSON {f['bytes']['json']:,} B, Arrow {f['bytes']['arrow']:,} B):")
    for kind in ("polars", "pandas"):
        k = f[kind]
        print(f"  {kind}: JSON {k['json_total_median_ms']:.0f} ms (decode {k['json_decode_median_ms']:.0f}; CPU "
              f"{k['json_cpu_median_ms']:.0f}: API {k['json_api_cpu_median_ms']:.0f}, PostgreSQL "
              f"{k['json_pg_cpu_median_ms']:.0f}), Arrow {k['arrow_total_median_ms']:.0f} ms (decode "
              f"{k['arrow_decode_median_ms']:.1f}; CPU {k['arrow_cpu_median_ms']:.0f}: API "
              f"{k['arrow_api_cpu_median_ms']:.0f}, PostgreSQL {k['arrow_pg_cpu_median_ms']:.0f}): "
              f"{k['request_to_frame_speedup']:.1f}x wall, {k['cpu_speedup']:.1f}x CPU, "
              f"{k['decode_speedup']:.0f}x decode alone")
    print("load average (1, 5, 15 min): " + "; ".join(
        f"{k.replace('_', ' ')} {' '.join(f'{x:.2f}' for x in v)}" for k, v in out["load_average_1_5_15"].items()))
    path = common.write_results("api-quick" if args.quick else ("api-formats" if args.formats_only else "api"), out)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
