"""collector.writer.pending and collector.writer.outage's pure policy, tested directly: the running row and byte
totals always equal the sums over what waits (through add, flush, a failed flush, spooling), the flush
triggers, and the backoff and spool decisions."""

from __future__ import annotations

from pathlib import Path

from helpers import trade_ids, trades_batch
from writer_helpers import DEAD_DSN, Clock, outage_writer, spool_files

from collector.pipeline.batches import Batch
from collector.writer.outage import BACKOFF_INITIAL_S, BACKOFF_MAX_S, SPOOL_EVERY_S, OutagePolicy, split_files
from collector.writer.pending import Pending
from collector.writer.service import Writer


def sums(p: Pending) -> tuple[int, int]:
    """What the running totals must equal: the rows and bytes of every waiting batch, summed afresh."""
    return sum(b.rows for b in p.all()), sum(len(b.data) for b in p.all())


def candles(n: int) -> Batch:
    return Batch("candles_1m", n, b"c" * (100 * n), 0, 0, 0)


def test_running_totals_follow_every_change() -> None:
    p = Pending()
    a, b, c, d = trades_batch(1, 10), trades_batch(11, 20), candles(3), trades_batch(31, 5)
    assert (p.rows, p.nbytes) == (0, 0) == sums(p) and not p
    for x in (a, c, b):
        p.add(x, 1.0)
        assert (p.rows, p.nbytes) == sums(p)
    assert (p.rows, p.nbytes) == (33, len(a.data) + len(b.data) + len(c.data))
    assert p.tables() == ["trades", "candles_1m"] and p.batches("trades") == [a, b]
    assert p.take("trades") == [a, b]  # flushed
    assert (p.rows, p.nbytes) == sums(p) == (3, 300)
    p.add(d, 2.0)
    p.add(a, 2.0)
    p.forget([d, c])  # spooled
    assert (p.rows, p.nbytes) == sums(p) == (10, len(a.data))
    assert p.tables() == ["trades"] and p.since("trades") == 2.0
    p.add(c, 3.0)
    assert p.drop("candles_1m") == [c]  # a table the back-end does not take
    assert (p.rows, p.nbytes) == sums(p) == (10, len(a.data))
    assert p.take("trades") == [a] and (p.rows, p.nbytes) == (0, 0) == sums(p) and not p
    assert p.tables() == [] and p.oldest(default=9.0) == 9.0


def test_a_table_is_due_by_rows_bytes_or_age() -> None:
    p = Pending()
    t = trades_batch(1, 10)
    c = Batch("candles_1m", 2, b"c" * (len(t.data) + 100), 0, 0, 0)  # fewer rows, more bytes
    p.add(t, 100.0)
    p.add(c, 100.2)
    assert p.due(100.2, max_rows=1000, max_bytes=1 << 20, max_age_s=0.25) == []
    assert p.due(100.25, max_rows=1000, max_bytes=1 << 20, max_age_s=0.25) == ["trades"]
    assert p.due(100.2, max_rows=10, max_bytes=1 << 20, max_age_s=0.25) == ["trades"]
    assert p.due(100.2, max_rows=1000, max_bytes=len(c.data), max_age_s=0.25) == ["candles_1m"]
    assert p.oldest(default=0.0) == 100.0


def test_the_writers_totals_equal_the_sums_through_failure_spool_and_flush(db_url: str, tmp_path: Path) -> None:
    clock, acked = Clock(), []
    w = outage_writer(tmp_path, clock, acked)  # the database is down

    def check() -> None:
        assert (w.pending.rows, w.pending.nbytes) == sums(w.pending)
        assert (w.stats.pending_rows, w.stats.pending_bytes) == sums(w.pending)

    for i in range(3):
        w.add(trades_batch(1 + i * 10, 10))
        check()
    clock.advance(0.25)
    w.tick()  # a failed flush keeps everything
    assert w.stats.errors == 1 and w.pending_rows() == 30
    check()
    clock.advance(5.0)
    w.tick()  # outage: spooled and acknowledged
    assert len(acked) == 3 and spool_files(tmp_path) and w.pending_rows() == 0
    check()
    w.add(trades_batch(31, 10))
    check()
    w.dsn = db_url  # the database is back: the live batch and the spool land
    clock.advance(60.0)
    while w.spool_waiting() or w.pending:
        assert w.flush()
        check()
    assert trade_ids(db_url) == list(range(1, 41)) and w.pending_rows() == 0
    w.close()


