"""Fault scenario: the writer cannot acknowledge (SIGSTOP), so the worker must stop reading the exchange.

With both WebSocket clients (picows, the default, and cryptofeed's websockets), the real feed against the
simulator: once the worker holds writer.worker_max_unacked_mb unacknowledged, it stops reading its socket.
That is observed from outside the worker: the kernel's receive queue of its WebSocket fills and stays full
while the exchange keeps producing, the worker's received count does not move, and its memory does not
grow. When the writer continues, the worker resumes on the same connection, and with keep_all every
aggTrade the exchange sent is stored exactly once without a single gap or reconnect: nothing was dropped,
only delayed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from helpers import wait_for
from test_gaps import Collector, assert_every_id_once, trade_ids
from test_worker_crash import _worker_pids

from exchange_sim import SimConfig

pytestmark = pytest.mark.faults

SYMBOLS = 8
RATE = 3000  # aggTrades/s: keep_all fills the 1 MB bound within a second or two of the writer stopping
# Kernel-held bytes that show the worker is not reading: far above what a reading worker leaves queued
# between two reads at this rate, well below a loopback receive buffer.
QUEUED_WHEN_PAUSED = 64 * 1024


def _ws_recv_queue(pid: int, port: int) -> int:
    """Bytes the kernel holds unread on `pid`'s TCP sockets to `port` (Recv-Q, as `ss` shows it)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    queued = 0
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if int(cols[2].split(":")[1], 16) == port and cols[9] in inodes:
                queued = max(queued, int(cols[4].split(":")[1], 16))
    return queued


def _writer_pid(c: Collector) -> int:
    for p in psutil.Process(c.sup.proc.pid).children(recursive=True):
        try:
            if " ".join(p.cmdline()).strip() == "collector: writer":
                return p.pid
        except psutil.Error:
            continue
    raise AssertionError("no writer process")


def _last_ids(c: Collector) -> int:
    return sum(v["aggTrade"] for v in c.truth()["symbols"].values())


@pytest.mark.timeout(240)
@pytest.mark.parametrize("ws_client", ["picows", "websockets"])
def test_a_stopped_writer_stops_the_reading_and_nothing_is_lost(ws_client: str, db_url: str, tmp_path: Path) -> None:
    c = Collector(tmp_path, db_url, SimConfig(port=0, symbols=SYMBOLS, rate=RATE, speed=1, seed=21), workers=1,
                  filters={"trades": {"keep_all": True}}, exchange={"ws_client": ws_client},
                  writer={"worker_max_unacked_mb": 1})
    writer = None
    try:
        port = urlsplit(c.sim.ws_url).port
        wait_for(lambda: len(trade_ids(c, "BTCUSDT")) > 100, 60, "trades stored")
        worker = psutil.Process(_worker_pids(c)["1/1"])
        writer = _writer_pid(c)
        os.kill(writer, signal.SIGSTOP)

        wait_for(lambda: c.stats()["workers"][0]["paused"], 30, "the worker to pause reading")
        wait_for(lambda: _ws_recv_queue(worker.pid, port) >= QUEUED_WHEN_PAUSED, 30,
                 "the worker's socket receive queue to fill")
        received = c.stats()["workers"][0]["received"]["trades"]
        rss = worker.memory_info().rss
        produced = _last_ids(c)
        wait_for(lambda: _last_ids(c) >= produced + 2 * RATE, 30, "the exchange to produce two more seconds")
        assert c.stats()["workers"][0]["received"]["trades"] == received  # not one more frame read
        assert _ws_recv_queue(worker.pid, port) >= QUEUED_WHEN_PAUSED  # still held by the kernel, unread
        assert worker.memory_info().rss - rss < 8 << 20  # the worker's memory does not follow the market

        os.kill(writer, signal.SIGCONT)
        writer = None
        wait_for(lambda: not c.stats()["workers"][0]["paused"], 30, "the worker to resume reading")
        wait_for(lambda: c.stats()["workers"][0]["received"]["trades"] > received, 30, "frames read again")
        c.control("pause")
        t = c.truth()
        last = {s: v["agg_ids"]["last"] for s, v in t["symbols"].items() if v["agg_ids"]["last"] is not None}
        wait_for(lambda: all(max(trade_ids(c, s), default=-1) >= a for s, a in last.items()), 60,
                 "every trade up to the pause")
        assert_every_id_once(c, t, list(last))
        assert c.query("SELECT count(*) FROM gaps")[0][0] == 0  # nothing had to be repaired over REST...
        assert [x for x in t["connections"] if x["closed"]] == []  # ...and no connection was lost
        assert c.stats()["workers"][0]["reconnects"] == 0
        code, out = c.stop()
        assert code == 0, out[-3000:]
    finally:
        if writer is not None:
            os.kill(writer, signal.SIGCONT)
        c.stop()
