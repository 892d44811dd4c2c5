"""COPY into PostgreSQL: one table's encoded batches in one transaction, and the paths that recover from failure.

The writer (collector.writer.service) decides what to flush and when; the sink only loads what it is given:
- the fast path streams the batches' bytes between COPY_HEADER and COPY_TRAILER (`cursor.copy()`), never
  re-encoding a row;
- a unique violation (a commit whose outcome was unknown, a replayed batch) reloads through a TEMP staging
  table with INSERT ... SELECT ... ON CONFLICT DO NOTHING, so what had landed is not added twice;
- "no partition of relation ... found for row" creates the missing partitions from the batches' event-time
  range and retries at once;
- data the database refuses on its own is isolated by loading the batches one by one, and the culprit handed
  to the caller's `reject`, so one bad batch cannot block a table forever.
Anything else that says nothing about the data (connection lost, server down or read-only, lock or
statement timeout) raises Transient: the caller keeps the batches and retries later.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict

from collector.db import gaps_repo, partitions, schema, tables
from collector.db import setup as dbsetup
from collector.db.mode import Mode
from collector.pipeline.batches import Batch
from collector.pipeline.encode import COLUMNS, COPY_HEADER, COPY_TRAILER
from collector.writer.stats import WriterStats

log = logging.getLogger(__name__)

# Connecting to an unreachable host must not freeze the loop (socket reads, acks, spooling) for the OS's
# TCP timeout (minutes); a reachable server answers in milliseconds. Used unless the DSN sets its own.
CONNECT_TIMEOUT_S = 5
# A table lock (ALTER, a manual LOCK, a long DROP) must not hang the writer: give up the attempt after 5 s
# and retry with backoff; 60 s bounds any single statement (a 4 MB COPY takes well under a second).
LOCK_TIMEOUT_MS = 5_000
STATEMENT_TIMEOUT_MS = 60_000

Backend = Literal["timescaledb", "postgres"]  # what schema.ensure_schema settled on


class Transient(Exception):
    """A flush failed for a reason that retrying later can fix."""


def ms_to_dt(ms: int) -> datetime:
    """Event-time milliseconds as an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


@functools.cache
def copy_statement(target: str, table: str) -> bytes:
    """`COPY target (table's columns) FROM STDIN (FORMAT BINARY)`, quoted once and kept.

    Why kept: composing and quoting it on every COPY (a dozen identifiers) was over a quarter of the writer's
    CPU per small COPY (~180 against ~130 µs for 3 rows, `bench/writer.py`'s `small`, bench/README.md), and
    the writer commits small COPYs several times a second (dozens at higher rates). Targets and columns are
    the schema's own names (collector.pipeline.encode.COLUMNS and their `_stage_` tables): a few dozen entries.
    """
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(target), sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table]))).as_bytes(None)


def _is_no_partition(exc: BaseException) -> bool:
    return isinstance(exc, errors.CheckViolation) and "no partition of relation" in str(exc)


def _connect_timeout(dsn: str) -> dict[str, int]:
    """connect_timeout for psycopg.connect unless the DSN sets its own."""
    try:
        if "connect_timeout" in conninfo_to_dict(dsn):
            return {}
    except psycopg.ProgrammingError:
        pass  # a malformed DSN fails in connect() with its own message
    return {"connect_timeout": CONNECT_TIMEOUT_S}


