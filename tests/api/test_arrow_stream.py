"""A series page as a streamed Arrow response (collector.api.streaming): fetched in chunks, sent as one
record batch per chunk, the next cursor in a last, empty batch.

Every page's rows, across page and chunk boundaries (inside one millisecond, inside one microsecond's
neighbours, text holding the separator), equal the SQL ground truth; and a page that fails after it started
cannot become a silently truncated DataFrame: the HTTP response is cut off and the stream lacks its trailer.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pytest
from conftest import SEP_SYMBOL, SUBMS_SYMBOL, TIE_SYMBOL, ServerThread, _create_db
from helpers import wait_for
from psycopg.conninfo import conninfo_to_dict

from collector.api import encode
from collector.api.app import ApiSettings
from collector.client import Client, IncompleteResponse, read_page
from collector.db import partitions, schema

ARROW = {"Accept": encode.ARROW_MEDIA_TYPE}
WIDE = {"start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}


def _truth(url: str, symbol: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT floor(extract(epoch FROM time) * 1000)::int8, trade_id, price::float8, side, "
                            "last_trade_id FROM trades WHERE symbol = %s ORDER BY time, trade_id", (symbol,)).fetchall()


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    cols = [table.column("time").cast(pa.int64()).to_pylist()] + [
        table.column(c).to_pylist() for c in ("trade_id", "price", "side", "last_trade_id")]
    return list(zip(*cols, strict=True))


def test_pages_equal_the_table_across_page_and_chunk_boundaries(api_url: str, filled_db: str) -> None:
    """api_url streams five rows a chunk (conftest): pages of 6, 7, 13 and 1000 rows cross chunk and page
    boundaries inside one millisecond (TIE: five trades a millisecond), between microseconds of one
    millisecond (SUBMS) and over text holding the separator (SEP: its chunk is fetched again with lengths)."""
    with psycopg.connect(filled_db) as conn:
        busiest = conn.execute("SELECT symbol FROM trades GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()
    assert busiest is not None
    for symbol in (TIE_SYMBOL, SUBMS_SYMBOL, SEP_SYMBOL, busiest[0]):
        want = _truth(filled_db, symbol)
        assert len(want) >= 6, symbol
        for page_rows in (6, 7, 13, 1000):
            got = Client(api_url, page_rows=page_rows).trades(symbol, start=0, end="2100-01-01", as_="arrow")
            assert _rows(got) == want, (symbol, page_rows)


def test_a_page_is_sent_as_one_batch_per_chunk_then_the_cursor(api_url: str) -> None:
    """13 rows of 40, five a chunk: batches of 5, 5 and 3 rows (the sentinel 14th row is fetched, not sent),
    then an empty batch whose metadata is the next cursor, the same as the JSON page's."""
    params = {"symbol": TIE_SYMBOL, "limit": 13, **WIDE}
    r = httpx.get(f"{api_url}/api/v1/trades", params=params, headers=ARROW, timeout=30)
    assert r.status_code == 200 and "x-next-cursor" not in r.headers
    reader = pa.ipc.open_stream(r.content)
    sizes, metas = [], []
    while True:
        try:
            batch, meta = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        sizes.append(batch.num_rows)
        metas.append(dict(meta) if meta is not None else None)
    cursor = httpx.get(f"{api_url}/api/v1/trades", params=params, timeout=30).json()["next_cursor"]
    assert sizes == [5, 5, 3, 0]
    assert metas == [None, None, None, {b"next_cursor": cursor.encode()}]
    last = httpx.get(f"{api_url}/api/v1/trades", params={**params, "cursor": "0_0", "limit": 1000},
                     headers=ARROW, timeout=30)
    assert read_page(last.content)[1] is None  # the whole range: the trailer says no next page


def test_a_stream_without_its_trailer_is_refused() -> None:
    """A stream cut at a batch boundary parses cleanly: only the missing trailer tells it is incomplete."""
    schema = pa.schema([pa.field("x", pa.int64())])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        w.write_batch(pa.record_batch([pa.array([1, 2])], schema=schema))
    with pytest.raises(IncompleteResponse, match="trailer"):
        read_page(sink.getvalue().to_pybytes())


