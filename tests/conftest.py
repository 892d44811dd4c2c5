"""Shared fixtures: a real PostgreSQL for every test that needs one.

TEST_DATABASE_URL points the suite at an existing server (and enables the TimescaleDB tests when the
extension is installed there); otherwise one private throwaway cluster is started for the session.
Each test gets its own fresh database so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.pgserver import EmbeddedPostgres


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a server where the tests may create and drop databases."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(durable=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_server_url)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def timescaledb_available(pg_server_url: str) -> bool:
    with psycopg.connect(pg_server_url) as conn:
        row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None
