"""The arbiter keeps reaping and restarting while the coordinator's exchange call hangs.

The coordinator (collector.runtime.coordinator) refreshes the universe over HTTP with a 30 s timeout;
before it had its own threads that call ran on the arbiter's loop, and a hung exchange held every
restart for up to 30 s. Here the collector reaches the simulator's REST API through a proxy that, once
armed, takes the next exchangeInfo request the coordinator makes and never answers it (its universe
refresh, every second here). Only the coordinator's own request is held, told by its User-Agent (urllib's):
a worker starting up reads exchangeInfo too (cryptofeed's load_symbols, over aiohttp), and a held worker
request would close with the killed worker. While that request hangs, a worker is killed with SIGKILL: its replacement must be
running within seconds, with the held request still unanswered and still open.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import SupervisorProcess, http_get, wait_for, wait_healthy, write_config

from collector.db.embedded import free_port
from collector.runtime.coordinator import FETCH_TIMEOUT_S
from exchange_sim import SimConfig, launch_subprocess

# The replacement's deadline from the kill: the first restart waits RESTART_DELAY_INITIAL (1 s), the
# spawn is a fork of the forkserver; 10 s leaves room for a loaded box and is a third of FETCH_TIMEOUT_S,
# so a reap loop that waited for the hung call could not meet it.
RESTART_DEADLINE_S = 10.0


class HangingProxy:
    """127.0.0.1 TCP proxy to an HTTP server; once armed, the next request for `hang_path` whose
    User-Agent starts with `hang_agent` is held forever."""

    def __init__(self, upstream: str, hang_path: str, hang_agent: bytes) -> None:
        u = urlsplit(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.hang_path = hang_path
        self.hang_agent = b"\r\nuser-agent: " + hang_agent.lower()
        self.armed = threading.Event()
        self.held: socket.socket | None = None
        self.held_at: float | None = None
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._track(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.append(s)

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                conn.close()
                return
            head += chunk
        path = head.split(b" ", 2)[1].decode()
        with self._lock:
            hold = (self.armed.is_set() and self.held is None and path.startswith(self.hang_path)
                    and self.hang_agent in head.lower())
            if hold:
                self.held, self.held_at = conn, time.monotonic()
        if hold:
            return  # never answered: the client waits for its timeout
        up = socket.create_connection(self.upstream)
        self._track(up)
        up.sendall(head)
        threading.Thread(target=_pipe, args=(up, conn), daemon=True).start()
        _pipe(conn, up)

    def held_open(self) -> bool:
        """The held request's client is still waiting (it has not closed the connection)."""
        s = self.held
        if s is None:
            return False
        if not select.select([s], [], [], 0)[0]:
            return True
        return s.recv(1, socket.MSG_PEEK) != b""

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for s in self._socks:
                s.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.mark.timeout(240)
def test_reap_loop_restarts_a_killed_worker_while_the_universe_refresh_hangs(db_url: str, tmp_path: Path) -> None:
    sim = launch_subprocess(SimConfig(port=0, symbols=8, rate=20, speed=1, seed=21))
    proxy = HangingProxy(sim.rest_url, "/fapi/v1/exchangeInfo", b"Python-urllib/")
    port = free_port()
    cfg = write_config(tmp_path / "main.yaml", database={"url": db_url},
                       exchange={"rest_url": proxy.url, "ws_url": sim.ws_url, "universe_refresh_s": 1},
                       logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
                       writer={"spool_dir": str(tmp_path / "spool")}, monitoring={"health_check_port": port})
    sup = SupervisorProcess("--workers", "2", "--config", str(cfg), cwd=tmp_path)
    stats_url = f"http://127.0.0.1:{port}/stats"
    try:
        wait_healthy(port)
        proxy.armed.set()
        wait_for(lambda: proxy.held is not None, 30, "the coordinator's next exchangeInfo request to be held")
        assert proxy.held_at is not None

        victim = http_get(stats_url)[2]["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        def replaced() -> bool:
            w = http_get(stats_url)[2]["workers"][0]
            return w["alive"] and w["pid"] not in (None, victim) and w["restarts"] >= 1
        wait_for(replaced, RESTART_DEADLINE_S, "worker 1 to be replaced while the exchange call hangs")
        restarted_at = time.monotonic()
        assert proxy.held_open(), "the coordinator gave up on the held request before the restart"
        assert restarted_at - proxy.held_at < FETCH_TIMEOUT_S
        assert restarted_at - killed_at < RESTART_DEADLINE_S

        # the held call really was the coordinator's universe refresh: it ends in its timeout
        log = tmp_path / "logs" / "supervisor.log"
        wait_for(lambda: "universe refresh failed" in log.read_text(), FETCH_TIMEOUT_S + 30,
                 "the hung universe refresh to time out")
        code, out = sup.stop()
        assert code == 0, out[-3000:]
    finally:
        sup.stop()
        proxy.close()
        sim.stop()
