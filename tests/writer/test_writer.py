"""writer.py against a real PostgreSQL: exact landing, replays, failures, shutdown, partitions on demand,
the outage spool (bounded, durable before acknowledged, replayed oldest first and idempotently) and
maintenance after a recovery."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from helpers import now_ms, trade_ids, trades_batch

from collector.db.partitions import ensure_partitions_for
from collector.pipeline.encode import Batch, BatchBuilder, encode_candle, encode_funding
from collector.transport.link import WriterLink, decode_spool, encode_spool
from collector.writer.service import MAINTENANCE_LOCK_TIMEOUT_MS, Spool, SpoolFile, Writer, serve

DAY_MS = 86_400_000
# Nothing listens on port 1: connecting fails at once, like a database that is down.
DEAD_DSN = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1"


class Clock:
    """Monotonic clock the test moves by hand: no sleeping to wait for timers."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def test_batches_land_exactly(db_url: str) -> None:
    w = Writer(db_url, mode="postgres")
    t = now_ms()
    w.add(trades_batch(1, 100, t))
    w.add(trades_batch(101, 50, t))
    fb = BatchBuilder("funding")
    fb.add(encode_funding(t, "ETHUSDT", "2301.50000000", "2300.1", "0.00010000", t + 3_600_000), t)
    fb.add(encode_funding(t, "BTCUSDT", "43000", None, None, None), t)
    funding = fb.take()
    assert funding is not None
    w.add(funding)
    assert w.flush() is True
    assert trade_ids(db_url) == list(range(1, 151))
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT price::text, amount::text, usd_value, side, save_reason, first_trade_id, "
                           "last_trade_id, (extract(epoch FROM time) * 1000)::bigint FROM trades "
                           "WHERE trade_id = 7").fetchone()
        assert row == ("40007.10", "0.001", 47.0, "buy", "keep_all", 70, 72, t + 60)
        assert conn.execute("SELECT symbol, mark_price::text, index_price::text, funding_rate::text, "
                            "next_funding_time FROM funding ORDER BY symbol").fetchall() == [
            ("BTCUSDT", "43000", None, None, None),
            ("ETHUSDT", "2301.50000000", "2300.1", "0.00010000",
             datetime.fromtimestamp((t + 3_600_000) / 1000, UTC))]
    s = w.stats
    assert (s.trades_count, s.funding_count, s.errors) == (150, 2, 0)
    assert s.rows_written == {"trades": 150, "funding": 2} and s.batches_written == {"trades": 2, "funding": 1}
    assert s.last_trades_time == t + 99 * 10
    assert s.kept == {"keep_all": 150} and s.received == {"keep_all": 300}
    assert sum(s.copy_latency_hist) == 2 and s.copy_latency_last_s > 0
    w.close()


def test_flush_is_driven_by_age_and_size(db_url: str) -> None:
    clock = Clock()
    w = Writer(db_url, mode="postgres", clock=clock, max_age_s=0.25, max_rows=1000)
    w.connection()
    w.add(trades_batch(1, 10))
    w.tick()
    assert trade_ids(db_url) == []  # young and small: waits
    assert 0 < w.next_wakeup() <= 0.25
    clock.advance(0.25)
    w.tick()
    assert len(trade_ids(db_url)) == 10
    w.add(trades_batch(11, 1000))  # size reached: flushed without waiting
    w.tick()
    assert len(trade_ids(db_url)) == 1010
    w.close()


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


