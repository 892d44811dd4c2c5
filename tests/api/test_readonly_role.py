"""The documented SELECT-only role (collector.api.db.READ_ONLY_ROLE_SQL, README "Read API") is enough to
serve every endpoint, and it cannot write; the pool's sessions are read-only with a statement timeout even
for a role that could write."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from conftest import ServerThread
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.api.app import ApiSettings
from collector.api.db import make_pool, read_only_role_statements


@pytest.fixture
def readonly_url(filled_db: str) -> Iterator[str]:
    role = f"api_ro_{uuid.uuid4().hex[:8]}"
    params = conninfo_to_dict(filled_db)
    with psycopg.connect(filled_db, autocommit=True) as conn:
        for stmt in read_only_role_statements(role, "pw-" + role, str(params["dbname"])):
            conn.execute(stmt)
    try:
        yield make_conninfo(**{**params, "user": role, "password": "pw-" + role})
    finally:
        with psycopg.connect(filled_db, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_every_endpoint_works_as_the_select_only_role(readonly_url: str, filled_db: str) -> None:
    with psycopg.connect(filled_db) as conn:
        row = conn.execute("SELECT symbol FROM liquidations GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()
    assert row is not None
    series = {"symbol": row[0], "start": "2020-01-01"}
    routes = {"candles": {**series, "include_partial": "true"}, "trades": series, "funding": series,
              "liquidations": series, "open_interest": series, "symbols": {}, "latest": {}}
    with ServerThread(ApiSettings(dsn=readonly_url)) as srv:
        for route, params in routes.items():
            r = httpx.get(f"{srv.url}/api/v1/{route}", params=params, timeout=30)
            assert r.status_code == 200, (route, r.text)
            assert r.json()["data"], route


def test_the_role_cannot_write(readonly_url: str) -> None:
    with psycopg.connect(readonly_url, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")  # even past the role's session default
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM trades")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE t_api (x int)")


def test_pool_sessions_are_read_only_with_a_timeout(filled_db: str) -> None:
    async def check() -> tuple[str, str, type[BaseException]]:
        pool = make_pool(filled_db, 1, 1234)  # filled_db's user is a superuser: only the session stops it
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                ro = (await (await conn.execute("SHOW default_transaction_read_only")).fetchall())[0][0]
                timeout = (await (await conn.execute("SHOW statement_timeout")).fetchall())[0][0]
                try:
                    await conn.execute("DELETE FROM trades")
                except psycopg.Error as e:
                    return ro, timeout, type(e)
                raise AssertionError("DELETE succeeded in a pool session")
        finally:
            await pool.close()

    ro, timeout, err = asyncio.run(check())
    assert (ro, timeout) == ("on", "1234ms")
    assert err is psycopg.errors.ReadOnlySqlTransaction
