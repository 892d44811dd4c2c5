"""writer.py against a real PostgreSQL: exact landing, replays, failures, shutdown, partitions on demand."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from collector.encode import Batch, BatchBuilder, encode_candle, encode_funding, encode_trade
from collector.writer import Writer

DAY_MS = 86_400_000


class Clock:
    """Monotonic clock the test moves by hand: no sleeping to wait for timers."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def now_ms() -> int:
    return int(time.time() * 1000)


def trades_batch(start_id: int, n: int, t0: int | None = None, step_ms: int = 10, reason: str = "keep_all") -> Batch:
    t0 = now_ms() if t0 is None else t0
    b = BatchBuilder("trades")
    for i in range(start_id, start_id + n):
        t = t0 + (i - start_id) * step_ms
        b.add(encode_trade(t, "BTCUSDT", i, f"{40000 + i}.10", "0.001", 40.0 + i, "buy" if i % 2 else "sell",
                           reason, i * 10, i * 10 + 2), t)
    batch = b.take(kept={reason: n}, received={reason: 2 * n})
    assert batch is not None
    return batch


def trade_ids(db_url: str) -> list[int]:
    with psycopg.connect(db_url) as conn:
        return [r[0] for r in conn.execute("SELECT trade_id FROM trades ORDER BY trade_id").fetchall()]


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
    dead = Writer("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1", mode="postgres", spool_dir=spool)
    dead.add(trades_batch(1, 30))
    left = dead.close(deadline_s=0)
    assert len(left) == 1 and len(list(spool.glob("pending-*.pkl"))) == 1
    w = Writer(db_url, mode="postgres", spool_dir=spool)
    w.connection()  # loads the spool
    assert w.pending_rows() == 30 and not list(spool.glob("pending-*.pkl"))
    assert w.flush() and trade_ids(db_url) == list(range(1, 31))
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
    (rejected,) = tmp_path.glob("rejected-*.pkl")
    assert pickle.loads(rejected.read_bytes()) == [bad]
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
