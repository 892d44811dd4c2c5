"""The writer's end of the transport: a non-blocking Unix socket server that the writer's loop polls.

Frames in (collector.transport.frames), acknowledgements out; the worker's end is collector.transport.link.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
from pathlib import Path

from collector.pipeline.batches import Batch
from collector.transport.frames import ACK, FrameError, FrameReader

log = logging.getLogger(__name__)

# Socket reads per wake-up on the writer side: large enough to take at once whatever a worker has queued (a
# Unix stream socket holds at most the sender's send buffer, 208 KiB by default on Linux). Read into one kept
# buffer: `recv(READ_CHUNK)` allocated a fresh READ_CHUNK per read, and a poll that read one worker's 451-byte
# batch of 3 trades cost ~18 µs with 1 MiB fresh per read against ~5 µs now (the sender's send included).
READ_CHUNK = 256 << 10


class BatchServer:
    """The writer's end: a non-blocking Unix socket server driven by poll() from the writer's loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if os.path.exists(self.path):
            os.unlink(self.path)  # a previous writer's socket: it is dead (we are its replacement)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.conns: dict[int, tuple[socket.socket, FrameReader]] = {}
        self._next_id = 0
        self.frame_errors = 0
        self._rbuf = bytearray(READ_CHUNK)
        self._rview = memoryview(self._rbuf)

    def poll(self, timeout: float, max_batches: int = 10_000) -> list[tuple[int, int, Batch]]:
        """Wait up to `timeout` for input; returns (connection id, seq, batch) in arrival order."""
        out: list[tuple[int, int, Batch]] = []
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self._accept()
                continue
            cid = key.data
            sock, reader = self.conns[cid]
            try:
                n = sock.recv_into(self._rbuf)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                n = 0
            if not n:
                self._close(cid)
                continue
            try:
                # feed() copies what it is given before the next read reuses the buffer
                out.extend((cid, seq, b) for seq, b in reader.feed(self._rview[:n]))
            except FrameError as e:
                self.frame_errors += 1
                log.error("dropping a connection that sent a bad frame: %s", e)
                self._close(cid)
            if len(out) >= max_batches:
                break
        return out

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self._next_id += 1
        self.conns[self._next_id] = (sock, FrameReader())
        self.sel.register(sock, selectors.EVENT_READ, self._next_id)

    def ack(self, cid: int, seqs: list[int]) -> None:
        """Tell a worker these batches are safe. A worker gone meanwhile simply misses its acks."""
        entry = self.conns.get(cid)
        if entry is None or not seqs:
            return
        sock = entry[0]
        payload = b"".join(ACK.pack(s) for s in seqs)
        try:
            sock.setblocking(True)  # acks are tiny; a worker always reads them
            sock.settimeout(5.0)
            sock.sendall(payload)
        except OSError:
            self._close(cid)
            return
        finally:
            if cid in self.conns:
                sock.setblocking(False)

    def _close(self, cid: int) -> None:
        sock, _ = self.conns.pop(cid)
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def close(self) -> None:
        for cid in list(self.conns):
            self._close(cid)
        self.sel.close()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
