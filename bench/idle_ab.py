#!/usr/bin/env python3
"""Idle CPU of two or more product trees in one invocation: the shipped configuration at 0 aggTrades/s.

Why apart from bench/shipped.py: issue 12's idle bound (<= 0.01 cores) is a few thousandths of a core, less
than what one sitting of this shared machine drifts from another (the same tree measured 0.029 and 0.015
within 25 minutes), so two trees compare only in sessions that alternate within one invocation. Each tree is a
git revision (`git archive`), a revision with patches (`REV+bench/experiments/X.patch`) or a directory. One preparation (`bench.shipped.first_live_tiers`, on the first
tree: the shipped configuration at `--rate` until it stores tiers from `--stored-tiers` seconds of live
statistics) gives every session the same stored tiers, so each starts as a restart does, past the warm-up; then
`--pairs` rounds of one idle `bench.shipped.run_session` per tree (streams open, mark prices every 3 s, open
interest polled), the order reversed every other round. Reported per session and, as medians, per tree: the
collector's CPU cores and, per role (supervisor, writer, the workers summed), cores and wake-ups a second. The
reference loop (`common.speed_probe`) is printed at the start and the end: absolute figures compare with other
sittings only beside it; the trees compare with each other within the run.

    python bench/idle_ab.py main HEAD                     # 3 rounds of 2 sessions after a preparation: ~11 min
    python bench/idle_ab.py 4087c8e main HEAD --pairs 3   # three trees
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench import common, shipped
from bench.ab import tree


def roles(session: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(cores, wake-ups/s) per role of one run_session result, the workers summed."""
    out: dict[str, list[float]] = {}
    for p in session["processes"].values():
        acc = out.setdefault("workers" if p["name"].startswith("worker") else p["name"], [0.0, 0.0])
        acc[0] += p["cpu_cores"]
        acc[1] += p["wakeups_s"]
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="+", help="git revisions (REV+PATCH...: with patches applied, see bench/ab.py) or directories (at least two)")
    p.add_argument("--pairs", type=int, default=3, help="rounds of one session per tree")
    p.add_argument("--workers", type=int, default=shipped.WORKERS)
    p.add_argument("--symbols", type=int, default=shipped.SYMBOLS)
    p.add_argument("--warmup", type=float, default=30.0, help="seconds from connected to the window")
    p.add_argument("--window", type=float, default=60.0, help="measured seconds per session")
    p.add_argument("--rate", type=float, default=shipped.RATE, help="aggTrades/s of the preparation")
    p.add_argument("--stored-tiers", type=float, default=60.0, metavar="SECONDS",
                   help="seconds of live statistics the preparation's tiers come from")
    p.add_argument("--server", default="fast", choices=list(common.SERVERS))
    a = p.parse_args()
    if len(a.trees) < 2:
        p.error("give at least two trees to compare")
    if a.pairs < 1 or a.window <= 0 or a.stored_tiers <= 0 or a.rate <= 0:
        p.error("--pairs, --window, --stored-tiers and --rate must be positive")
    common.stop_on_signals()
    t_start = time.monotonic()
    sessions: dict[str, list[dict[str, Any]]] = {t: [] for t in a.trees}
    with contextlib.ExitStack() as stack, common.throwaway_postgres(a.server) as admin:
        dirs = {t: stack.enter_context(tree(t)) for t in a.trees}
        print(f"{common.conditions(sys.argv, ', '.join(a.trees), a.server)}", flush=True)
        t0 = time.monotonic()
        tiers = shipped.first_live_tiers(admin, dirs[a.trees[0]], a.rate, a.workers, a.symbols, a.stored_tiers)
        print(f"stored tiers: {len(tiers)} symbols (preparation {time.monotonic() - t0:.0f} s)", flush=True)
        for i in range(a.pairs):
            for name in a.trees if i % 2 == 0 else a.trees[::-1]:
                r = shipped.run_session(admin, dirs[name], 0.0, a.workers, a.warmup, a.window, a.symbols, None,
                                        tiers)
                r["roles"] = roles(r)
                sessions[name].append(r)
                print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC {name}: {r['cpu_cores']:.4f} cores, "
                      f"sustained {r['sustained']}; " + ", ".join(
                          f"{k} {c:.4f} cores {w:.1f} wake-ups/s" for k, (c, w) in sorted(r["roles"].items())),
                      flush=True)
    print(f"\nidle, N={a.workers}, {a.symbols} symbols, {a.pairs} sessions per tree of {a.warmup:g} s warm-up + "
          f"{a.window:g} s window on stored tiers; medians")
    summary = {}
    for name, rs in sessions.items():
        per_role = {k: (statistics.median(r["roles"][k][0] for r in rs if k in r["roles"]),
                        statistics.median(r["roles"][k][1] for r in rs if k in r["roles"]))
                    for k in sorted({k for r in rs for k in r["roles"]})}
        summary[name] = {"cpu_cores": statistics.median(r["cpu_cores"] for r in rs),
                         "sessions": [round(r["cpu_cores"], 4) for r in rs],
                         "sustained": all(r["sustained"] for r in rs),
                         "roles": {k: {"cpu_cores": c, "wakeups_s": w} for k, (c, w) in per_role.items()}}
        print(f"{name}: {summary[name]['cpu_cores']:.4f} cores ({', '.join(f'{x:.4f}' for x in summary[name]['sessions'])})"
              f"; " + ", ".join(f"{k} {c:.4f}/{w:.1f}" for k, (c, w) in per_role.items())
              + f"; sustained {summary[name]['sustained']}")
    path = common.write_results("idle_ab", {"command": " ".join(sys.argv), "summary": summary,
                                            "sessions": sessions, "elapsed_s": round(time.monotonic() - t_start)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
