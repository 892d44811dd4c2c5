"""Run directories a killed supervisor left behind are removed at the next start; nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from collector.runtime.run_dir import OWNER_FILE, make_run_dir, process_start, sweep_stale


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _run_dir(tmp: Path, name: str, record: str | None) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "writer.sock").write_text("")
    if record is not None:
        (d / OWNER_FILE).write_text(record)
    return d


def test_only_the_directories_of_supervisors_that_are_gone_are_removed(tmp_path: Path) -> None:
    me = f"{os.getpid()} {process_start(os.getpid())}\n"
    dead = _run_dir(tmp_path, "collector-dead", f"{_dead_pid()} 12345\n")
    reused = _run_dir(tmp_path, "collector-reused", f"{os.getpid()} 1\n")  # this pid, another process's start
    alive = _run_dir(tmp_path, "collector-alive", me)
    no_owner = _run_dir(tmp_path, "collector-pg-abc", None)  # an embedded PostgreSQL's, an older version's
    garbled = _run_dir(tmp_path, "collector-garbled", "not a record")
    other = _run_dir(tmp_path, "elsewhere-dead", f"{_dead_pid()} 12345\n")

    assert sorted(sweep_stale(tmp_path)) == sorted([str(dead), str(reused)])
    assert not dead.exists() and not reused.exists()
    assert alive.exists() and no_owner.exists() and garbled.exists() and other.exists()


def test_a_new_run_directory_records_its_owner_and_sweeps_first(tmp_path: Path) -> None:
    stale = _run_dir(tmp_path, "collector-stale", f"{_dead_pid()} 12345\n")
    path = Path(make_run_dir(tmp_path))
    assert path.parent == tmp_path and path.name.startswith("collector-")
    assert (path / OWNER_FILE).read_text() == f"{os.getpid()} {process_start(os.getpid())}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o700"
    assert not stale.exists()
    assert sweep_stale(tmp_path) == [] and path.exists()  # its own owner is alive
