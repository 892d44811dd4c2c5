#!/usr/bin/env python3
"""Two trees' read APIs on one database, requests alternating: a paired before/after of one Arrow page.

bench/api.py's format comparison runs one tree at a time, so on a shared machine two runs see different
load; here both trees' `python -m collector api` serve the same prefilled database (bench/api.py's
prefill: `--symbols` simulator-free symbols, a day of candles, and `--big-rows` trades of one symbol), and
each run requests the same `--big-rows` Arrow page from one, then the other. Per request: time to the first
body byte, to the whole body, to a polars (or `--frame pandas`) DataFrame, and the CPU it cost that tree's API process and
PostgreSQL (/proc). Medians over `--runs` (the first, warming up, is dropped).

    python bench/api_pair.py --before DIR --after DIR [--runs 15] [--big-rows 100000] [--symbols 50]
                               [--frame polars|pandas]

A tree is a directory holding `collector/` (e.g. `git archive REV | tar -x -C DIR`); each API process
runs with PYTHONPATH=DIR, this venv's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import httpx
import polars as pl
import pyarrow as pa

from bench import common
from bench.api import ARROW, BIG, _free_port, prefill


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True, help="tree of the code before")
    p.add_argument("--after", required=True, help="tree of the code after")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--big-rows", type=int, default=100_000)
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--frame", choices=("polars", "pandas"), default="polars", help="the DataFrame made")
    args = p.parse_args()
    common.stop_on_signals()
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    with common.throwaway_postgres() as admin, tempfile.TemporaryDirectory(prefix="bench-api-pair-") as tmp:
        dsn = common.new_database(admin, "pair")
        prefill(dsn, [f"S{i}USDT" for i in range(args.symbols)], 1, args.big_rows, datetime.now(UTC))
        cfg = Path(tmp) / "main.yaml"
        cfg.write_text(json.dumps({"database": {"url": dsn}}))
        procs: dict[str, subprocess.Popen[bytes]] = {}
        ports = {k: _free_port() for k in trees}
        try:
            for k, tree in trees.items():
                with open(Path(tmp) / f"{k}.log", "wb") as log:
                    procs[k] = subprocess.Popen(
                        [sys.executable, "-m", "collector", "api", "--config", str(cfg), "--dsn", dsn,
                         "--port", str(ports[k])], cwd=tmp, env={**os.environ, "PYTHONPATH": tree},
                        stdout=log, stderr=subprocess.STDOUT)
            for k in trees:
                def up(k: str = k) -> bool:
                    if procs[k].poll() is not None:
                        raise RuntimeError((Path(tmp) / f"{k}.log").read_text()[-2000:])
                    try:
                        return httpx.get(f"http://127.0.0.1:{ports[k]}/api/v1/openapi.json").status_code == 200
                    except httpx.TransportError:
                        return False
                common.wait_for(up, 60, f"the {k} API")
            pg = common.postmaster_pid(admin)
            params = {"symbol": BIG, "start": 0, "end": "2100-01-01", "limit": args.big_rows}
            samples: dict[str, dict[str, list[float]]] = {
                k: {"first_byte": [], "body": [], "frame": [], "api_cpu": [], "pg_cpu": []} for k in trees}
            load0 = os.getloadavg()
            with httpx.Client(timeout=60) as client:
                for run in range(args.runs + 1):
                    for k in trees:
                        api0, pg0 = common.cpu_seconds(procs[k].pid), common.tree_cpu(pg)
                        t0 = time.perf_counter()
                        with client.stream("GET", f"http://127.0.0.1:{ports[k]}/api/v1/trades", params=params,
                                           headers={"Accept": ARROW}) as r:
                            raw = r.iter_raw()
                            first = next(raw)
                            t1 = time.perf_counter()
                            body = first + b"".join(raw)
                        t2 = time.perf_counter()
                        table = pa.ipc.open_stream(body).read_all()
                        df = pl.from_arrow(table) if args.frame == "polars" else table.to_pandas()
                        t3 = time.perf_counter()
                        api_cpu = common.cpu_seconds(procs[k].pid) - api0
                        pg_cpu = common.cpu_delta(pg0, common.tree_cpu(pg))
                        assert len(df) == args.big_rows, (k, len(df))
                        if run:  # the first run warms both up
                            s = samples[k]
                            s["first_byte"].append((t1 - t0) * 1000)
                            s["body"].append((t2 - t0) * 1000)
                            s["frame"].append((t3 - t0) * 1000)
                            s["api_cpu"].append(api_cpu * 1000)
                            s["pg_cpu"].append(pg_cpu * 1000)
            load1 = os.getloadavg()
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=30)
        common.drop_database(admin, dsn)
    print(f"{args.big_rows:,} trades as Arrow to {args.frame}, medians of {args.runs} alternating requests "
          f"(ms; CPU from /proc in 10 ms ticks):")
    for k, tree in trees.items():
        med = {m: statistics.median(v) for m, v in samples[k].items()}
        print(f"  {k:6} {tree}: first byte {med['first_byte']:.0f}, body {med['body']:.0f}, DataFrame "
              f"{med['frame']:.0f}; API CPU {med['api_cpu']:.0f}, PostgreSQL CPU {med['pg_cpu']:.0f}")
    print(f"load average (1, 5, 15 min): start {' '.join(f'{x:.2f}' for x in load0)}; "
          f"end {' '.join(f'{x:.2f}' for x in load1)}")


if __name__ == "__main__":
    main()
