"""Which implementation of the hot pipeline modules a process runs: mypyc-compiled extensions, or the source.

Why compiled: the keep path (decode -> Pipeline.on_trade -> filter -> row encoder) is Python run for every
trade, and the same source compiled by mypyc costs less CPU per message: 19% across the collector's processes
in keep_all at 5,000 trades/s, 22% in the worker (bench/README.md, "The per-trade path ships compiled"). The package passes `mypy --strict`, which is what mypyc compiles from, so nothing is
written twice: `python -m collector.native_build` (`make native`, which `make run` and `make test` run first)
compiles MODULES as they are.

Why the extensions live in collector/.native/, never beside the sources: Python imports `router.*.so` in
preference to `router.py` in the same folder, so an edited router.py would silently not run. Here each process
decides once, at `import collector`: the extensions are put first on collector.pipeline's search path only when
the manifest written with them matches, byte for byte (sha256), every source they were compiled from and every
collector module those import, and the interpreter's extension suffix. Otherwise the source runs, and
`STATUS` says why (the supervisor logs it). COLLECTOR_NATIVE=0 runs the source whatever is built.

All or nothing: mypyc compiles the modules as one group that calls its own classes natively, so a compiled
router with a pure-Python encoder is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The compiled group: what runs per message on the trade path (the feed's loop over a read's frames, router's
# on_trade/_keep_trade, the filter, the symbol statistics, the row encoder, the batch builder). Not tiers.py:
# mypyc's float sum() is a plain loop where CPython's is compensated, and the supervisor's tier scores would
# differ in the last bit.
MODULES = (
    "collector.feed.frame_loop",
    "collector.pipeline.router",
    "collector.pipeline.encode",
    "collector.pipeline.trade_filter",
    "collector.pipeline.activity",
    "collector.pipeline.batches",
)
# mypyc's shared library is the module f"{GROUP}__mypyc", found on collector's own search path.
GROUP = "collector.native_lib"
PACKAGE_DIR = Path(__file__).resolve().parent
NATIVE_DIR = PACKAGE_DIR / ".native"
MANIFEST = "manifest.json"
ENV = "COLLECTOR_NATIVE"


@dataclass(frozen=True)
class Status:
    """Whether the compiled modules run (`compiled`), and a line a person can read saying which and why."""

    compiled: bool
    detail: str


def source_path(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """The .py file of a collector module ('collector.pipeline.router' -> .../collector/pipeline/router.py)."""
    return package_dir.joinpath(*module.split(".")[1:]).with_suffix(".py")


def extension_path(module: str, native_dir: Path = NATIVE_DIR) -> Path:
    """Where the compiled extension of a collector module is put."""
    return native_dir.joinpath(*module.split(".")[1:]).with_name(
        module.rsplit(".", 1)[1] + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(native_dir: Path = NATIVE_DIR, package_dir: Path = PACKAGE_DIR,
          environ: Mapping[str, str] = os.environ) -> Status:
    """Decide from what is on disk whether the compiled modules may run (reads the manifest and hashes its
    sources: a few milliseconds, once per process)."""
    pure = "pure Python"
    if environ.get(ENV, "1") == "0":
        return Status(False, f"{pure} ({ENV}=0)")
    manifest_file = native_dir / MANIFEST
    if not manifest_file.is_file():
        return Status(False, f"{pure} (no compiled modules: `make native` builds them)")
    try:
        manifest = json.loads(manifest_file.read_text())
        modules, sources, suffix = manifest["modules"], manifest["sources"], manifest["ext_suffix"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return Status(False, f"{pure} ({manifest_file} unreadable: {e}; `make native` rebuilds it)")
    if suffix != sysconfig.get_config_var("EXT_SUFFIX"):
        return Status(False, f"{pure} (compiled for {suffix}, this interpreter loads "
                             f"{sysconfig.get_config_var('EXT_SUFFIX')}; `make native` rebuilds)")
    if sorted(modules) != sorted(MODULES):
        return Status(False, f"{pure} (compiled modules {', '.join(modules)} are not this release's; "
                             "`make native` rebuilds)")
    for rel, sha in sources.items():
        path = package_dir.parent / rel
        try:
            same = digest(path) == sha
        except OSError:
            same = False
        if not same:
            return Status(False, f"{pure} ({rel} changed since it was compiled; `make native` rebuilds)")
    missing = [m for m in MODULES if not extension_path(m, native_dir).is_file()]
    if missing:
        return Status(False, f"{pure} (no extension for {', '.join(missing)}; `make native` rebuilds)")
    return Status(True, f"compiled by mypyc: {', '.join(m.rsplit('.', 1)[1] for m in MODULES)}")


STATUS = check()


def search_path(package: str, path: list[str]) -> list[str]:
    """A collector package's `__path__` with the compiled modules' folder added when they run: first for the
    packages whose modules it replaces, last for `collector` itself (which only gains the group's library)."""
    if not STATUS.compiled:
        return path
    native = NATIVE_DIR.joinpath(*package.split(".")[1:])
    if not native.is_dir():
        return path
    return [*path, str(native)] if package == "collector" else [str(native), *path]
