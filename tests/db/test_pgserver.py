import os
import shutil
import tempfile
from pathlib import Path

import psycopg

from collector.db.embedded import EmbeddedPostgres


def test_fresh_database_is_empty_and_writable(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT x FROM t").fetchone() == (1,)


def test_persistent_datadir_survives_restart() -> None:
    # pytest's tmp_path is private to root; the server runs as an unprivileged user when we are root
    base = Path(tempfile.mkdtemp(prefix="collector-test-"))
    os.chmod(base, 0o755)
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
