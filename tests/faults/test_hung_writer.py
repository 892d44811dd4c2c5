"""Fault scenario: the writer hangs (SIGSTOP), mid-run of the real collector.

Its heartbeat goes stale; after monitoring.heartbeat_timeout_s the supervisor kills it (SIGABRT cannot
reach a stopped process, SIGKILL does) and starts another. The workers held every batch it had not
acknowledged and send them to the successor, so afterwards the database equals the simulator's truth.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import wait_for

pytestmark = pytest.mark.faults

TIMEOUT_S = 10  # the smallest heartbeat_timeout_s the configuration accepts


@pytest.fixture
def writer_fault_config() -> dict[str, dict]:
    return {"monitoring": {"heartbeat_timeout_s": TIMEOUT_S}}


@pytest.mark.timeout(180)
def test_a_hung_writer_is_replaced_and_nothing_is_lost(writer_fault_rig) -> None:
    rig = writer_fault_rig
    pid = rig.writer_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    hung_at = time.monotonic()
    wait_for(lambda: rig.writer_pid() not in (None, pid), TIMEOUT_S + 30, "a new writer")
    assert time.monotonic() - hung_at >= TIMEOUT_S
    log = (rig.tmp_path / "logs" / "supervisor.log").read_text()
    assert f"writer (pid {pid}) has published no heartbeat" in log and f"writer (pid {pid}) is still there" in log
    rig.wait_recovered()
    rig.verify_against_truth()
