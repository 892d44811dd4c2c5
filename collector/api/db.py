"""The read API's database side: a pool of read-only sessions with a statement timeout, and the role to run
them as.

Two locks on writing, either enough on its own: the sessions start with default_transaction_read_only, and
the documented role (READ_ONLY_ROLE_SQL) has SELECT and nothing else. The statement timeout bounds what
one request can cost the database the collector writes to.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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

    # two sessions kept open: a big page is fetched on two at once (fetch_parts)
    return AsyncConnectionPool(dsn, min_size=min(2, size), max_size=size, open=False, configure=configure,
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


# How long a request that already holds a session waits for a second one to fetch its other part on: not
# longer, so a busy pool costs a big page its parallelism, never a wait behind other requests (nor a
# deadlock of requests each holding one session and waiting for another).
SPARE_WAIT_S = 0.005

# A page's statement reads its key range in index order and never needs a sort (collector.api.query.
# venue_range_sql), but with fresh statistics PostgreSQL prices a part that passes over many rows (a split
# page's second part: OFFSET 55,001 LIMIT 45,000 of a 100k-row range) as cheaper by a bitmap heap scan and a
# sort of the whole range, which spills to disk at the default work_mem. After an ANALYZE of 100k trades of one
# symbol (EXPLAIN ANALYZE, plain PostgreSQL 15, 2026-12-03): 81-83 ms that way against 50-51 ms by the index.
# Sorts are priced out (not forbidden: a plan with no other way still sorts) for the page's transaction only;
# every page statement runs under it, so a cached generic plan is always one made with it.
_ORDERED = "SET LOCAL enable_sort = off"
_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; " + _ORDERED


async def fetch_parts(pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], query: sql.Composed | sql.SQL,
                      parts: Sequence[dict[str, Any]], timeout: float = 5.0) -> list[tuple[Any, ...]]:
    """The rows of one statement run once per item of `parts` (its parameters), concatenated in that order,
    all reading one snapshot: the parts of one page (collector.api.columnar.page_parts) are consistent
    with each other however many rows are committed meanwhile.

    Why: PostgreSQL is most of a big page's time and one statement runs on one core; each part runs on its
    own session at the same time when the pool has a second one idle (the first exports its snapshot,
    pg_export_snapshot, and the other imports it, SET TRANSACTION SNAPSHOT, both REPEATABLE READ). When it
    has none, the parts run one after the other on one session, in one REPEATABLE READ transaction. Every
    part's transaction prices sorts out (_ORDERED); one part alone runs the same way, on one session with no
    snapshot exported."""
    async with pool.connection(timeout=timeout) as first:
        spare: list[psycopg.AsyncConnection[Any]] = []
        try:
            await first.execute(_BEGIN)
            if len(parts) > 1:
                cur = await first.execute("SELECT pg_export_snapshot()")
                exported = await cur.fetchone()
                assert exported is not None
                with contextlib.suppress(PoolTimeout):
                    spare.append(await pool.getconn(timeout=SPARE_WAIT_S))
                for conn in spare:
                    await conn.execute(_BEGIN)
                    await conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported[0])))
            sessions = [first, *spare]

            async def run(conn: psycopg.AsyncConnection[Any], mine: range) -> list[list[tuple[Any, ...]]]:
                out = []
                for i in mine:
                    cur = conn.cursor(binary=True)
                    await cur.execute(query, parts[i])
                    out.append(list(await cur.fetchall()))
                return out

            n = len(sessions)
            # every session's statements finish (or fail) before any session is given back
            got = await asyncio.gather(*(run(conn, range(k, len(parts), n)) for k, conn in enumerate(sessions)),
                                       return_exceptions=True)
            by_part: list[list[tuple[Any, ...]]] = [[] for _ in parts]
            for k, g in enumerate(got):
                if isinstance(g, BaseException):
                    raise g
                for i, rows in zip(range(k, len(parts), n), g, strict=True):
                    by_part[i] = rows
            return [row for rows in by_part for row in rows]
        finally:
            for conn in [first, *spare]:
                with contextlib.suppress(psycopg.Error):
                    await conn.rollback()  # read only: nothing to commit
            for conn in spare:
                await pool.putconn(conn)
