import os
import shutil
import tempfile
from pathlib import Path

import psycopg

from collector.pgserver import EmbeddedPostgres


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
        server.stop_server(mode="fast")
        server.restart()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