def test_the_backoff_doubles_to_its_cap_and_resets_on_success() -> None:
    o = OutagePolicy(spool_file_max_bytes=1 << 20)
    delays = [o.failed(100.0 + i) for i in range(8)]
    assert delays[:3] == [BACKOFF_INITIAL_S, 2 * BACKOFF_INITIAL_S, 4 * BACKOFF_INITIAL_S]
    assert delays[-1] == BACKOFF_MAX_S and o.retry_at == 107.0 + BACKOFF_MAX_S and o.failing_since == 100.0
    assert o.recovered(130.0) == 30.0
    assert (o.backoff, o.retry_at, o.failing_since) == (BACKOFF_INITIAL_S, 0.0, None)
    assert o.recovered(131.0) is None  # no outage to report


def test_spooling_waits_for_an_outage_unless_the_backlog_is_heavy() -> None:
    o = OutagePolicy(spool_after_s=5.0, spool_backlog_bytes=1000, spool_file_max_bytes=500)
    assert not o.should_spool(0.0, 10_000, 0.0)  # nothing failed: never
    o.failed(10.0)
    assert not o.should_spool(10.0, 0, 10.0)  # nothing pending
    assert not o.should_spool(14.9, 100, 10.0)  # a dropped connection looks like this
    assert o.should_spool(10.0, 1000, 10.0)  # heavy: at once
    assert not o.should_spool(15.0, 100, 15.0 - SPOOL_EVERY_S / 2)  # an outage, but the backlog is young...
    assert o.should_spool(15.0, 100, 15.0 - SPOOL_EVERY_S)  # ...old enough
    assert o.should_spool(15.0, 500, 15.0)  # ...or a whole file's worth


def test_spool_files_are_cut_between_batches() -> None:
    a, b, c = candles(1), candles(2), candles(5)  # 100, 200, 500 bytes
    assert split_files([a, b, c], 300) == [[a, b], [c]]  # a batch larger than a file fills one alone
    assert split_files([a, b, c], 1) == [[a], [b], [c]]
    assert split_files([], 300) == []


def test_a_table_is_as_old_as_its_oldest_batch_whatever_the_arrival_order() -> None:
    p = Pending()
    p.add(trades_batch(1, 1), 10.0)
    p.add(trades_batch(2, 1), 9.5)  # arrived second, made first (another worker's)
    p.add(trades_batch(3, 1), 11.0)
    assert p.since("trades") == 9.5 == p.oldest(default=0.0)


def test_the_writer_ages_a_batch_from_its_creation_not_its_arrival() -> None:
    """A batch that spent 30 ms on its way (worker, socket) has 20 ms of a 50 ms budget left; one older than
    the budget is due on arrival; a creation time ahead of the wall clock counts as made on arrival."""
    clock, wall = Clock(1000.0), Clock(1_767_225_600.0)
    w = Writer(DEAD_DSN, mode="postgres", clock=clock, wall=wall, max_age_s=0.05)
    made = int(wall() * 1000)

    def batch(table: str, created_ms: int) -> Batch:
        return Batch(table, 1, b"x", made, made, created_ms)

    w.add(batch("trades", made - 30))
    assert w.due_tables() == [] and abs(w.next_wakeup() - 0.02) < 1e-6
    clock.advance(0.019)
    assert w.due_tables() == []
    clock.advance(0.002)
    assert w.due_tables() == ["trades"]
    w.add(batch("funding", made - 500))  # older than the whole budget: due at once
    w.add(batch("candles_1m", made + 10_000))  # a clock step: aged from its arrival
    assert w.due_tables() == ["trades", "funding"]
    clock.advance(0.049)
    assert w.due_tables() == ["trades", "funding"]
    clock.advance(0.002)
    assert w.due_tables() == ["trades", "funding", "candles_1m"]
