"""collector.writer.service against a real PostgreSQL: batches land exactly, flushes are driven by age and size,
and serve() acknowledges each batch to its worker once it is safe (committed, or spooled during an outage)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from helpers import now_ms, trade_ids, trades_batch
from writer_helpers import DEAD_DSN, Clock, spool_files

from collector.pipeline.batches import Batch, BatchBuilder
from collector.pipeline.encode import RowEncoder
from collector.transport.link import WriterLink
from collector.writer.loop import serve
from collector.writer.service import Writer

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them


def test_batches_land_exactly(db_url: str) -> None:
    w = Writer(db_url, mode="postgres")
    t = now_ms()
    w.add(trades_batch(1, 100, t))
    w.add(trades_batch(101, 50, t))
    fb = BatchBuilder("funding")
    fb.add(BINANCE.funding(t, "ETHUSDT", "2301.50000000", "2300.1", "0.00010000", t + 3_600_000), t)
    fb.add(BINANCE.funding(t, "BTCUSDT", "43000", None, None, None), t)
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
