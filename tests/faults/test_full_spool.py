"""Fault scenario: the database is down and the spool is full, so back-pressure has to reach the exchange.

The writer spools until writer.spool_max_mb, then holds what does not fit unacknowledged; the worker then
holds its own batches until writer.worker_max_unacked_mb and stops reading its WebSockets (observed from
outside: the sockets' kernel receive queues fill). When the database is back, the spool is replayed,
the worker resumes on the same connections, and the database equals the simulator's truth: every closed
kline and liquidation, each once, and with keep_all every aggTrade id once, with no gap to repair.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import wait_for
from test_backpressure import QUEUED_WHEN_PAUSED, _ws_recv_queue

pytestmark = pytest.mark.faults


@pytest.fixture
def writer_fault_config() -> dict[str, dict]:
    # One worker: it reaches its bound soon after the spool fills (with two, the lighter one would keep the
    # other paused for longer than its keepalive, which would then cost the connection; see README).
    return {"workers": 1, "writer": {"spool_max_mb": 1, "worker_max_unacked_mb": 1},
            "filters": {"trades": {"keep_all": True}}}


def _worker_pids(rig) -> list[int]:  # noqa: ANN001
    return [pid for title, pid in rig.children().items() if title.startswith("collector: worker ")]


@pytest.mark.timeout(240)
def test_a_full_spool_stops_the_workers_reading_and_nothing_is_lost(writer_fault_rig, tmp_path: Path) -> None:
    rig = writer_fault_rig
    port = urlsplit(rig.sim.ws_url).port
    rig.pg.stop_server(mode="immediate")
    wait_for(lambda: "spool full" in (tmp_path / "logs" / "writer.log").read_text(), 60, "the spool to fill up")
    wait_for(lambda: all(w["paused"] for w in rig.worker_stats()), 60, "every worker to pause reading")
    pids = _worker_pids(rig)
    wait_for(lambda: all(_ws_recv_queue(pid, port) >= QUEUED_WHEN_PAUSED for pid in pids), 20,
             "the workers' socket receive queues to fill")
    rig.pg.start()
    wait_for(lambda: not any(w["paused"] for w in rig.worker_stats()), 60, "the workers to resume")
    rig.wait_recovered()
    t = rig.truth()
    assert [c for c in t["connections"] if c["closed"]] == []  # the pause cost no connection
    assert rig.query("SELECT count(*) FROM gaps")[0][0] == 0  # and nothing had to be backfilled
    ids = {s: v["agg_ids"] for s, v in t["symbols"].items() if v["agg_ids"]["last"] is not None}
    rig.verify_against_truth()  # klines, liquidations, funding, trades: the simulator's truth
    for sym, a in ids.items():
        got = [r[0] for r in rig.query("SELECT trade_id FROM trades WHERE symbol = %s ORDER BY 1", sym)]
        assert got == list(range(got[0], got[0] + len(got))) and got[-1] >= a["last"], sym
