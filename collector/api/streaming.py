"""A series page as an Arrow IPC stream, fetched from PostgreSQL and sent in chunks, so that PostgreSQL, the
API and the client's socket read work at the same time.

Why: fetched whole (collector.api.columnar), a 100k-row page was strictly sequential: PostgreSQL aggregated
every column of the page, then the API decoded and encoded it, then the client read it; the machine's
second core sat idle most of the request. Here the page is fetched as consecutive chunks of `chunk_rows`
rows, each one statement of the same column aggregates over the next range of the venue's primary key,
and while PostgreSQL computes chunk k+1 the API decodes chunk k and sends it as one record batch (the
client reads it meanwhile). Only the last chunk's decoding and reading is not overlapped.

Exactness: the chunks of a page are read in one REPEATABLE READ transaction (one snapshot, so a row
committed meanwhile cannot shift a boundary), and each chunk starts where the previous one ended, by the
same rule as the page cursor but at the exact (microsecond) time: rows at time >= the last row's time,
skipping the rows of that exact time already fetched (chunk_start()). A page whose rows come from two or
more venues is fetched whole (columnar.merge_venues: the venues' rows interleave by time) and sent the
same way, in batches; the first chunk tells which case it is, because a venue without a row among its
first rows has none in the range.

The cursor: the stream's schema is sent before the page's end is known, so the next cursor travels in the
custom metadata of a last, empty record batch (TRAILER_KEY; an empty value: no next page). That batch is
also the page's completeness mark: a stream that ends without it was cut off (collector.client raises).
An error after the first bytes were sent cannot become an HTTP status any more: the response is aborted
(the connection closes without the chunked encoding's last chunk), so every HTTP client sees an error,
and a reader of the Arrow stream alone finds no trailer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from collector.api import columnar, encode, query
from collector.api.query import Series

log = logging.getLogger(__name__)

# The custom metadata key of a series page's last (empty) record batch: the next cursor, "" when none.
TRAILER_KEY = "next_cursor"
# timestamptz's binary epoch, for a chunk boundary at an exact microsecond
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Boundary:
    """Where the next chunk of one venue's range starts: rows at time >= `time`, skipping `offset` rows of
    exactly that time (the ones already fetched)."""

    time: datetime
    offset: int


def chunk_start(us: np.ndarray[Any, Any], previous: Boundary | None) -> Boundary:
    """The boundary after a chunk whose time column (timestamptz microseconds since 2000, in key order) is
    `us` and which started at `previous` (None: the page's first chunk, which starts at a millisecond and
    never at an exact time of its rows). A chunk all of one time continues the previous count."""
    last = int(us[-1])
    same = len(us) - int(np.searchsorted(us, last))
    at = _PG_EPOCH + timedelta(microseconds=last)
    if previous is not None and previous.time == at and same == len(us):
        same += previous.offset
    return Boundary(at, same)


class _Encoder:
    """An Arrow IPC stream written batch by batch: each call returns the bytes to send for it (pyarrow's
    stream writer writes into this object, pa.PythonFile's file interface)."""

    closed = False

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._parts: list[bytes] = []
        self._writer = pa.ipc.new_stream(pa.PythonFile(self, mode="w"), schema)

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out

    def batch(self, arrays: Sequence[pa.Array]) -> bytes:
        self._writer.write_batch(pa.RecordBatch.from_arrays(list(arrays), schema=self.schema))
        return self._drain()

    def trailer(self, cursor: str | None) -> bytes:
        """The last, empty batch carrying the cursor (TRAILER_KEY), then the end-of-stream marker."""
        empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in self.schema], schema=self.schema)
        self._writer.write_batch(empty, custom_metadata={TRAILER_KEY: cursor or ""})
        self._writer.close()
        return self._drain()


Conn = psycopg.AsyncConnection[Any]


