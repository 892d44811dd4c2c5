"""bench/experiments: every patch of an experiment that was not kept still applies to this tree and leaves it
compiling, so the figures bench/README.md gives for it can be measured again (`bench/ab.py REV+PATCH`)."""

from __future__ import annotations

import py_compile
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATCHES = sorted((ROOT / "bench" / "experiments").glob("*.patch"))


def test_there_are_experiments_and_each_is_described() -> None:
    readme = (ROOT / "bench" / "experiments" / "README.md").read_text()
    assert PATCHES
    assert [p.name for p in PATCHES if f"`{p.name}`" not in readme] == []


@pytest.mark.parametrize("patch", PATCHES, ids=[p.stem for p in PATCHES])
def test_the_patch_applies_and_compiles(patch: Path, tmp_path: Path) -> None:
    touched = subprocess.run(["git", "apply", "--numstat", str(patch)], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\n")
    files = [line.split("\t")[2] for line in touched if line]
    assert files, f"{patch.name} changes nothing"
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, tmp_path / f)
    applied = subprocess.run(["git", "apply", str(patch)], cwd=tmp_path, capture_output=True, text=True)
    assert applied.returncode == 0, f"{patch.name} no longer applies: {applied.stderr.strip()}"
    for f in files:
        assert (tmp_path / f).read_text() != (ROOT / f).read_text()
        py_compile.compile(str(tmp_path / f), doraise=True)
