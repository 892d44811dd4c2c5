"""Fault scenarios: kill -9 of the writer process of the real collector.

What the writer acknowledged is committed or in the spool on disk, and what it had not acknowledged the
workers still hold and send again to the writer the supervisor starts next; replays go through the
ON CONFLICT path. So after the kills the database equals the simulator's ground truth, exactly once.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers import wait_for

pytestmark = pytest.mark.faults

WRITER = "collector: writer"


def kill_writer_while_batches_flow(rig) -> None:
    """SIGKILL the writer right after it committed rows, then wait for its successor to commit again."""
    pid = rig.writer_pid()
    assert pid is not None
    committed = rig.db_count("trades") + rig.db_count("funding")
    wait_for(lambda: rig.db_count("trades") + rig.db_count("funding") > committed, 30, "batches to flow")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: rig.writer_pid() not in (None, pid), 60, "the supervisor to start a new writer")
    after = rig.db_count("trades") + rig.db_count("funding")
    wait_for(lambda: rig.db_count("trades") + rig.db_count("funding") > after, 60, "the new writer to commit")


@pytest.mark.timeout(180)
def test_writer_killed_twice_while_batches_flow_loses_nothing(writer_fault_rig) -> None:
    rig = writer_fault_rig
    first = rig.writer_pid()
    kill_writer_while_batches_flow(rig)
    kill_writer_while_batches_flow(rig)
    assert rig.writer_pid() != first
    rig.wait_recovered()
    rig.verify_against_truth()


@pytest.mark.timeout(180)
def test_writer_killed_with_a_full_spool_the_next_one_replays_it(writer_fault_rig) -> None:
    """The spooled batches were acknowledged (the workers forgot them): only the spool files can bring
    them back, so this passes only if the next writer replays them."""
    rig = writer_fault_rig
    rig.pg.stop_server(mode="immediate")
    wait_for(lambda: len(rig.spool_files()) >= 3, 30, "the writer to spool during the outage")
    pid = rig.writer_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: rig.writer_pid() not in (None, pid), 60, "the supervisor to start a new writer")
    wait_for(lambda: rig.spooled_batches() > 0, 30, "the new writer to report the spool it found")
    rig.pg.start()
    rig.wait_recovered()
    rig.verify_against_truth()
