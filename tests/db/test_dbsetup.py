"""collector.db.setup against a real PostgreSQL: a missing database is created when the role may, else one line
naming it; errors are described with the server's words and the fix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.db import setup as dbsetup


def _url(server_url: str, **change: str) -> str:
    params = conninfo_to_dict(server_url)
    params.update(change)
    return make_conninfo(**params)


@pytest.fixture
def role(pg_server_url: str) -> Iterator[str]:
    """A login role without CREATEDB (and a name for the database it will ask for), dropped afterwards."""
    name = f"collector_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        yield name
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP ROLE {name}")


def test_missing_database_is_created_when_the_role_may(pg_server_url: str, role: str) -> None:
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {role} CREATEDB")
    url = _url(pg_server_url, user=role, dbname=role)
    with pytest.raises(psycopg.OperationalError, match=f'database "{role}" does not exist'):
        psycopg.connect(url)
    with dbsetup.connect(url) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (role, role)
    with dbsetup.connect(url) as conn:  # exists now: a plain connect
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_missing_database_the_role_may_not_create_is_one_line_naming_it(pg_server_url: str, role: str) -> None:
    url = _url(pg_server_url, user=role, dbname=role)
    with pytest.raises(dbsetup.DatabaseSetupError) as e:
        dbsetup.connect(url)
    text = dbsetup.describe(e.value)
    assert "\n" not in text
    assert f'FATAL: database "{role}" does not exist' in text  # the server's words
    assert f'CREATE DATABASE "{role}" OWNER "{role}"' in text and f'ALTER ROLE "{role}" CREATEDB' in text
    assert text.count("fix") == 0  # the setup error carries its own remedy, nothing appended
    with psycopg.connect(pg_server_url) as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (role,)).fetchone() is None


def test_describe_keeps_the_server_message_and_adds_the_fix() -> None:
    raw = ('connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  extension '
           '"timescaledb" must be preloaded\nHINT:  Please preload the timescaledb library')
    text = dbsetup.describe(raw)
    assert text.startswith('connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL: '
                           'extension "timescaledb" must be preloaded HINT:')
    assert text.endswith("-> fix: add timescaledb to shared_preload_libraries in postgresql.conf and restart "
                         "PostgreSQL")
    assert dbsetup.describe("something nobody knows") == "something nobody knows"
    assert len(dbsetup.describe("x" * 5000)) == dbsetup.MESSAGE_MAX_CHARS
    assert "s3cret" not in dbsetup.describe("postgresql://bob:s3cret@db/x: password authentication failed")


def test_unreachable_server_is_described_with_the_fix() -> None:
    with pytest.raises(psycopg.OperationalError) as e:
        dbsetup.connect("postgresql://collector@127.0.0.1:1/collector?connect_timeout=2")
    text = dbsetup.describe(e.value)
    assert "Connection refused" in text and "-> fix: is PostgreSQL running there?" in text


def test_writer_keeps_a_refused_mode_as_its_error_and_the_batch(ts_not_preloaded_url: str) -> None:
    """A database.mode the server cannot give, found by the writer (the database was down when the
    supervisor checked): no crash loop, the batch stays pending, the error names the fix."""
    from helpers import trades_batch

    from collector.writer.service import Writer

    w = Writer(ts_not_preloaded_url, mode="timescaledb")
    batch = trades_batch(1, 5)
    w.add(batch)
    assert not w.flush()
    assert w.stats.last_error is not None and w.stats.last_error.startswith(
        "connect: database.mode is timescaledb, but TimescaleDB 2.17.2 is installed but not preloaded: add "
        "timescaledb to shared_preload_libraries")
    assert w.pending_rows() == 5 and w.stats.errors == 1
    assert w.close(deadline_s=0) == [batch]  # not written, not spooled (no spool_dir): handed back