async def _rows(conn: Conn, statement: sql.Composed, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    cur = conn.cursor(binary=True)
    await cur.execute(statement, params)
    return list(await cur.fetchall())


async def _chunk(conn: Conn, series: Series, with_reason: bool, params: dict[str, Any]) -> tuple[Any, ...]:
    """One venue's chunk (params["venues"] holds one venue) as venue_pages_sql's row."""
    return (await _rows(conn, columnar.venue_pages_sql(series, with_reason, offset=True), params))[0]


async def _decode(conn: Conn, series: Series, with_reason: bool, params: dict[str, Any], row: tuple[Any, ...],
                  symbol: str) -> list[pa.Array]:
    """A chunk's row -> its arrays; a text value holding columnar.SEPARATOR: fetched again with lengths."""
    given = {"symbol": symbol, "venue": str(row[0])}
    try:
        return columnar._decode(row[1:], series.columns, given, columnar.NUMERIC_COLUMNS)[0]
    except columnar.SeparatorInText:
        rows = await _rows(conn, columnar.venue_pages_sql(series, with_reason, True, offset=True), params)
        return columnar._decode(rows[0][1:], series.columns, given, columnar.NUMERIC_COLUMNS, True)[0]


def _times(row: tuple[Any, ...]) -> np.ndarray[Any, Any]:
    """A chunk row's time column (its first, never null) as timestamptz microseconds, without decoding the
    rest: all the next chunk's boundary needs."""
    return np.frombuffer(columnar._bytes(row[2]), ">i8").astype("<i8")


async def _venues_with_rows(conn: Conn, series: Series, with_reason: bool, params: dict[str, Any]) -> list[str]:
    """The venues asked for that have a row in the page's range: one descent of each one's key (a LATERAL
    with LIMIT 1, which PostgreSQL runs per venue; an EXISTS became a semi-join over the symbol's rows,
    61 ms for 100k trades)."""
    statement = sql.SQL("SELECT v.name FROM unnest(%(venues)s::text[]) v(name) CROSS JOIN LATERAL ({}) r").format(
        query.venue_range_sql(series, sql.SQL("1"), with_reason))
    return [str(r[0]) for r in await _rows(conn, statement, {**params, "skip": 0, "limit": 1})]


async def stream_series_page(pool: AsyncConnectionPool[Conn], series: Series, params: dict[str, Any],
                             symbol: str, start: query.Cursor, limit: int, with_reason: bool, chunk_rows: int,
                             timeout: float) -> AsyncGenerator[bytes]:
    """The page as Arrow IPC bytes, batch by batch (see the module docstring). `params` are the page's
    venue_pages_sql parameters. The first item is b"" once the page's first statement ran: the caller
    takes it before sending the status, so an error up to there is still an HTTP error (400, 503); after
    it an error aborts the response."""
    enc = _Encoder(encode.arrow_schema(series.columns, columnar.PAGE_GIVEN))
    target = start.skip + limit + 1  # of one venue's range: the rows to skip, the page, the sentinel
    if limit + 1 <= chunk_rows:  # one chunk: one statement, as before streaming (no transaction, no probe)
        async with pool.connection(timeout=timeout) as conn:
            got = await _whole(conn, series, with_reason, params, symbol, start, limit)
        yield b""
        for part in _sent_whole(enc, *got, start, limit, chunk_rows):
            yield part
        return
    async with pool.connection(timeout=timeout) as conn, conn.transaction():
        # one snapshot for every statement of the page (see the module docstring)
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        venues = await _venues_with_rows(conn, series, with_reason, params)
        if len(venues) > 1:  # the venues' rows interleave: the whole page, merged
            got = await _whole(conn, series, with_reason, params, symbol, start, limit)
            yield b""
            for part in _sent_whole(enc, *got, start, limit, chunk_rows):
                yield part
            return
        if not venues:
            yield b""
            yield enc.trailer(None)
            return
        one = {**params, "venues": venues}
        chunk_params = {**one, "skip": 0, "limit": start.skip + min(chunk_rows, limit + 1)}
        row = await _chunk(conn, series, with_reason, chunk_params)
        started = False
        fetched = 0
        boundary: Boundary | None = None
        page_ms: list[np.ndarray[Any, Any]] = []
        task: asyncio.Task[tuple[Any, ...]] | None = None
        try:
            while True:
                us = _times(row)
                n = len(us)
                before, fetched = fetched, fetched + n
                params_now = chunk_params
                if n == chunk_params["limit"] and fetched < target:
                    # the next statement is sent before this chunk is decoded and sent: PostgreSQL works on it
                    # meanwhile
                    boundary = chunk_start(us, boundary)
                    chunk_params = {**one, "lo": boundary.time, "skip": boundary.offset,
                                    "limit": min(chunk_rows, target - fetched)}
                    task = asyncio.create_task(_chunk(conn, series, with_reason, chunk_params))
                    await asyncio.sleep(0)  # runs the task up to its first wait: the statement is sent
                if not started:  # only now: the second statement runs while the response starts
                    started = True
                    yield b""
                lo, hi = max(start.skip - before, 0), min(start.skip + limit - before, n)
                if hi > lo:
                    arrays = await _decode(conn, series, with_reason, params_now, row, symbol)
                    page_ms.append(columnar.to_ms(us[lo:hi]))
                    yield enc.batch([a.slice(lo, hi - lo) for a in arrays])
                if task is None:
                    break
                row = await task
                task = None
        finally:
            if task is not None:  # the response was abandoned (or failed) with a statement running
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        ms = np.concatenate(page_ms) if page_ms else np.zeros(0, np.int64)
        nxt = query.next_cursor(columnar.last_millisecond(ms), start, limit, max(fetched - start.skip, 0))
        yield enc.trailer(nxt.encode() if nxt else None)


def _sent_whole(enc: _Encoder, arrays: list[pa.Array], ms: np.ndarray[Any, Any], start: query.Cursor,
                limit: int, chunk_rows: int) -> Iterator[bytes]:
    """A page fetched whole (with its sentinel row), as batches of chunk_rows and the trailer."""
    for lo in range(0, min(limit, len(ms)), chunk_rows):
        yield enc.batch([a.slice(lo, min(chunk_rows, limit - lo)) for a in arrays])
    nxt = query.next_cursor(columnar.last_millisecond(ms[:limit]), start, limit, len(ms))
    yield enc.trailer(nxt.encode() if nxt else None)


async def _whole(conn: Conn, series: Series, with_reason: bool, params: dict[str, Any], symbol: str,
                 start: query.Cursor, limit: int) -> tuple[list[pa.Array], np.ndarray[Any, Any]]:
    """The page of several venues as one statement, merged (columnar.merge_venues), with the sentinel."""
    page = {**params, "limit": limit + 1}
    try:
        rows = await _rows(conn, columnar.venue_pages_sql(series, with_reason), page)
        return columnar.merge_venues(rows, series.columns, symbol, start.skip, limit + 1)
    except columnar.SeparatorInText:  # rare: fetched again with each text value's length
        rows = await _rows(conn, columnar.venue_pages_sql(series, with_reason, text_lengths=True), page)
        return columnar.merge_venues(rows, series.columns, symbol, start.skip, limit + 1, True)
