"""The compiled pipeline modules (collector.native): run only when built from exactly the sources on disk, the
Python source otherwise, and both give the pipeline suite's results."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from collector import native
from collector.native_build import covered_sources

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")
NO_CC = (f"no C compiler ({(sysconfig.get_config_var('CC') or 'cc').split()[0]}) on PATH (mypyc builds C extensions; "
         "the collector runs its Python source)")


def test_the_loaded_modules_are_what_the_status_says() -> None:
    for name in native.MODULES:
        path = Path(importlib.import_module(name).__file__ or "")
        if native.STATUS.compiled:  # (mypyc names a module its group imported first as if beside the library)
            assert path.name.endswith(SUFFIX) and path.is_relative_to(native.NATIVE_DIR), (name, path)
        else:
            assert path == native.source_path(name), (name, path)


@pytest.mark.skipif(os.environ.get("REQUIRE_NATIVE") != "1", reason="REQUIRE_NATIVE=1 (CI) requires the build")
def test_ci_runs_the_compiled_modules() -> None:
    assert native.STATUS.compiled, native.STATUS.detail


def _fake_build(tmp: Path) -> tuple[Path, Path]:
    """A package folder with the compiled modules' sources, and a native folder whose manifest matches them."""
    package, built = tmp / "collector", tmp / "collector" / ".native"
    sources = {}
    for name in native.MODULES:
        src = native.source_path(name, package)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {name}\n")
        sources[str(src.relative_to(tmp))] = hashlib.sha256(src.read_bytes()).hexdigest()
        ext = native.extension_path(name, built)
        ext.parent.mkdir(parents=True, exist_ok=True)
        ext.write_bytes(b"")
    (built / native.MANIFEST).write_text(json.dumps({"modules": list(native.MODULES), "ext_suffix": SUFFIX,
                                                     "sources": sources}))
    return package, built


def test_a_build_matching_its_sources_runs(tmp_path: Path) -> None:
    package, built = _fake_build(tmp_path)
    status = native.check(built, package, {})
    assert status.compiled and status.detail == \
        "compiled by mypyc: frame_loop, router, encode, trade_filter, activity, batches"


def test_an_edited_source_runs_the_source_and_says_which(tmp_path: Path) -> None:
    package, built = _fake_build(tmp_path)
    with native.source_path("collector.pipeline.encode", package).open("a") as f:
        f.write("x = 1\n")
    assert native.check(built, package, {}) == native.Status(
        False, "pure Python (collector/pipeline/encode.py changed since it was compiled; `make native` rebuilds)")


def test_what_stops_a_build_from_running(tmp_path: Path) -> None:
    package, built = _fake_build(tmp_path)
    assert native.check(built, package, {"COLLECTOR_NATIVE": "0"}) == native.Status(
        False, "pure Python (COLLECTOR_NATIVE=0)")
    native.extension_path("collector.pipeline.activity", built).unlink()
    assert native.check(built, package, {}).detail == \
        "pure Python (no extension for collector.pipeline.activity; `make native` rebuilds)"
    manifest = built / native.MANIFEST
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "ext_suffix": ".cpython-312-x86_64-linux-gnu.so"}))
    assert native.check(built, package, {}).detail.startswith(
        "pure Python (compiled for .cpython-312-x86_64-linux-gnu.so, this interpreter loads")
    manifest.write_text(json.dumps({**data, "modules": ["collector.pipeline.router"]}))
    assert "are not this release's" in native.check(built, package, {}).detail
    manifest.write_text("{")
    assert native.check(built, package, {}).detail.startswith(f"pure Python ({manifest} unreadable:")
    manifest.unlink()
    assert native.check(built, package, {}) == native.Status(
        False, "pure Python (no compiled modules: `make native` builds them)")


def test_search_paths_follow_the_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pipeline").mkdir()
    monkeypatch.setattr(native, "NATIVE_DIR", tmp_path)
    monkeypatch.setattr(native, "STATUS", native.Status(True, "compiled"))
    assert native.search_path("collector.pipeline", ["src/pipeline"]) == [str(tmp_path / "pipeline"), "src/pipeline"]
    assert native.search_path("collector", ["src"]) == ["src", str(tmp_path)]
    assert native.search_path("collector.feed", ["src/feed"]) == ["src/feed"]  # nothing compiled there
    monkeypatch.setattr(native, "STATUS", native.Status(False, "pure Python"))
    assert native.search_path("collector.pipeline", ["src/pipeline"]) == ["src/pipeline"]


def test_the_manifest_covers_what_the_compiled_modules_import() -> None:
    covered = {str(p.relative_to(ROOT)) for p in covered_sources()}
    # the four, what router imports directly and indirectly, and the packages' __init__ that run on the way
    assert {"collector/pipeline/router.py", "collector/pipeline/encode.py", "collector/pipeline/trade_filter.py",
            "collector/pipeline/activity.py", "collector/feed/wire.py", "collector/pipeline/sketch.py",
            "collector/symbols.py", "collector/pipeline/__init__.py", "collector/__init__.py",
            "collector/native.py"} <= covered
    assert "collector/runtime/worker.py" not in covered


def test_the_build_without_a_compiler_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no cc there; the build stops before touching collector/.native
    failed = subprocess.run([sys.executable, "-m", "collector.native_build"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [NO_CC]
    optional = subprocess.run([sys.executable, "-m", "collector.native_build", "--optional"], cwd=ROOT, env=env,
                              capture_output=True, text=True)
    assert optional.returncode == 0, optional.stderr
    assert optional.stdout.strip() == f"collector: not compiled: {NO_CC}"


def test_the_source_passes_the_pipeline_suite_when_the_build_runs_compiled() -> None:
    """CI runs everything compiled (REQUIRE_NATIVE=1): the Python source a machine without a compiler runs
    must pass the pipeline's own suite too."""
    if not native.STATUS.compiled:
        pytest.skip(f"this run is the Python source already ({native.STATUS.detail})")
    env = {**os.environ, "COLLECTOR_NATIVE": "0"}
    probe = subprocess.run([sys.executable, "-c", "import collector.pipeline.router as r; print(r.__file__)"],
                           cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == str(native.source_path("collector.pipeline.router"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/pipeline"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:]