class Sink:
    """The writer's one connection and the COPY through it; counts commits into `stats`.

    `on_schema(backend)` is called once, when the schema has first been ensured and the back-end is known
    (batches queued before that may belong to tables this back-end does not take).
    """

    # The Writer's settings this part needs, passed through from service.Writer.__init__ (the duplicate
    # finder pairs the two assignment lists: each object keeps what it uses).
    def __init__(self, dsn: str, stats: WriterStats, *, mode: Mode = "auto",
                 retention: Mapping[str, timedelta | None] | None = None,
                 lock_timeout_ms: int = LOCK_TIMEOUT_MS, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
                 wall: Callable[[], float] = time.time,
                 on_schema: Callable[[Backend], None] | None = None) -> None:
        self.dsn = dsn
        self.stats = stats
        self.mode = mode
        self.retention = retention
        self.lock_timeout_ms = lock_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.wall = wall
        self.on_schema = on_schema
        self.backend: Backend | None = None
        self._conn: psycopg.Connection | None = None

    # --- connection -------------------------------------------------------------------------------------------

    @property
    def backend_pid(self) -> int | None:
        return None if self._conn is None or self._conn.closed else self._conn.info.backend_pid

    def connection(self) -> psycopg.Connection:
        """The writer's connection, (re)opened and the schema ensured on first use. Raises Transient."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        conn = None
        try:
            # creates the database when it is missing and the role may (dbsetup.connect)
            conn = dbsetup.connect(self.dsn, autocommit=True, application_name="collector-writer",
                                   **_connect_timeout(self.dsn))
            conn.execute(f"SET lock_timeout = {int(self.lock_timeout_ms)}")
            conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")
            if self.backend is None:
                self.backend = schema.ensure_schema(conn, self.mode, self.retention,
                                                     now=datetime.fromtimestamp(self.wall(), UTC))
                self.stats.schema_ready = True
                if self.on_schema is not None:
                    self.on_schema(self.backend)
        except (psycopg.Error, schema.SchemaError) as exc:  # down, refusing, or a refused mode: retried later
            if conn is not None:
                conn.close()
            raise Transient(f"connect: {exc}") from exc
        self._conn = conn
        return conn

    def drop_connection(self) -> None:
        """Forget a connection that failed (its state is unknown); the next use opens a new one."""
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- the COPY -----------------------------------------------------------------------------------------------

    def write(self, table: str, batches: list[Batch], reject: Callable[[Batch, BaseException], None]) -> list[Batch]:
        """Commit `batches` of one table; returns those that landed (the rest went to `reject`).

        Raises Transient when nothing can be said about the data itself (connection, server, permissions).
        """
        try:
            self._load(table, batches)
        except Transient:
            raise
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # the data itself is refused: find the culprit(s) so the rest can land
            log.warning("flush of %s refused (%s); isolating %d batches", table, exc, len(batches))
            self.stats.errors += 1
            self.stats.last_error = f"{table}: {exc}"
            good: list[Batch] = []
            for b in batches:
                try:
                    self._load(table, [b])
                    good.append(b)
                except (psycopg.DataError, psycopg.IntegrityError) as one:
                    reject(b, one)
                except psycopg.Error as other:
                    self.drop_connection()
                    raise Transient(f"{table}: {other}") from other
            return good
        except psycopg.Error as exc:  # read-only, schema missing, permissions...: keep the data, retry later
            self.drop_connection()
            raise Transient(f"{table}: {exc}") from exc
        return batches

    def _load(self, table: str, batches: list[Batch]) -> None:
        """One transaction: fast COPY, or the staging path after a unique violation. Raises Transient.

        The fast path is the COPY statement alone: on the autocommit connection a single statement is its
        own transaction, committed when it completes or rolled back when it fails, so an explicit BEGIN and
        COMMIT would only add two round trips to every COPY (with batches committed every 50 ms, most of a
        COPY's cost). The staging path runs several statements and keeps its explicit transaction.
        """
        staged = table == "gaps"  # a gap's versions share its key: always merged (gaps_repo.upsert_gaps_sql)
        for _ in range(4):  # at most: COPY -> create partitions -> COPY -> unique violation -> staged
            conn = self.connection()
            t0 = time.perf_counter()
            try:
                if staged:
                    with conn.transaction():
                        self._copy_staged(conn, table, batches)
                else:
                    self._copy(conn, table, table, batches)
            except errors.UniqueViolation:
                if staged:
                    raise
                staged = True  # an earlier attempt may have committed: load what is missing only
                self.stats.replayed_flushes += 1
                continue
            except errors.CheckViolation as exc:
                if not _is_no_partition(exc):
                    raise
                self._create_partitions(conn, table, batches)
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.drop_connection()
                raise Transient(f"{table}: {exc}") from exc
            self.stats.record_copy(table, batches, time.perf_counter() - t0, int(self.wall() * 1000))
            return
        raise Transient(f"{table}: could not load after retries")

    @staticmethod
    def _copy(conn: psycopg.Connection, target: str, table: str, batches: list[Batch]) -> None:
        # One write of the joined bytes: each write() is a round of psycopg's wait loop (a generator and a poll),
        # and at 5,000 trades/s a COPY usually carries one batch, so three writes cost the writer two rounds more
        # per COPY than the memory copy of a few KB (psycopg splits buffers over its own limit itself).
        with conn.cursor() as cur, cur.copy(copy_statement(target, table)) as copy:
            copy.write(b"".join([COPY_HEADER, *[b.data for b in batches], COPY_TRAILER]))

    def _copy_staged(self, conn: psycopg.Connection, table: str, batches: list[Batch]) -> None:
        stage = f"_stage_{table}"
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table]))
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
            sql.Identifier(stage), sql.Identifier(table)))
        self._copy(conn, stage, table, batches)
        if table == "gaps":
            conn.execute(gaps_repo.upsert_gaps_sql(stage))
            return
        conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(table), cols, cols, sql.Identifier(stage)))

    def _create_partitions(self, conn: psycopg.Connection, table: str, batches: list[Batch]) -> None:
        if table not in tables.SPANS:
            raise Transient(f"{table}: no partition and not a partitioned table")
        lo = ms_to_dt(min(b.first_event_ms for b in batches))
        hi = ms_to_dt(max(b.last_event_ms for b in batches))
        try:
            with conn.transaction():
                created = partitions.ensure_partitions_for(conn, table, lo, hi)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.drop_connection()
            raise Transient(f"{table}: creating partitions: {exc}") from exc
        self.stats.partitions_created += len(created)
        log.info("created partitions on demand: %s", created)
