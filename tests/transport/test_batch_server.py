"""collector.transport.server: what workers send arrives whole, unchanged and in order per connection, whatever
the socket reads cut it into (the server reads every connection into one kept buffer)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time

from helpers import trades_batch

from collector.pipeline.batches import Batch
from collector.transport.frames import encode_frame
from collector.transport.server import READ_CHUNK, BatchServer


def test_big_and_small_batches_from_two_workers_arrive_unchanged() -> None:
    big = [trades_batch(1, 12_000), trades_batch(20_001, 9_000)]  # each frame several reads long
    small = [trades_batch(100_000 + 10 * i, 3) for i in range(200)]
    assert all(len(b.data) > 2 * READ_CHUNK for b in big)
    d = tempfile.mkdtemp(prefix="ct-")
    server = BatchServer(os.path.join(d, "w.sock"))
    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for c in clients:
            c.connect(server.path)
        # blocking sends from threads: each blocks until the server's reads make room
        sends = [threading.Thread(target=c.sendall, args=(b"".join(encode_frame(i, b) for i, b in enumerate(bs, 1)),))
                 for c, bs in zip(clients, (big, small), strict=True)]
        for t in sends:
            t.start()
        got: dict[int, list[tuple[int, Batch]]] = {}
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < len(big) + len(small):
            assert time.monotonic() < deadline, f"received {sum(map(len, got.values()))} batches in 30 s"
            for cid, seq, b in server.poll(0.2):
                got.setdefault(cid, []).append((seq, b))
            assert server.frame_errors == 0, "the server read a corrupt frame and dropped its connection"
        for t in sends:
            t.join()
        by_size = sorted(got.values(), key=len)
        for sent, received in zip((big, small), by_size, strict=True):
            assert [seq for seq, _ in received] == list(range(1, len(sent) + 1))
            assert [(b.table, b.rows, b.data, b.first_event_ms, b.last_event_ms, b.created_ms) for _, b in received] \
                == [(b.table, b.rows, b.data, b.first_event_ms, b.last_event_ms, b.created_ms) for b in sent]
            assert all(type(b.data) is bytes for _, b in received)
    finally:
        for c in clients:
            c.close()
        server.close()
        shutil.rmtree(d, ignore_errors=True)