# --- a failure after the stream started -----------------------------------------------------------------------

BIG = "BIGSTREAMUSDT"
BIG_ROWS = 150_000  # ~11 MB of Arrow: more than the kernel's socket buffers can hold (see below)


@pytest.fixture(scope="module")
def big_db(pg_server_url: str) -> Iterator[str]:
    """A database of its own: one symbol with BIG_ROWS trades."""
    url = _create_db(pg_server_url)
    t0 = datetime(2025, 3, 12, tzinfo=UTC)
    try:
        with psycopg.connect(url) as conn:
            schema.ensure_schema(conn, "postgres")
            partitions.ensure_partitions_for(conn, "trades", t0, t0 + timedelta(days=1))
            conn.execute("""INSERT INTO trades SELECT %(t0)s::timestamptz + n * interval '1 ms', 'binance', %(sym)s, n,
                                   100 + n / 1000.0, 0.5, 50.25, 'buy', 'keep_all', n, n
                            FROM generate_series(1, %(n)s) n""", {"t0": t0, "sym": BIG, "n": BIG_ROWS})
            conn.commit()
        yield url
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{conninfo_to_dict(url)["dbname"]}" WITH (FORCE)')


class _SlowReader(http.client.HTTPConnection):
    """A connection whose receive buffer is small, so a response it does not read stays mostly unsent:
    the API blocks on sending, with its page's transaction still open."""

    def connect(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.connect((self.host, self.port))
        self.sock = s


def test_a_failure_after_the_stream_started_is_never_a_complete_page(big_db: str) -> None:
    """The API's session is terminated while the page is being sent: the response is cut off (an HTTP
    client gets IncompleteRead, not a clean end), what arrived lacks the trailer (IncompleteResponse), and
    the next request is served whole. Deterministic: with the client not reading, the API can have sent at
    most its socket buffers (tcp_wmem's 4 MB, the client's 8 kB, one batch) of the ~11 MB page, so its
    transaction is open when the session is terminated."""
    with ServerThread(ApiSettings(dsn=big_db, max_rows=BIG_ROWS, arrow_chunk_rows=10_000)) as srv:
        conn = _SlowReader("127.0.0.1", srv.port, timeout=60)
        conn.request("GET", f"/api/v1/trades?symbol={BIG}&start=0&end=2100-01-01&limit={BIG_ROWS}", headers=ARROW)
        resp = conn.getresponse()
        assert resp.status == 200
        head = resp.read(65536)
        with psycopg.connect(big_db, autocommit=True) as admin:
            in_page = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'collector-api' "
                       "AND xact_start IS NOT NULL AND datname = current_database()")
            wait_for(lambda: admin.execute(in_page).fetchall(), 30, "the page's transaction")
            pids = [r[0] for r in admin.execute(in_page).fetchall()]
            assert len(pids) == 1
            admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        with pytest.raises(http.client.IncompleteRead) as cut:
            resp.read()
        conn.close()
        with pytest.raises(IncompleteResponse):
            read_page(head + cut.value.partial)
        whole = Client(srv.url, page_rows=BIG_ROWS).trades(BIG, start=0, end="2100-01-01", as_="arrow")
        assert whole.num_rows == BIG_ROWS and whole.column("trade_id").to_pylist() == list(range(1, BIG_ROWS + 1))


def test_the_openapi_document_states_the_arrow_page_contract(api_url: str) -> None:
    spec = httpx.get(f"{api_url}/api/v1/openapi.json", timeout=30).json()
    assert "empty record batch whose custom metadata `next_cursor` is the cursor" in spec["info"]["description"]
    assert "cut off" in spec["info"]["description"]
    ok = spec["paths"]["/api/v1/trades"]["get"]["responses"]["200"]
    assert "ending with the cursor batch" in ok["description"]
    assert "Arrow" in ok["headers"]["X-Next-Cursor"]["description"]
    assert "cursor batch" not in spec["paths"]["/api/v1/latest"]["get"]["responses"]["200"]["description"]
