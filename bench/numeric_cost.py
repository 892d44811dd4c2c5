#!/usr/bin/env python3
"""CPU per value of the NUMERIC encoder (`collector.pipeline.encode.enc_numeric`), compiled and as Python source,
of two revisions side by side, and whether they write the same bytes.

Why: every trade price and amount the row encoder's NumericCache has not seen is encoded by it (a third of them
in keep_all), and its speed differs between the compiled build and the source, so a rewrite is judged in both,
against the revision it replaces, on the same values in the same invocation.

Each revision is a `git archive` snapshot compiled as an install is (common.build_native). Per round, one child
process per (revision, build) times one pass over the timing values (`--values`, trade-like decimals: prices
1-99,999 with 2 decimals and amounts 0.00001-0.99999, fixed seed) after one warm-up pass; the build is chosen by
COLLECTOR_NATIVE (0: the source); the (revision, build) pairs alternate within each round and the order rotates
from round to round, so all of them see the same machine load. Printed: the median and range of ns per value
over `--rounds`, and the sha256 of each encoder's answers to the identity set (the timing values, `--random`
random decimals of 0-30 digits with and without sign and leading zeros, and malformed strings; an error is
written as its message): one hash for all four means byte-identical answers.

    python bench/numeric_cost.py --base 9191ebb             # base vs HEAD, 5 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench import common

ROOT = Path(__file__).resolve().parents[1]

# Runs inside a product tree (cwd), so `collector` is that revision's; argv: seed, timing values, random values.
CHILD = r"""
import hashlib, json, random, sys, time
import collector
from collector.pipeline.encode import enc_numeric
seed, n_time, n_random = (int(x) for x in sys.argv[1:4])
rnd = random.Random(seed)
timing = [f"{rnd.randint(1, 99999)}.{rnd.randint(0, 99):02d}" for _ in range(n_time // 2)]
timing += [f"0.{rnd.randint(1, 99999):05d}" for _ in range(n_time - len(timing))]
odd = ["0", "0.0", "-0", "+1", "1", "10000", "0.0001", "0.00010", "00012.3400", "99999999.99999999", "-5.5",
       "1.", ".5", "", "-", "+", "1.2.3", "abc", "1e5", " 1", "\u0661\u0662", "0000", "0.0000", "-0.000", "1_000",
       "\u00b2", "12345678901234567890.123456789", "1" * 201]
rand = []
for _ in range(n_random):
    s = str(rnd.randint(0, 10 ** rnd.randint(0, 12)))
    if rnd.random() < 0.3:
        s = "0" * rnd.randint(0, 3) + s
    if rnd.random() < 0.8:
        s += "." + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 10)))
    if rnd.random() < 0.2:
        s = rnd.choice("-+") + s
    rand.append(s)
h = hashlib.sha256()
for s in timing + odd + rand:
    try:
        h.update(enc_numeric(s))
    except ValueError as e:
        h.update(b"E" + str(e).encode())
    h.update(b"\0")
for v in timing:  # warm-up: caches, branch predictors, the allocator's arenas
    enc_numeric(v)
t0 = time.perf_counter()
for v in timing:
    enc_numeric(v)
ns = (time.perf_counter() - t0) / len(timing) * 1e9
print(json.dumps({"ns": ns, "sha": h.hexdigest()[:16], "compiled": collector.native.STATUS.compiled,
                  "values": len(timing + odd + rand)}))
"""


@contextlib.contextmanager
def snapshot(ref: str) -> Iterator[tuple[Path, str]]:
    """The product at git `ref` in a temp dir, compiled as an install is; (dir, "<short sha> (status)")."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-numeric-") as d:
        common.extract_revision(ref, Path(d))
        yield Path(d), f"{sha} ({common.build_native(Path(d))})"


def one_pass(tree: Path, compiled: bool, a: argparse.Namespace) -> dict:
    """One child's pass in `tree`; SystemExit with its stderr when it fails or runs the wrong build."""
    env = dict(os.environ, COLLECTOR_NATIVE="1" if compiled else "0")
    done = subprocess.run([sys.executable, "-c", CHILD, str(a.seed), str(a.values), str(a.random)], cwd=tree,
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: the timing child failed: {done.stderr.strip()[-2000:]}")
    out: dict = json.loads(done.stdout)
    if out["compiled"] != compiled:
        raise SystemExit(f"{tree}: asked for the {'compiled' if compiled else 'source'} build, the child ran the "
                         f"other (is the tree compiled? see its status line)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git ref of the version to compare with")
    p.add_argument("--head", default="HEAD", help="git ref of the version under test")
    p.add_argument("--rounds", type=int, default=5, help="passes per (revision, build), alternating")
    p.add_argument("--values", type=int, default=150_000, help="trade-like values timed per pass")
    p.add_argument("--random", type=int, default=200_000, help="random decimals added to the identity set")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    common.stop_on_signals()
    with snapshot(a.base) as (base_dir, base), snapshot(a.head) as (head_dir, head):
        print(f"command: {' '.join(sys.argv)} | base: {a.base} {base} | head: {a.head} {head} | reference loop "
              f"{common.speed_probe():.0f} ms CPU", flush=True)
        cells = [(name, tree, compiled) for name, tree in (("base", base_dir), ("head", head_dir))
                 for compiled in (True, False)]
        passes: dict[tuple[str, bool], list[dict]] = {(n, c): [] for n, _, c in cells}
        for r in range(a.rounds):
            for name, tree, compiled in cells[r % len(cells):] + cells[:r % len(cells)]:
                passes[(name, compiled)].append(one_pass(tree, compiled, a))
        print(f"  reference loop at the end {common.speed_probe():.0f} ms CPU")
    rows = []
    for (name, compiled), ps in passes.items():
        ns = [x["ns"] for x in ps]
        rows.append({"version": name, "build": "compiled" if compiled else "source", "ns": statistics.median(ns),
                     "range": f"{min(ns):.0f}-{max(ns):.0f}", "sha": ps[0]["sha"],
                     "stable": all(x["sha"] == ps[0]["sha"] for x in ps)})
    common.print_table(rows, [("version", "version"), ("build", "build"), ("ns", "ns/value (median)"),
                              ("range", "range"), ("sha", "identity sha256"), ("stable", "same every pass")],
                       f"enc_numeric, {a.values:,} trade-like values per pass, {a.rounds} rounds")
    values = passes[("head", True)][0]["values"]
    same = len({r["sha"] for r in rows}) == 1 and all(r["stable"] for r in rows)
    print(f"  identity set {values:,} values: {'byte-identical in all four' if same else 'DIFFERENT answers'}")
    for build in ("compiled", "source"):
        b, h = (next(r["ns"] for r in rows if r["version"] == v and r["build"] == build) for v in ("base", "head"))
        print(f"  {build}: head / base {h / b:.2f} ({b:.0f} -> {h:.0f} ns/value)")
    path = common.write_results("numeric_cost", {"command": " ".join(sys.argv), "base": base, "head": head,
                                                 "rows": rows, "identical": same, "identity_values": values,
                                                 "passes": {f"{n} {'compiled' if c else 'source'}": ps
                                                            for (n, c), ps in passes.items()},
                                                 "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
