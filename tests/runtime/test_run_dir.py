"""Run directories a killed supervisor left behind are removed at the next start, with the shared memory
named after them; nothing else is."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import dead_owner_record

from collector.runtime.run_dir import (
    OWNER_FILE,
    make_run_dir,
    owner_record,
    process_start,
    shared_name,
    sweep_stale,
    unlink_shared,
)


def _run_dir(tmp: Path, name: str, record: str | None) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "writer.sock").write_text("")
    if record is not None:
        (d / OWNER_FILE).write_text(record)
    return d


def test_only_the_directories_of_supervisors_that_are_gone_are_removed(tmp_path: Path) -> None:
    dead = _run_dir(tmp_path, "collector-dead", dead_owner_record())
    reused = _run_dir(tmp_path, "collector-reused", f"{os.getpid()} 1\n")  # this pid, another process's start
    alive = _run_dir(tmp_path, "collector-alive", owner_record())
    no_owner = _run_dir(tmp_path, "collector-pg-abc", None)  # an embedded PostgreSQL's, an older version's
    garbled = _run_dir(tmp_path, "collector-garbled", "not a record")
    other = _run_dir(tmp_path, "elsewhere-dead", dead_owner_record())

    assert sorted(sweep_stale(tmp_path)) == sorted([str(dead), str(reused)])
    assert not dead.exists() and not reused.exists()
    assert alive.exists() and no_owner.exists() and garbled.exists() and other.exists()


def test_a_new_run_directory_records_its_owner_and_sweeps_first(tmp_path: Path) -> None:
    stale = _run_dir(tmp_path, "collector-stale", dead_owner_record())
    path = Path(make_run_dir(tmp_path))
    assert path.parent == tmp_path and path.name.startswith("collector-")
    assert (path / OWNER_FILE).read_text() == f"{os.getpid()} {process_start(os.getpid())}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o700"
    assert not stale.exists()
    assert sweep_stale(tmp_path) == [] and path.exists()  # its own owner is alive


def test_the_sweep_removes_the_shared_memory_named_after_a_dead_owners_directory(tmp_path: Path) -> None:
    shm = tmp_path / "shm"  # stands for /dev/shm: blocks are `<name>`, semaphores `sem.<name>`
    shm.mkdir()
    dead = _run_dir(tmp_path, "collector-dead1", dead_owner_record())
    alive = _run_dir(tmp_path, "collector-alive1", owner_record())
    names = [shared_name(dead, "stats"), shared_name(dead, "checkpoints"), "sem.collector-dead1-a1b2c3d4",
             shared_name(alive, "stats"), "sem.collector-alive1-a1b2c3d4",
             "collector-dead10-stats",  # another directory whose name merely starts alike
             "psm_0123abcd", "sem.mp-0123abcd"]  # multiprocessing's own names: nobody's to judge
    for n in names:
        (shm / n).write_bytes(b"\0" * 32)

    assert sweep_stale(tmp_path, shm) == [str(dead)]
    assert sorted(p.name for p in shm.iterdir()) == sorted(names[3:])
    assert unlink_shared("collector-alive1", tmp_path / "missing") == 0  # no such mount: nothing, no error
