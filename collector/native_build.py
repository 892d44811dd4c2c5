"""Compile collector.native's MODULES with mypyc into collector/.native/: `python -m collector.native_build`.

Run by `make native`, which `make run` and `make test` run first (it builds again whenever a source the build
covers changed). Needs mypy and setuptools (the
`native` extra; `dev` has both) and a C compiler; without them it says so in one line and exits 1, and the
collector runs its Python source, which does the same work at more CPU per message (collector.native).

The build goes to a new folder that replaces collector/.native/ only once complete, with the manifest that
collector.native checks: running processes keep the extensions they loaded, and a failed build leaves the
previous one (or none) in place.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from collector.native import (
    ENV,
    GROUP,
    MANIFEST,
    MODULES,
    NATIVE_DIR,
    PACKAGE_DIR,
    check,
    digest,
    extension_path,
    source_path,
)


def covered_sources(modules: tuple[str, ...] = MODULES, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The compiled modules' files and every collector module they import, directly or not: the files whose
    change makes the build stale (compiled code was generated against their types)."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = source_path(module, package_dir)
        if not path.is_file():
            path = path.with_suffix("") / "__init__.py"
        if not path.is_file():
            continue
        seen[module] = path
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            todo.extend(n for n in names if n.split(".")[0] == "collector")
    # each package's __init__ on the way runs too
    for module in list(seen):
        parts = module.split(".")
        for i in range(1, len(parts)):
            init = package_dir.joinpath(*parts[1:i], "__init__.py")
            seen.setdefault(".".join(parts[:i]), init)
    return sorted(set(seen.values()))


def build(native_dir: Path = NATIVE_DIR) -> str:
    """Compile MODULES into `native_dir` (replaced when the build is complete); returns a line saying what was
    built. SystemExit with one line when a tool is missing or the compiler fails (its output printed first)."""
    missing = [m for m in ("mypyc", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not installed: pip install -e '.[native]' "
                         "(the collector runs its Python source meanwhile)")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        raise SystemExit(f"no C compiler ({cc}) on PATH (mypyc builds C extensions; the collector runs its Python source)")
    started = time.monotonic()
    root = PACKAGE_DIR.parent
    # Hashed before compiling: a source edited during the build must make the build stale, not be recorded as
    # what the extensions were compiled from.
    sources = {str(p.relative_to(root)): digest(p) for p in covered_sources()}
    with tempfile.TemporaryDirectory(prefix="collector-native-") as tmp:
        # A child process: setuptools and mypyc leave global state (distutils' compiler, mypy's caches) that a
        # long-lived caller should not inherit, and a compiler crash must not take the caller down.
        script = (
            "import sys, setuptools\n"
            "from mypyc.build import mypycify\n"
            "paths, group, tmp = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]\n"
            "exts = mypycify(paths, group_name=group, target_dir=tmp + '/c')\n"
            "setuptools.setup(name='collector-native', ext_modules=exts, script_args=['-q', 'build_ext',"
            " '--build-lib', tmp + '/lib', '--build-temp', tmp + '/obj'])\n"
        )
        files = [str(source_path(m)) for m in MODULES]
        done = subprocess.run([sys.executable, "-c", script, *files, GROUP, tmp], cwd=tmp, capture_output=True,
                              text=True)
        if done.returncode:
            sys.stderr.write(done.stdout[-6000:] + done.stderr[-6000:])
            raise SystemExit(f"mypyc failed (exit {done.returncode}; output above); the collector runs its "
                             "Python source")
        staging = native_dir.with_name(native_dir.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        lib = Path(tmp) / "lib" / "collector"
        for module in MODULES:
            target = extension_path(module, staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(extension_path(module, lib), target)
        group_lib = GROUP.split(".", 1)[1] + "__mypyc" + sysconfig.get_config_var("EXT_SUFFIX")
        shutil.copy2(lib / group_lib, staging / group_lib)
    (staging / MANIFEST).write_text(json.dumps({
        "modules": list(MODULES), "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"), "sources": sources,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": sys.version.split()[0],
    }, indent=1) + "\n")
    old = native_dir.with_name(native_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if native_dir.exists():
        native_dir.rename(old)
    staging.rename(native_dir)
    shutil.rmtree(old, ignore_errors=True)
    return (f"compiled {len(MODULES)} modules with mypyc into {native_dir} in {time.monotonic() - started:.0f} s "
            f"({len(sources)} sources covered)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m collector.native_build", description=__doc__.splitlines()[0])
    p.add_argument("--if-stale", action="store_true",
                   help="build only when collector.native would not run the compiled modules (make's rule)")
    p.add_argument("--optional", action="store_true",
                   help="a failed build prints its reason and exits 0: the Python source runs instead")
    p.add_argument("--remove", action="store_true", help="remove the compiled modules (the source runs)")
    args = p.parse_args(argv)
    if args.remove:
        shutil.rmtree(NATIVE_DIR, ignore_errors=True)
        print(f"removed {NATIVE_DIR}")
        return 0
    if args.if_stale:
        status = check()
        if status.compiled or os.environ.get(ENV) == "0":
            print(f"collector: {status.detail}")
            return 0
    try:
        print(build())
    except SystemExit as e:
        if not args.optional:
            raise
        print(f"collector: not compiled: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
