"""A database outage (collector.writer.outage, .spool) against a real PostgreSQL: the backlog is spooled after a
while (or at once when heavy), acknowledged only once durable, bounded, replayed oldest first and idempotently."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest
from helpers import trade_ids, trades_batch
from writer_helpers import Clock, outage_writer, spool_files

from collector.pipeline.batches import Batch
from collector.transport.frames import encode_spool
from collector.writer.service import Writer
from collector.writer.spool import Spool, SpoolFile


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
