"""The read API's database side: a pool of read-only sessions with a statement timeout, and the role to run
them as.

Two locks on writing, either enough on its own: the sessions start with default_transaction_read_only, and
the documented role (READ_ONLY_ROLE_SQL) has SELECT and nothing else. The statement timeout bounds what
one request can cost the database the collector writes to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

# The role `collector api` should connect as (README "Read API"). Run it as the collector's role (the owner
# of the tables, so ALTER DEFAULT PRIVILEGES covers the partitions and tables it creates later); reading a
# partitioned table or a view checks the privilege on the parent or the view only.
READ_ONLY_ROLE_SQL = """\
CREATE ROLE {role} LOGIN PASSWORD {password};
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role};
ALTER ROLE {role} SET default_transaction_read_only = on;
ALTER ROLE {role} SET statement_timeout = '5s';"""


def read_only_role_statements(role: str, password: str, database: str) -> list[sql.Composed]:
    """READ_ONLY_ROLE_SQL with its names and password quoted, one statement per item."""
    return [sql.SQL(stmt).format(role=sql.Identifier(role), password=sql.Literal(password),
                                 database=sql.Identifier(database))
            for stmt in READ_ONLY_ROLE_SQL.split(";\n")]


def make_pool(dsn: str, size: int, statement_timeout_ms: int) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """A pool (not yet open) whose every session is read-only, in UTC, with a statement timeout."""

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SET default_transaction_read_only = on")
        await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(statement_timeout_ms)))
        await conn.execute("SET TIME ZONE 'UTC'")
        # Every statement here is an index range or a few hundred index probes: JIT compiling one costs more
        # than it saves (40 ms of a 120 ms `latest` over 496 symbols, EXPLAIN ANALYZE on a shared machine).
        await conn.execute("SET jit = off")

    return AsyncConnectionPool(dsn, min_size=1, max_size=size, open=False, configure=configure,
                               kwargs={"autocommit": True, "application_name": "collector-api"},
                               name="collector-api")


async def fetch(pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], query: sql.Composed | sql.SQL,
                params: dict[str, Any] | None = None, timeout: float = 5.0) -> list[tuple[Any, ...]]:
    """All rows of one parameterised statement (binary results: int8/float8 arrive without text parsing)."""
    async with pool.connection(timeout=timeout) as conn:
        cur = conn.cursor(binary=True)
        await cur.execute(query, params)
        rows: Sequence[tuple[Any, ...]] = await cur.fetchall()
        return list(rows)
