#!/usr/bin/env python3
"""A snapshot of the product with a chosen set of modules compiled by mypyc in place: for trying sets beyond
the product's own.

Why: the product compiles collector.native's MODULES (the per-trade path) into collector/.native/, which every
benchmark snapshot gets (common.build_native). Whether another module is worth adding to that group is
measured here first, without touching the product: this compiles exactly the `--modules` given, beside their
sources, in a snapshot that has no collector/.native/ build (so collector.native leaves the search paths alone
and Python imports the in-place extensions). The snapshot is a directory the other scripts take as a product
tree:

    python bench/compiled_tree.py /tmp/compiled --modules collector/pipeline/router.py ... collector/pipeline/limits.py
    python bench/ab.py HEAD /tmp/compiled --rate 5000 --keep-all --workers 1 --reps 3
    python bench/throughput.py --src /tmp/compiled --rates 5000 20000 --workers 1 --modes keep_all
    PYTHONPATH=/tmp/compiled python bench/venue_cost.py --keep-all --frames DIR

A compiled module's extension (`router.cpython-313-*.so` beside `router.py`) is what Python imports while it
is there, so editing the snapshot's .py files changes nothing until this script is run again. Needs mypy and
setuptools (the native extra, in dev) and a C compiler.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import common

from collector import native

ROOT = Path(__file__).resolve().parents[1]
# Default: the product's group (collector.native.MODULES), as paths from the repository root.
MODULES = tuple(str(native.source_path(m).relative_to(ROOT)) for m in native.MODULES)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="where the snapshot goes (must not exist, or be empty)")
    p.add_argument("--rev", default="HEAD", help="git revision to snapshot (default %(default)s)")
    p.add_argument("--modules", nargs="+", default=list(MODULES), metavar="PATH",
                   help="modules to compile, paths from the repository root (default: the product's group)")
    args = p.parse_args()
    missing = [m for m in ("mypyc", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not installed: pip install -e '.[native]'")
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
