#!/usr/bin/env python3
"""Before/after CPU per message of two product trees in one invocation: sessions of `bench/throughput.py`'s
`run_ours` (simulator + supervisor + database, the exact-count "sustained" rule) alternating A, B, B, A, A, B...
on one throwaway PostgreSQL server, so that load from others on a shared machine falls on both alike.

Each tree is a git revision (snapshotted with `git archive`, like throughput.py's default), a revision with
patches applied (`REV+bench/experiments/X.patch`: an experiment that was not kept) or a directory.
Reported per tree: medians over `--reps` sessions of the CPU µs per received message of all collector
processes, and of the workers alone (each session's own value is already a median of its `--runs` windows), and
of the workers' and the writer's wake-ups a second (voluntary context switches, `common.wakeups`).
`--profile PREFIX` also records the busiest worker of every session with py-spy (`pip install py-spy`; a
bench tool, not a dependency) as collapsed stacks, PREFIX-<tree>-<rep>.txt.

    python bench/ab.py lead HEAD --rate 20000 --reps 3
    python bench/ab.py lead . --rate 10000 --keep-all
    python bench/ab.py HEAD HEAD+bench/experiments/sleep-after-read.patch --rate 1260 --workers 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import psutil

from bench import common
from bench.throughput import run_ours

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def tree(spec: str) -> Iterator[Path]:
    """A directory holding `spec`: the directory itself if it is one, else a `git archive` snapshot of a
    revision, with the patches named after it applied: `REV+bench/experiments/X.patch[+...]` (paths from the
    repository root, or absolute), and its hot modules compiled as an install's are (common.build_native; a
    directory is taken as it is, compiled or not). Why patches: an experiment that was tried and not kept stays reproducible
    from a clean clone (bench/experiments/README.md) without its code living in the product."""
    if Path(spec).is_dir():
        yield Path(spec).resolve()
        return
    rev, *patches = spec.split("+")
    missing = [p for p in patches if not (ROOT / p).is_file()]
    if missing:
        raise SystemExit(f"{spec}: no such patch file: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as d:
        common.extract_revision(rev, Path(d))
        for patch in patches:
            applied = subprocess.run(["git", "apply", str((ROOT / patch).resolve())], cwd=d, capture_output=True,
                                     text=True)
            if applied.returncode:
                raise SystemExit(f"{spec}: {patch} does not apply to {rev}: {applied.stderr.strip()}")
        print(f"{spec}: {common.build_native(Path(d))}", flush=True)
        yield Path(d)


def _workers(sup: psutil.Process) -> list[psutil.Process]:
    return [k for k in sup.children(recursive=True) if "worker" in " ".join(k.cmdline())]


def profile_busiest_worker(settle: float, seconds: int, out: str) -> None:
    """Find the session's supervisor (run from a bench-throughput temp dir), wait for its workers and the
    warm-up, then py-spy the one that has used the most CPU."""
    deadline = time.time() + 120
    sup = None
    while sup is None and time.time() < deadline:
        for p in psutil.process_iter(["cmdline", "cwd"]):
            with contextlib.suppress(psutil.Error):
                if ("supervisor" in " ".join(p.info["cmdline"] or [])
                        and (p.info["cwd"] or "").startswith(tempfile.gettempdir() + "/bench-throughput-")):
                    sup = p
        time.sleep(0.5)
    if sup is None:
        print("profile: no supervisor found", flush=True)
        return
    while not _workers(sup) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(settle)
    busiest = max(_workers(sup), key=lambda k: sum(k.cpu_times()[:2]))
    subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(busiest.pid), "-d",
                    str(seconds), "-r", "250", "--nonblocking", "-f", "raw", "-o", out],
                   stdout=subprocess.DEVNULL, check=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs=2, help="git revisions (REV+PATCH...: with patches applied) or directories: before, after")
    p.add_argument("--rate", type=float, default=20000.0, help="offered aggTrades/s")
    p.add_argument("--keep-all", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=3, help="sessions per tree")
    p.add_argument("--runs", type=int, default=3, help="windows per session")
    p.add_argument("--window", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=6.0)
    p.add_argument("--symbols", type=int, default=496)
    p.add_argument("--server", default="fast", choices=list(common.SERVERS))
    p.add_argument("--profile", default=None, metavar="PREFIX")
    a = p.parse_args()
    common.stop_on_signals()
    results: dict[str, list[dict]] = {t: [] for t in a.trees}
    with contextlib.ExitStack() as stack, common.throwaway_postgres(a.server) as admin:
        dirs = {t: stack.enter_context(tree(t)) for t in a.trees}
        print(f"command: {' '.join(sys.argv)} | server: {common.SERVERS[a.server]}", flush=True)
        for rep in range(a.reps):
            for name in a.trees if rep % 2 == 0 else a.trees[::-1]:
                prof = None
                if a.profile:
                    out = f"{a.profile}-{Path(name).name or 'tree'}-{rep}.txt"
                    prof = threading.Thread(target=profile_busiest_worker,
                                            args=(a.warmup + 3, int(a.runs * a.window), out))
                    prof.start()
                try:
                    r = run_ours(admin, dirs[name], a.rate, a.workers, a.keep_all, a.runs, a.window, a.warmup,
                                 a.symbols)
                except Exception as e:  # one failed session (e.g. the simulator cut a slow consumer) is reported
                    print(f"{name}: session failed: {type(e).__name__}: {e}", flush=True)
                    continue
                finally:
                    if prof is not None:
                        prof.join()
                workers = sum(v["cpu_us_per_msg"] or 0.0 for k, v in r["per_process"].items() if "worker" in k)
                woke = {role: sum(v["wakeups_s"] or 0.0 for k, v in r["per_process"].items() if role in k)
                        for role in ("worker", "writer")}
                row = {"total": r["cpu_us_per_msg"], "workers": workers, "workers_wakeups_s": woke["worker"],
                       "writer_wakeups_s": woke["writer"], "recv": r["received_msgs_s"],
                       "p99_ms": r["lat_p99_ms"], "sustained": r["sustained"], "exact": r["exact"]}
                results[name].append(row)
                print(f"{name}: {json.dumps(row)}", flush=True)
    mode = "keep_all" if a.keep_all else "filtered"
    print(f"\n{mode}, {a.rate:,.0f} aggTrades/s, N={a.workers}; CPU µs per received message, medians of sessions")
    for name, rows in results.items():
        measured = [r for r in rows if r["total"] is not None]  # a failed session has no CPU figure
        if not measured:
            print(f"{name}: no session measured ({len(rows)} failed: see their rows above)")
            continue
        print(f"{name}: all processes {common.median([r['total'] for r in measured]):.2f}, workers "
              f"{common.median([r['workers'] for r in measured]):.2f}; wake-ups/s: workers "
              f"{common.median([r['workers_wakeups_s'] for r in measured]):.1f}, writer "
              f"{common.median([r['writer_wakeups_s'] for r in measured]):.1f}; sustained "
              f"{sum(r['sustained'] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
