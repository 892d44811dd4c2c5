"""Workers -> writer over the Unix socket (collector.transport.link -> .server, driven by the writer's serve()): nothing lost, nothing doubled, even when the writer is killed."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import trade_ids, trades_batch, wait_for

from collector.transport.link import WriterLink
from collector.writer.loop import serve


@pytest.fixture
def path() -> Iterator[str]:
    """The writer's socket, in a directory of its own under /tmp (pytest's tmp_path can be longer than a
    Unix socket path may be), removed after the test."""
    d = tempfile.mkdtemp(prefix="ct-")
    yield os.path.join(d, "w.sock")
    shutil.rmtree(d, ignore_errors=True)


def test_batches_are_acknowledged_once_committed(db_url: str, path: str) -> None:
    stop = threading.Event()
    result: list = []
    th = threading.Thread(target=lambda: result.append(serve(path, stop, db_url, mode="postgres", max_age_s=0.05)))
    th.start()

    async def main() -> WriterLink:
        link = WriterLink(path)
        link_stop = asyncio.Event()
        task = asyncio.create_task(link.run(link_stop))
        for i in range(20):
            link.send(trades_batch(1 + i * 50, 50))
        assert await link.wait_acked(30)
        link_stop.set()
        await asyncio.wait_for(task, 10)
        return link

    link = asyncio.run(main())
    stop.set()
    th.join(30)
    assert trade_ids(db_url) == list(range(1, 1001))
    assert link.acked_rows == 1000 and not link.unacked and link.unacked_bytes == 0
    assert result[0].trades_count == 1000


def _serve_process(path: str, dsn: str, stop) -> None:  # noqa: ANN001 - spawned child entry point
    serve(path, stop, dsn, mode="postgres", max_age_s=0.05)


def test_writer_killed_mid_stream_loses_and_doubles_nothing(db_url: str, path: str) -> None:
    """kill -9 the writer while batches are in flight: a new writer gets the unacknowledged ones again."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    first = ctx.Process(target=_serve_process, args=(path, db_url, stop))
    first.start()
    total = 200  # batches of 10 trades

    async def main() -> WriterLink:
        link = WriterLink(path)
        link_stop = asyncio.Event()
        task = asyncio.create_task(link.run(link_stop))
        second = None
        for i in range(total):
            link.send(trades_batch(1 + i * 10, 10))
            if i == total // 2:
                await asyncio.to_thread(wait_for, lambda: link.acked_batches > 20, 30, "some acks")
                os.kill(first.pid, signal.SIGKILL)
                await asyncio.to_thread(first.join, 10)
                second = ctx.Process(target=_serve_process, args=(path, db_url, stop))
                second.start()
            await asyncio.sleep(0)
        assert await link.wait_acked(60), f"{len(link.unacked)} batches never acknowledged"
        link_stop.set()
        await asyncio.wait_for(task, 10)
        stop.set()
        second.join(30)
        return link

    link = asyncio.run(main())
    assert link.reconnects >= 1
    ids = trade_ids(db_url)
    assert ids == list(range(1, total * 10 + 1))  # every row once
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == total * 10
    assert not Path(path).exists()


def test_acked_through_is_the_longest_acknowledged_prefix() -> None:
    link = WriterLink("/nonexistent")
    assert link.acked_through == 0
    for i in range(5):
        link.send(trades_batch(1 + i, 1))
    assert (link.last_seq, link.acked_through) == (5, 0)
    link._ack(2)
    link._ack(1)
    link._ack(4)
    assert link.acked_through == 2  # 3 is still out: 4 does not count yet
    link._ack(3)
    link._ack(5)
    assert link.acked_through == 5 and not link.unacked


def test_send_never_raises_when_the_writer_vanishes(db_url: str, path: str) -> None:
    """uvloop raises on a write to a closed transport; a worker must keep the batch, not crash."""
    import uvloop

    stop = threading.Event()
    th = threading.Thread(target=lambda: serve(path, stop, db_url, mode="postgres", max_age_s=0.05))
    th.start()

    async def main() -> WriterLink:
        link = WriterLink(path)
        link_stop = asyncio.Event()
        task = asyncio.create_task(link.run(link_stop))
        link.send(trades_batch(1, 5))
        assert await link.wait_acked(30)
        link._writer.transport.abort()  # the connection dies; the link has not run its reader yet
        link.send(trades_batch(100, 5))  # must not raise (uvloop does on a closed transport)
        stop.set()  # and the writer goes away
        await asyncio.to_thread(th.join, 30)
        for i in range(1, 50):  # keep sending while the link notices; none of this may raise
            link.send(trades_batch(100 + i * 5, 5))
            await asyncio.sleep(0.01)
        assert len(link.unacked) == 50
        link_stop.set()
        await asyncio.wait_for(task, 10)
        return link

    link = uvloop.run(main())
    assert link.acked_batches == 1
