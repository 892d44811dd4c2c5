"""Fault scenario: PostgreSQL dies for 30 s in the middle of a run of the real collector.

The writer must keep taking batches, spool them to disk once the outage is declared (acknowledging them so
the workers forget them), and when the server is back replay the spool: afterwards the database equals
the simulator's ground truth, the spool is empty and /health answers 200, the same writer still running.
"""

from __future__ import annotations

import time

import pytest
from helpers import wait_for

pytestmark = pytest.mark.faults

# The brief's outage: long enough to pass the writer's SPOOL_AFTER_S (5 s) several times over and to make
# it back off to its 10 s cap, short enough to keep the scenario under ~90 s.
OUTAGE_S = 30.0


@pytest.mark.timeout(180)
def test_database_outage_loses_nothing(writer_fault_rig) -> None:
    rig = writer_fault_rig
    before = rig.children()
    assert "collector: writer" in before and len(before) == 4  # the forkserver, the writer, 2 workers

    rig.pg.stop_server(mode="immediate")
    down_at = time.monotonic()
    wait_for(lambda: rig.spooled_batches() > 0 and rig.spool_files(), 30, "the writer to spool during the outage")
    assert rig.health_status() != 200  # batches on disk, not in the database: reported
    wait_for(lambda: time.monotonic() - down_at >= OUTAGE_S, OUTAGE_S + 5, "the outage to last its time")
    rig.pg.start()

    rig.wait_recovered()
    assert rig.children() == before  # the same writer and workers carried on: nothing crashed
    assert rig.writer_stats()["rows"]  # committed rows, the replayed spool among them
    rig.verify_against_truth()
