"""collector.writer.sink (driven through the Writer) against a real PostgreSQL: replays add nothing twice (the
ON CONFLICT staging path), lock and connection failures are retried, partitions are created on demand, a bad
batch is isolated, and a gap's versions merge into one row."""

from __future__ import annotations

from pathlib import Path

import psycopg
from helpers import now_ms, trade_ids, trades_batch
from writer_helpers import DAY_MS, Clock

from collector.pipeline.batches import Batch, BatchBuilder
from collector.pipeline.encode import RowEncoder
from collector.transport.frames import decode_spool
from collector.writer.service import Writer

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them


def test_replayed_batch_produces_no_duplicates(db_url: str) -> None:
    a, b = trades_batch(1, 100), trades_batch(101, 100)
    w = Writer(db_url, mode="postgres")
    w.add(a)
    assert w.flush()
    # the commit outcome was "unknown" to a writer that sends `a` again, together with new rows
    w2 = Writer(db_url, mode="postgres")
    w2.add(a)
    w2.add(b)
    assert w2.flush()
    assert trade_ids(db_url) == list(range(1, 201))
    assert w2.stats.replayed_flushes == 1 and w2.stats.trades_count == 200
    w2.add(b)  # a plain replay lands nothing, fails nothing
    assert w2.flush() and trade_ids(db_url) == list(range(1, 201))
    w.close()
    w2.close()


def test_locked_table_is_retried_and_lands_once(db_url: str) -> None:
    clock = Clock()
    w = Writer(db_url, mode="postgres", clock=clock, lock_timeout_ms=100)
    w.connection()
    with psycopg.connect(db_url) as locker:
        locker.execute("LOCK TABLE trades IN ACCESS EXCLUSIVE MODE")
        w.add(trades_batch(1, 50))
        assert w.flush() is False
        assert w.stats.errors == 1 and "lock" in (w.stats.last_error or "")
        assert w.pending_rows() == 50
        locker.rollback()
    clock.advance(0.1)
    w.tick()  # still backing off: nothing happens
    assert w.pending_rows() == 50
    clock.advance(1.0)
    w.tick()
    assert w.pending_rows() == 0 and trade_ids(db_url) == list(range(1, 51))
    w.close()


def test_killed_connection_is_retried_and_lands_once(db_url: str, pg_server_url: str) -> None:
    w = Writer(db_url, mode="postgres")
    w.add(trades_batch(1, 10))
    assert w.flush()
    pid = w.backend_pid
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    w.add(trades_batch(11, 10))
    assert w.flush() is False and w.stats.errors == 1
    assert w.flush() is True  # reconnects
    assert w.backend_pid != pid
    assert trade_ids(db_url) == list(range(1, 21)) and w.stats.trades_count == 20
    w.close()


def test_partitions_are_created_on_demand(db_url: str) -> None:
    w = Writer(db_url, mode="postgres")
    old, future = now_ms() - 20 * DAY_MS, now_ms() + 30 * DAY_MS
    w.add(trades_batch(1, 5, old))
    w.add(trades_batch(6, 5, future))
    assert w.flush()
    assert trade_ids(db_url) == list(range(1, 11))
    assert w.stats.partitions_created >= 2 and w.stats.errors == 0
    w.close()


def test_a_bad_batch_is_isolated_and_the_rest_lands(db_url: str, tmp_path: Path) -> None:
    good = trades_batch(1, 10)
    bad = Batch("trades", 1, b"\x00\x0a\x00\x00\x00\x08garbage", good.first_event_ms, good.last_event_ms, 0)
    w = Writer(db_url, mode="postgres", spool_dir=tmp_path)
    w.add(good)
    w.add(bad)
    w.add(trades_batch(11, 10))
    assert w.flush()
    assert trade_ids(db_url) == list(range(1, 21))
    assert w.stats.rejected_batches == 1 and w.pending_rows() == 0
    (rejected,) = tmp_path.glob("rejected-*.spool")
    assert decode_spool(rejected.read_bytes())[0] == [bad]
    w.close()


# --- gaps: one row per gap, the most advanced version wins -------------------------------------------------------


def gap_batch(*versions: tuple[str, int]) -> Batch:
    """Versions (state, updated ms) of the gap BTCUSDT trades 10..19."""

    b = BatchBuilder("gaps")
    t = now_ms()
    for state, updated in versions:
        b.add(BINANCE.gap("BTCUSDT", 10, 19, t, t + 5 if state == "filled" else None, state=state, reason=state,
                         updated_at_ms=t + updated), t)
    batch = b.take()
    assert batch is not None
    return batch


def gap_rows(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT symbol, kind, from_id, to_id, state, filled_at IS NOT NULL FROM gaps").fetchall()


def test_gap_versions_land_as_one_row_whatever_their_order(db_url: str) -> None:
    w = Writer(db_url, mode="postgres")
    w.add(gap_batch(("detected", 0)))
    assert w.flush()
    assert gap_rows(db_url) == [("BTCUSDT", "trades", 10, 19, "detected", False)]
    w.add(gap_batch(("filling", 1), ("filled", 2), ("filling", 1)))  # several versions in one flush
    assert w.flush()
    assert gap_rows(db_url) == [("BTCUSDT", "trades", 10, 19, "filled", True)]
    w.add(gap_batch(("detected", 9)))  # a late re-detection cannot undo "filled"
    w.add(gap_batch(("unfillable", 10)))
    assert w.flush()
    assert gap_rows(db_url) == [("BTCUSDT", "trades", 10, 19, "filled", True)]
    w.close()


def test_a_stopped_repair_goes_back_to_detected(db_url: str) -> None:
    w = Writer(db_url, mode="postgres")
    w.add(gap_batch(("detected", 0), ("filling", 1)))
    assert w.flush()
    w.add(gap_batch(("detected", 2)))  # stopped mid-repair: newer, same rank
    assert w.flush()
    assert gap_rows(db_url) == [("BTCUSDT", "trades", 10, 19, "detected", False)]
    w.close()


def test_every_tables_kept_copy_statement_is_accepted_by_the_server(db_url: str) -> None:
    # copy_statement quotes once and keeps the bytes (no connection at hand then): each table's, and a
    # staging target's, must still be a COPY the server runs, column list and all.
    from collector.db.schema import ensure_schema
    from collector.pipeline.encode import COLUMNS, COPY_HEADER, COPY_TRAILER
    from collector.writer.sink import copy_statement

    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres")
        for table in COLUMNS:
            assert copy_statement(table, table) is copy_statement(table, table)
            with conn.cursor() as cur:
                with cur.copy(copy_statement(table, table)) as copy:
                    copy.write(COPY_HEADER)
                    copy.write(COPY_TRAILER)
                assert cur.rowcount == 0, table
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE _stage_trades (LIKE trades) ON COMMIT DELETE ROWS")
            with conn.cursor() as cur, cur.copy(copy_statement("_stage_trades", "trades")) as copy:
                copy.write(COPY_HEADER)
                copy.write(COPY_TRAILER)
    assert copy_statement("_stage_trades", "trades").startswith(b'COPY "_stage_trades" ("time", "venue"')