def test_unwritable_batches_are_spooled_and_reloaded(db_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    acked: list[Batch] = []
    dead = Writer(DEAD_DSN, mode="postgres", spool_dir=spool, on_committed=acked.extend)
    batch = trades_batch(1, 30)
    dead.add(batch)
    assert dead.close(deadline_s=0) == []  # nothing left over: it is on disk...
    assert acked == [batch] and len(list(spool.glob("pending-*.spool"))) == 1  # ...so it was acknowledged
    w = Writer(db_url, mode="postgres", spool_dir=spool)
    assert w.stats.spooled_batches == 1 and w.stats.spooled_bytes > 0 and w.pending_rows() == 0
    assert w.flush() and trade_ids(db_url) == list(range(1, 31))
    assert not list(spool.glob("pending-*")) and w.stats.spooled_batches == 0 == w.stats.spooled_bytes
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


def test_candles_are_rolled_up_after_1m_lands(db_url: str) -> None:
    w = Writer(db_url, mode="postgres")
    t0 = (now_ms() // 300_000) * 300_000 - 600_000  # two closed 5m buckets ago
    b = BatchBuilder("candles_1m")
    for m in range(5):
        t = t0 + m * 60_000
        b.add(encode_candle(t, "BTCUSDT", t + 59_999, str(100 + m), str(101 + m), str(99 + m), str(100.5 + m),
                            "1.5", "150", 10, "0.5", "50"), t)
    batch = b.take()
    assert batch is not None
    w.add(batch)
    assert w.flush()
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT open::text, high::text, low::text, close::text, volume::text, trades "
                           "FROM candles_5m").fetchone()
    assert row == ("100", "105", "99", "104.5", "7.5", 50)
    assert w.stats.candles_count == 5
    w.close()


def candles_batch(t0: int, minutes: list[int], symbol: str = "BTCUSDT") -> Batch:
    """1m candles opening at t0 + m minutes: open 100+m, high 101+m, low 99+m, close 100.5+m, volume 1.5."""
    b = BatchBuilder("candles_1m")
    for m in minutes:
        t = t0 + m * 60_000
        b.add(encode_candle(t, symbol, t + 59_999, str(100 + m), str(101 + m), str(99 + m), str(100.5 + m),
                            "1.5", "150", 10, "0.5", "50"), t)
    batch = b.take()
    assert batch is not None
    return batch


def candle_5m(db_url: str, view: str = "candles_5m") -> tuple | None:
    with psycopg.connect(db_url) as conn:
        return conn.execute(f"SELECT open::text, high::text, low::text, close::text, volume::text, trades "
                            f"FROM {view} ORDER BY time LIMIT 1").fetchone()


def test_a_late_candle_fixes_the_rollups_built_over_its_hole(db_url: str) -> None:
    """Minute 2 is missing when the 5m (and 1d) candles are first rolled up; it arrives later (REST repair,
    spool replay) in a batch of its own: exactly its periods are recomputed and now equal the full roll-up."""
    w = Writer(db_url, mode="postgres")
    t0 = (now_ms() // DAY_MS) * DAY_MS - DAY_MS  # yesterday: every bucket closed
    w.add(candles_batch(t0, [0, 1, 3, 4, 5]))
    assert w.flush()
    assert candle_5m(db_url) == ("100", "105", "99", "104.5", "6.0", 40)  # built over the hole
    w.add(candles_batch(t0, [2]))
    assert w.flush()
    assert candle_5m(db_url) == ("100", "105", "99", "104.5", "7.5", 50)
    assert candle_5m(db_url, "candles_1d") == ("100", "106", "99", "105.5", "9.0", 60)
    w.close()


def test_late_candle_periods_are_recomputed_one_range_each() -> None:
    from collector.writer.service import merge_ranges

    assert merge_ranges([(5, 7), (1, 3), (3, 4), (10, 12), (11, 15)]) == [(1, 4), (5, 7), (10, 15)]
    assert merge_ranges([]) == []


@pytest.mark.timescale
def test_timescaledb_views_take_a_late_candle(db_url: str, timescaledb_available: bool) -> None:
    """On TimescaleDB the 5m bucket is materialised over the hole once it is complete; the late candle's
    landing refreshes exactly that bucket (refresh_continuous_aggregate), so the view shows the full one."""
    if not timescaledb_available:
        pytest.skip("TimescaleDB extension not installed on this server")
    w = Writer(db_url, mode="timescaledb")
    t0 = (now_ms() // DAY_MS) * DAY_MS - DAY_MS
    w.add(candles_batch(t0, [0, 1, 3, 4, 5]))
    assert w.flush()
    with psycopg.connect(db_url) as conn:  # the bucket is materialised (not real-time aggregation)
        schema, table = conn.execute("SELECT materialization_hypertable_schema, materialization_hypertable_name "
                                     "FROM timescaledb_information.continuous_aggregates "
                                     "WHERE view_name = 'candles_5m_agg'").fetchone()
        assert conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0] == 1
    assert candle_5m(db_url) == ("100", "105", "99", "104.5", "6.0", 40)
    w.add(candles_batch(t0, [2]))
    assert w.flush()
    assert candle_5m(db_url) == ("100", "105", "99", "104.5", "7.5", 50)
    w.close()


@pytest.mark.timescale
def test_timescaledb_refuses_derived_candles(db_url: str, timescaledb_available: bool) -> None:
    if not timescaledb_available:
        pytest.skip("TimescaleDB extension not installed on this server")
    w = Writer(db_url, mode="timescaledb")
    w.connection()
    b = BatchBuilder("candles_5m")
    b.add(encode_candle(0, "BTCUSDT", 299_999, "1", "1", "1", "1", "1", "1", 1, "1", "1"), 0)
    batch = b.take()
    assert batch is not None
    w.add(batch)
    assert w.stats.refused_batches == 1 and w.pending_rows() == 0
    w.close()


# --- database outage: the spool ------------------------------------------------------------------------------


def outage_writer(tmp_path: Path, clock: Clock, acked: list[Batch], **kw: object) -> Writer:
    """A writer whose database is down (swap `w.dsn` for a real one to end the outage)."""
    return Writer(DEAD_DSN, mode="postgres", clock=clock, spool_dir=tmp_path / "spool", on_committed=acked.extend,
                  spool_after_s=5.0, **kw)  # type: ignore[arg-type]


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("pending-*.spool"))


def test_outage_spools_after_a_while_and_acknowledges_only_after_fsync(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, acked, events = Clock(), [], []
    w = outage_writer(tmp_path, clock, acked)
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    w.on_committed = lambda bs: (events.append(("ack", len(bs))), acked.extend(bs))
    batch = trades_batch(1, 20)
    w.add(batch)
    clock.advance(0.25)  # due
    w.tick()  # first failure: a dropped connection looks like this too, so nothing is spooled yet
    assert w.stats.errors == 1 and not spool_files(tmp_path) and not acked and w.pending_rows() == 20
    clock.advance(5.0)
    w.tick()
    (path,) = spool_files(tmp_path)
    assert acked == [batch] and w.pending_rows() == 0 and w.stats.spooled_batches == 1
    # the file's data, then the directory holding its new name, are durable before the worker hears of it
    assert [e[0] for e in events] == ["fsync", "fsync", "ack"]
    assert events[0][1].endswith(".tmp") and events[1][1] == str(tmp_path / "spool")
    assert w.stats.spooled_bytes == path.stat().st_size
    w.dsn = db_url  # the database is back
    clock.advance(60.0)
    w.tick()
    assert trade_ids(db_url) == list(range(1, 21)) and not spool_files(tmp_path) and w.stats.spooled_batches == 0
    w.close()


def test_a_spool_that_cannot_be_made_durable_acknowledges_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock, acked = Clock(), []
    w = outage_writer(tmp_path, clock, acked)

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    w.add(trades_batch(1, 20))
    clock.advance(0.25)
    w.tick()
    clock.advance(5.0)
    w.tick()
    assert not acked and w.pending_rows() == 20 and w.stats.spooled_batches == 0
    assert not list((tmp_path / "spool").iterdir())  # neither a file nor a leftover .tmp
    assert "could not spool 1 batches (kept in memory): [Errno 5]" in caplog.text


def test_the_spool_is_bounded_and_a_full_spool_holds_batches_back(db_url: str, tmp_path: Path) -> None:
    clock, acked = Clock(), []
    batches = [trades_batch(i * 100 + 1, 100) for i in range(6)]
    size = len(encode_spool([batches[0]]))
    # one batch per file, room for two files; back-pressure once four batches wait in memory
    w = outage_writer(tmp_path, clock, acked, spool_max_bytes=2 * size + size // 2, spool_file_max_bytes=1,
                      max_pending_bytes=4 * len(batches[0].data))
    for b in batches:
        w.add(b)
    clock.advance(0.25)
    w.tick()
    clock.advance(5.0)
    w.tick()
    assert len(spool_files(tmp_path)) == 2 and sum(p.stat().st_size for p in spool_files(tmp_path)) <= 2.5 * size
    assert acked == batches[:2]  # exactly what is on disk, oldest first
    assert w.pending_rows() == 400 and not w.accepting()  # nothing dropped: held back, unacknowledged
    assert w.stats.spool_full >= 1 and w.stats.spooled_batches == 2
    clock.advance(1.0)
    w.tick()  # still full: nothing changes, nothing is lost
    assert len(spool_files(tmp_path)) == 2 and w.pending_rows() == 400
    w.dsn = db_url
    clock.advance(60.0)
    assert w.close(deadline_s=30) == []
    assert trade_ids(db_url) == list(range(1, 601)) and not spool_files(tmp_path)


def test_the_spool_is_replayed_oldest_first(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool")
    monkeypatch.setattr(time, "time_ns", lambda: 5)  # a clock stepping back must not reorder the files
    written = [spool.write([trades_batch(i * 10 + 1, 10)]) for i in range(4)]
    assert all(f is not None for f in written)
    seqs = [f.seq for f in written if f is not None]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    read: list[int] = []
    real_read = Spool.read

    def spy(f: SpoolFile) -> list[Batch]:
        read.append(f.seq)
        return real_read(f)

    monkeypatch.setattr(Spool, "read", staticmethod(spy))
    w = Writer(db_url, mode="postgres", spool_dir=tmp_path / "spool")
    assert w.flush()  # one file per flush, so live batches are never held up by a long replay
    assert read == seqs[:1] and len(spool_files(tmp_path)) == 3
    while w.spool_waiting():
        assert w.flush()
    assert read == seqs and trade_ids(db_url) == list(range(1, 41))
    w.close()


def test_a_spool_file_loaded_twice_adds_nothing_twice(db_url: str, tmp_path: Path) -> None:
    a, b = trades_batch(1, 50), trades_batch(51, 50)
    w = Writer(db_url, mode="postgres")
    w.add(a)
    assert w.flush()
    w.close()
    # a writer killed after committing `a` from this file but before deleting it: the next one loads it again
    spool = Spool(tmp_path / "spool")
    spool.write([a, b])
    Path(tmp_path / "spool" / "pending-00000000000000000099-1.tmp").write_bytes(b"half a fi")  # torn write
    w2 = Writer(db_url, mode="postgres", spool_dir=tmp_path / "spool")
    assert w2.stats.spooled_batches == 2
    assert w2.flush()
    assert trade_ids(db_url) == list(range(1, 101)) and w2.stats.replayed_flushes == 1
    assert not list((tmp_path / "spool").iterdir())  # replayed file deleted, torn .tmp cleaned up
    w2.close()


def test_a_read_only_database_is_an_outage_too(db_url: str, pg_server_url: str, tmp_path: Path) -> None:
    clock, acked = Clock(), []
    w = Writer(db_url, mode="postgres", clock=clock, spool_dir=tmp_path / "spool", on_committed=acked.extend)
    w.connection()
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
        admin.execute("SELECT pg_terminate_backend(%s)", (w.backend_pid,))
        w.add(trades_batch(1, 10))
        clock.advance(0.25)
        w.tick()
        assert w.stats.errors >= 1 and not acked
        clock.advance(5.0)
        w.tick()
        assert len(acked) == 1 and len(spool_files(tmp_path)) == 1 and trade_ids(db_url) == []
        admin.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
    clock.advance(60.0)
    w.tick()
    assert trade_ids(db_url) == list(range(1, 11)) and not spool_files(tmp_path)
    w.close()


# --- maintenance after an outage ---------------------------------------------------------------------------------


def expired_trades_partition(db_url: str) -> str:
    """Create a trades partition 30 days old (retention: 7 days) and return its name."""
    old = datetime.now(UTC) - timedelta(days=30)
    with psycopg.connect(db_url, autocommit=True) as conn:
        (name,) = ensure_partitions_for(conn, "trades", old, old)
    return name


def partition_exists(db_url: str, name: str) -> bool:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def tick_until(w: Writer, clock: Clock, pred: Callable[[], bool], ticks: int = 30) -> bool:
    """Drive the writer tick by tick (moving its clock 0.1 s each) until pred() holds."""
    for _ in range(ticks):
        if pred():
            return True
        clock.advance(0.1)
        w.tick()
    return pred()


def test_retention_runs_right_after_a_recovery(db_url: str, tmp_path: Path) -> None:
    clock = Clock()
    w = Writer(db_url, mode="postgres", clock=clock, spool_dir=tmp_path / "spool")
    assert tick_until(w, clock, lambda: not w._maintenance_todo and w._next_maintenance > clock())  # hourly now
    name = expired_trades_partition(db_url)
    w._drop_connection()
    w.dsn, live = DEAD_DSN, w.dsn  # outage
    w.add(trades_batch(1, 10))
    clock.advance(1.0)
    w.tick()
    assert w.stats.errors == 1
    w.dsn = live
    clock.advance(60.0)  # well past the retry, far from the hourly maintenance
    assert tick_until(w, clock, lambda: not partition_exists(db_url, name))
    assert w.stats.partitions_dropped == 1 and trade_ids(db_url) == list(range(1, 11))
    w.close()


def test_maintenance_gives_way_to_a_reader_instead_of_stalling_flushes(db_url: str) -> None:
    clock = Clock()
    w = Writer(db_url, mode="postgres", clock=clock)
    w.connection()
    name = expired_trades_partition(db_url)
    with psycopg.connect(db_url) as reader:
        reader.execute(f'SELECT count(*) FROM "{name}"')  # holds ACCESS SHARE until the transaction ends
        w.add(trades_batch(1, 10))
        clock.advance(1.0)
        t0 = time.monotonic()
        assert tick_until(w, clock, lambda: "maintenance of trades" in (w.stats.last_error or ""))
        elapsed = time.monotonic() - t0
        # the DROP waited for its lock at most MAINTENANCE_LOCK_TIMEOUT_MS, then gave up; the flush landed
        assert elapsed < MAINTENANCE_LOCK_TIMEOUT_MS / 1000 + 2.0, elapsed
        assert trade_ids(db_url) == list(range(1, 11)) and partition_exists(db_url, name)
    clock.advance(60.0)
    assert tick_until(w, clock, lambda: not partition_exists(db_url, name))
    w.close()


def _serve_until_acked(dsn: str, spool: Path, batches: list[Batch], timeout: float) -> bool:
    """Run serve() in a thread, send `batches` over the socket like a worker; True if all were acknowledged."""
    path = str(spool.parent / "w.sock")
    stop = threading.Event()
    th = threading.Thread(target=serve, args=(path, stop, dsn),
                          kwargs={"mode": "postgres", "max_age_s": 0.05, "spool_dir": spool, "spool_after_s": 0.5,
                                  "shutdown_deadline_s": 1.0})
    th.start()

    async def send() -> bool:
        link = WriterLink(path)
        link_stop = asyncio.Event()
        task = asyncio.create_task(link.run(link_stop))
        for b in batches:
            link.send(b)
        ok = await link.wait_acked(timeout)
        link_stop.set()
        await asyncio.wait_for(task, 10)
        return ok

    try:
        return asyncio.run(send())
    finally:
        stop.set()
        th.join(30)


def test_workers_are_acknowledged_from_the_spool_while_the_database_is_down(db_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    batches = [trades_batch(1 + i * 10, 10) for i in range(10)]
    empty = Batch("trades", 0, b"", 0, 0, 0)  # nothing to write: acknowledged at once, never held
    assert _serve_until_acked(DEAD_DSN, spool, [*batches, empty], timeout=30)
    assert spool_files(tmp_path)  # acknowledged because durable on disk; the database never saw them
    assert _serve_until_acked(db_url, spool, [], timeout=5)  # the next writer, with the database back
    assert trade_ids(db_url) == list(range(1, 101)) and not spool_files(tmp_path)


def test_a_heavy_backlog_is_spooled_before_the_outage_is_declared(tmp_path: Path) -> None:
    clock, acked = Clock(), []
    w = outage_writer(tmp_path, clock, acked, spool_backlog_bytes=3 * len(trades_batch(1, 100).data))
    for i in range(4):
        w.add(trades_batch(1 + i * 100, 100))
    clock.advance(0.25)
    w.tick()  # the first failed flush, well before spool_after_s: the backlog alone decides
    assert len(acked) == 4 and w.pending_rows() == 0 and len(spool_files(tmp_path)) == 1


def test_an_unreadable_spool_file_is_set_aside_and_the_rest_replayed(db_url: str, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write([trades_batch(1, 10)])
    (tmp_path / "spool" / "pending-00000000000000000001-1.pkl").write_bytes(b"not a pickle")  # oldest
    w = Writer(db_url, mode="postgres", spool_dir=tmp_path / "spool")
    assert w.stats.spooled_batches == 2
    while w.spool_waiting():
        assert w.flush()
    assert trade_ids(db_url) == list(range(1, 11)) and w.stats.spooled_batches == 0
    assert [p.name for p in (tmp_path / "spool").iterdir()] == ["corrupt-pending-00000000000000000001-1.pkl"]
    assert "unreadable" in (w.stats.last_error or "")
    w.close()


# --- gaps: one row per gap, the most advanced version wins -------------------------------------------------------


def gap_batch(*versions: tuple[str, int]) -> Batch:
    """Versions (state, updated ms) of the gap BTCUSDT trades 10..19."""
    from collector.pipeline.encode import encode_gap

    b = BatchBuilder("gaps")
    t = now_ms()
    for state, updated in versions:
        b.add(encode_gap("BTCUSDT", 10, 19, t, t + 5 if state == "filled" else None, state=state, reason=state,
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
