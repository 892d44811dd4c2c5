"""The supervisor's run directory, and the sweep of those a killed supervisor left behind.

The run directory is a private temporary directory (a short path: Unix socket names are < 108 bytes) for
the writer's socket, the workers' shared REST budget file and the children's boot-error notes. The
supervisor removes it when it stops; a supervisor killed with SIGKILL (or by the OOM killer) cannot, and
over months of such restarts they pile up in the temporary directory. So each one records its owner (pid
and the kernel's start time of that pid, which tells a reused pid apart) and every start removes the
directories of owners that are gone. Directories of other users, and anything without an owner record (an
embedded PostgreSQL's `collector-pg-*`, a directory of an older version), are left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "collector-"
OWNER_FILE = "owner"


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22): with the pid it
    names one process for good. None when there is no such process; "" where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as fp:
            return fp.read().rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except (OSError, IndexError):
        return ""
    try:  # no /proc: whether the pid exists at all
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def owner_alive(record: str) -> bool:
    """Whether the supervisor an owner record (`<pid> <start>`) names still runs; unreadable: assumed so."""
    parts = record.split()
    try:
        pid = int(parts[0])
    except (ValueError, IndexError):
        return True
    start = parts[1] if len(parts) > 1 else ""
    now = process_start(pid)
    return now is not None and (now == "" or start == "" or now == start)


def sweep_stale(tmp: str | Path | None = None) -> list[str]:
    """Remove this user's run directories in `tmp` (default: the system's) whose supervisor is gone; returns
    their paths. Never raises: a directory that cannot be read or removed is left as it is."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(tmp or tempfile.gettempdir()))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            record = Path(entry.path, OWNER_FILE).read_text()
        except OSError:  # no owner record: not a run directory (or another version's), not ours to judge
            continue
        if owner_alive(record):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(entry.path)
    if removed:
        log.info("removed %d run directories of supervisors that were killed: %s", len(removed),
                 ", ".join(removed[:5]))
    return removed


def make_run_dir(tmp: str | Path | None = None) -> str:
    """A new private run directory with this process's owner record, after sweeping the stale ones."""
    sweep_stale(tmp)
    path = tempfile.mkdtemp(prefix=PREFIX, dir=tmp)
    pid = os.getpid()
    Path(path, OWNER_FILE).write_text(f"{pid} {process_start(pid) or ''}\n")
    return path
