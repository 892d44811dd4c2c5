"""Copies of the PostgreSQL installation that a killed collector left in the temporary directory are removed
by a later start or stop, unless a process still runs from one (a server its killed starter left running)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from helpers import dead_owner_record

from collector.db.embedded import INSTALL_PREFIX, OWNER_FILE, sweep_install_copies
from collector.runtime.run_dir import owner_record, sweep_stale


def _copy(tmp: Path, name: str, record: str | None) -> Path:
    d = tmp / f"{INSTALL_PREFIX}{name}"
    (d / "embedded_postgres_binaries" / "bin").mkdir(parents=True)
    if record is not None:
        (d / OWNER_FILE).write_text(record)
    return d


def _run_from(copy: Path) -> subprocess.Popen[bytes]:
    """A process whose executable lies in `copy`, as a server started from the copy's binaries."""
    program = copy / "embedded_postgres_binaries" / "bin" / "postgres"
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", program)
    return subprocess.Popen([str(program), "60"])


def test_only_unused_copies_of_makers_that_are_gone_are_removed(tmp_path: Path) -> None:
    dead = _copy(tmp_path, "dead", dead_owner_record())
    in_use = _copy(tmp_path, "inuse", dead_owner_record())
    alive = _copy(tmp_path, "alive", owner_record())
    unrecorded = _copy(tmp_path, "old", None)  # an older version's copy: not ours to judge
    other = tmp_path / "elsewhere-pginstall-x"
    other.mkdir()
    (other / OWNER_FILE).write_text(dead_owner_record())

    server = _run_from(in_use)
    try:
        assert sweep_install_copies(tmp_path) == [str(dead)]
    finally:
        server.kill()
        server.wait()
    assert not dead.exists()
    assert alive.exists() and unrecorded.exists() and other.exists() and in_use.exists()


def test_a_copy_is_removed_once_nothing_runs_from_it(tmp_path: Path) -> None:
    d = _copy(tmp_path, "server", dead_owner_record())
    server = _run_from(d)
    try:
        assert sweep_install_copies(tmp_path) == []
    finally:
        server.kill()
        server.wait()
    assert sweep_install_copies(tmp_path) == [str(d)]


def test_the_supervisors_sweep_leaves_installation_copies_alone(tmp_path: Path) -> None:
    """Its record is not a run directory's: sweep_stale would remove it without asking whether a server runs
    from it."""
    d = _copy(tmp_path, "dead", dead_owner_record())
    assert sweep_stale(tmp_path, tmp_path / "shm") == []
    assert d.exists()
