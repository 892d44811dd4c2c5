#!/usr/bin/env python3
"""Event-to-commit latency and its CPU price, two versions of the product side by side (issue 12).

For each (aggTrades/s, N) point, sessions of bench/throughput.py's `run_ours` (fresh simulator, database and
supervisor; filtered mode unless --keep-all) alternate between a base git ref and the head (`git archive` of
each, so nobody's half-edited tree is measured), `--repeats` times, so both versions see the same machine
load. Per session: p50/p99 event-to-commit of trades rows (the row's commit time in PostgreSQL, from
track_commit_timestamp, minus the exchange's event time), COPY transactions per second committed in the
windows, CPU of every collector process per stored row and per second, and the writer's and the workers'
CPU per received message apart. Printed: every session, then the medians per (point, version).

    python bench/latency.py --base lead                       # 1,260/s N=8, 5,000/s and 20,000/s N=2, x3
    python bench/latency.py --base lead --points 1260:8 --repeats 1 --window 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench import common
from bench.throughput import run_ours

ROOT = Path(__file__).resolve().parents[1]
COLS = [("version", "version"), ("rate", "aggTrades/s"), ("workers", "N"), ("lat_p50_ms", "p50 ms"),
        ("lat_p99_ms", "p99 ms"), ("copies_s", "COPY/s"), ("cpu_us_per_row", "CPU us/row"),
        ("cpu_frac", "CPU cores"), ("writer_us_msg", "writer us/msg"), ("workers_us_msg", "workers us/msg"),
        ("pg_cpu_frac", "PG cores"), ("sustained", "sustained")]


def by_role(per_process: dict[str, dict]) -> dict[str, float]:
    """CPU us per received message of the writer and of the workers together (run_ours' per-process table)."""
    out = {"writer_us_msg": 0.0, "workers_us_msg": 0.0}
    for name, p in per_process.items():
        key = "writer_us_msg" if name.startswith("writer") else "workers_us_msg" if name.startswith("worker") else None
        if key is not None:
            out[key] += p["cpu_us_per_msg"] or 0.0
    return out


@contextlib.contextmanager
def snapshot(ref: str) -> Iterator[tuple[Path, str]]:
    """The product at git `ref`, extracted into a temp dir and compiled as an install is (common.build_native);
    (dir, "ref <short sha> (status)")."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as d:
        common.extract_revision(ref, Path(d))
        yield Path(d), f"{ref} {sha} ({common.build_native(Path(d))})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="lead", help="git ref of the version to compare with")
    p.add_argument("--head", default="HEAD", help="git ref of the version under test")
    p.add_argument("--points", nargs="+", default=["1260:8", "5000:2", "20000:2"], help="RATE:N ...")
    p.add_argument("--repeats", type=int, default=3, help="sessions per (point, version), interleaved")
    p.add_argument("--runs", type=int, default=3, help="windows per session")
    p.add_argument("--window", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--keep-all", action="store_true")
    p.add_argument("--server", default="fast", choices=list(common.SERVERS))
    a = p.parse_args()
    common.stop_on_signals()
    points = [(float(r), int(n)) for r, n in (x.split(":") for x in a.points)]
    t0 = time.monotonic()
    rows: list[dict] = []
    with snapshot(a.base) as (base_dir, base), snapshot(a.head) as (head_dir, head), \
            common.throwaway_postgres(a.server) as admin:
        print(f"command: {' '.join(sys.argv)} | base: {base} | head: {head} | server: {common.SERVERS[a.server]}"
              f" | {'keep_all' if a.keep_all else 'filtered'}")
        for i in range(a.repeats):
            for rate, n in points:
                order = [(base, base_dir), (head, head_dir)]
                for version, src in (order if i % 2 == 0 else order[::-1]):
                    r = run_ours(admin, src, rate, n, a.keep_all, a.runs, a.window, a.warmup)
                    rows.append({k: r[k] for k, _ in COLS if k in r} | by_role(r["per_process"])
                                | {"version": version})
                    common.print_table(rows[-1:], COLS)
    summary = []
    for rate, n in points:
        for version in (base, head):
            mine = [r for r in rows if r["rate"] == rate and r["workers"] == n and r["version"] == version]
            summary.append({"version": version, "rate": rate, "workers": n,
                            "sustained": all(r["sustained"] for r in mine)}
                           | {k: common.median([r[k] for r in mine]) for k, _ in COLS[3:-1]})
    print(f"\nmedians of {a.repeats} sessions each ({time.monotonic() - t0:.0f} s):")
    common.print_table(summary, COLS)
    out = ROOT / "bench" / "results" / f"latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"argv": sys.argv, "sessions": rows, "medians": summary}, indent=1))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
