"""The supervisor's run directory, and the sweep of those a killed supervisor left behind.

The run directory is a private temporary directory (a short path: Unix socket names are < 108 bytes) for
the writer's socket, the workers' shared REST budget file and the children's boot-error notes. The
supervisor removes it when it stops; a supervisor killed with SIGKILL (or by the OOM killer) cannot, and
over months of such restarts they pile up in the temporary directory. So each one records its owner (pid
and the kernel's start time of that pid, which tells a reused pid apart) and every start removes the
directories of owners that are gone. Directories of other users, and anything without an owner record (an
embedded PostgreSQL's `collector-pg-*`, a directory of an older version), are left alone; so are copies of
the PostgreSQL installation (`collector-pginstall-*`, whose record has another name): collector.db.embedded
sweeps those, once no server runs from them.

The same holds for what the supervisor keeps in shared memory: the stats and checkpoint blocks (~13 MB of
resident pages for 496 symbols) and the named semaphores of its children's stop events and control queues
(multiprocessing's, ~70 at 8 workers). multiprocessing's resource tracker removes them when the supervisor
alone dies, but a SIGKILL of the whole process group (`kill -9 -PGID`, or systemd's final SIGKILL after
TimeoutStopSec) kills the tracker too, and they stay in /dev/shm, in RAM, until reboot. So they are named
after the run directory (`shared_name`, `name_semaphores`) and the sweep removes a dead owner's names with
its directory.
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
# Where Linux keeps POSIX shared memory and named semaphores (glibc: shm_open(name) is /dev/shm/name,
# sem_open(name) is /dev/shm/sem.name); elsewhere it does not exist and the sweep leaves shared memory alone.
SHM_DIR = "/dev/shm"  # noqa: S108 - the system's POSIX shared-memory mount, not a temporary file


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


def shared_name(run_dir: str | Path, what: str) -> str:
    """The shared-memory name of the block `what` of the supervisor owning `run_dir`: the sweep finds it by
    the directory's name, which mkdtemp made unique while the directory exists."""
    return f"{Path(run_dir).name}-{what}"


def name_semaphores(run_dir: str | Path) -> None:
    """Name the semaphores this process creates from now on (multiprocessing's Event, Queue, Lock) after
    `run_dir`, instead of multiprocessing's `/mp-<random>`, so that the sweep can find them.

    multiprocessing reads the prefix from the current process's `_config["semprefix"]` (the same since
    Python 3.4) at each SemLock it creates; without that attribute nothing changes but the sweep of them."""
    from multiprocessing import process

    config = getattr(process.current_process(), "_config", None)
    if isinstance(config, dict) and "semprefix" in config:
        config["semprefix"] = "/" + Path(run_dir).name


def unlink_shared(run_dir_name: str, shm_dir: str | Path = SHM_DIR) -> int:
    """Remove this user's shared-memory blocks and semaphores named after the run directory `run_dir_name`
    (see shared_name, name_semaphores); returns how many. Never raises."""
    removed = 0
    try:
        entries = list(os.scandir(shm_dir))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        name = entry.name.removeprefix("sem.")
        if not name.startswith(run_dir_name + "-"):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed += 1
    return removed


def owner_record() -> str:
    """This process's owner record: `<pid> <kernel start time>`, as owner_alive reads it."""
    pid = os.getpid()
    return f"{pid} {process_start(pid) or ''}\n"


def stale_dirs(prefix: str, record_name: str, tmp: str | Path | None = None) -> list[os.DirEntry[str]]:
    """This user's directories in `tmp` (default: the system's) named `prefix*` whose owner record, the file
    `record_name` in them, names a process that is gone. One without a record is not listed (another
    version's, or not ours); an unreadable `tmp` lists none."""
    try:
        entries = list(os.scandir(tmp or tempfile.gettempdir()))
    except OSError:
        return []
    uid = os.getuid()
    stale = []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            record = Path(entry.path, record_name).read_text()
        except OSError:
            continue
        if not owner_alive(record):
            stale.append(entry)
    return stale


def sweep_stale(tmp: str | Path | None = None, shm_dir: str | Path = SHM_DIR) -> list[str]:
    """Remove this user's run directories in `tmp` (default: the system's) whose supervisor is gone, with
    their shared memory in `shm_dir`; returns the directories' paths. Never raises: a directory that cannot
    be read or removed is left as it is."""
    removed: list[str] = []
    shared = 0
    for entry in stale_dirs(PREFIX, OWNER_FILE, tmp):
        shared += unlink_shared(entry.name, shm_dir)  # first: the directory's name is what finds them
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(entry.path)
    if removed or shared:
        log.info("removed %d run directories and %d shared-memory names of supervisors that were killed: %s",
                 len(removed), shared, ", ".join(removed[:5]))
    return removed


def make_run_dir(tmp: str | Path | None = None, shm_dir: str | Path = SHM_DIR) -> str:
    """A new private run directory with this process's owner record, after sweeping the stale ones."""
    sweep_stale(tmp, shm_dir)
    path = tempfile.mkdtemp(prefix=PREFIX, dir=tmp)
    Path(path, OWNER_FILE).write_text(owner_record())
    return path
