#!/usr/bin/env python3
"""A snapshot of the product with its hot pipeline modules compiled by mypyc: an experiment, not what ships.

Why: issue 12's keep_all target (>= 3x less CPU per message than the stock peer at 5,000-20,000/s) is short by
~20-30%, and the Python left on the keep path has been trimmed to where a trim saves ~1%. The product package
already passes `mypy --strict`, which is what mypyc compiles from: this script measures what compiling it
would give before anyone builds a release around it. The snapshot is a directory the other scripts take as a
product tree:

    python bench/compiled_tree.py /tmp/compiled
    python bench/ab.py HEAD /tmp/compiled --rate 5000 --keep-all --workers 1 --reps 3
    python bench/throughput.py --src /tmp/compiled --rates 5000 20000 --workers 1 --modes keep_all
    PYTHONPATH=/tmp/compiled python bench/venue_cost.py --keep-all --frames DIR

A compiled module's extension (`router.cpython-313-*.so` beside `router.py`) is what Python imports while it
is there, so editing the snapshot's .py files changes nothing until this script is run again. Needs mypy (the
dev extra), setuptools (the bench extra) and a C compiler.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parents[1]
# The Binance keep path: Pipeline.on_trade and _keep_trade, the row encoder, the filter, the activity windows
# and the batch builder (bench/README.md "Compiling the pipeline with mypyc").
MODULES = ("collector/pipeline/router.py", "collector/pipeline/encode.py", "collector/pipeline/trade_filter.py",
           "collector/pipeline/activity.py", "collector/pipeline/batches.py")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="where the snapshot goes (must not exist, or be empty)")
    p.add_argument("--rev", default="HEAD", help="git revision to snapshot (default %(default)s)")
    p.add_argument("--modules", nargs="+", default=list(MODULES), metavar="PATH",
                   help="modules to compile, paths from the repository root (default: the keep path's five)")
    args = p.parse_args()
    missing = [m for m in ("mypyc", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not installed: pip install -e '.[dev,bench]'")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise SystemExit("no C compiler (cc or gcc) on PATH: mypyc builds C extensions")
    if args.dir.exists() and any(args.dir.iterdir()):
        raise SystemExit(f"{args.dir}: exists and is not empty")
    args.dir.mkdir(parents=True, exist_ok=True)
    common.extract_revision(args.rev, args.dir)
    absent = [m for m in args.modules if not (args.dir / m).is_file()]
    if absent:
        raise SystemExit(f"not in {args.rev}: {', '.join(absent)}")
    built = subprocess.run([sys.executable, "-m", "mypyc", *args.modules], cwd=args.dir, capture_output=True,
                           text=True)
    if built.returncode:
        sys.stderr.write(built.stdout[-4000:] + built.stderr[-4000:])
        raise SystemExit(f"mypyc failed (exit {built.returncode}); its output is above")
    shutil.rmtree(args.dir / "build", ignore_errors=True)
    extensions = sorted(str(x.relative_to(args.dir)) for x in args.dir.rglob("*.so"))
    commit = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"{args.dir}: {args.rev} ({commit}) with {len(args.modules)} modules compiled by mypyc; "
          f"extensions: {', '.join(extensions)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
