"""The harnesses themselves: a scenario that fails while starting leaves no process behind.

Before, a Collector whose schema wait timed out raised from its constructor, so the test's finally had no
object to stop: supervisor, writer and workers ran on for as long as the machine lived.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from test_gaps import Collector

from exchange_sim import SimConfig

pytestmark = pytest.mark.faults


def _running_in(directory: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.cwd() == str(directory) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


@pytest.mark.timeout(180)
def test_a_harness_that_fails_to_start_stops_what_it_started(db_url: str, tmp_path: Path) -> None:
    # A role that may connect but not create tables (PostgreSQL 15+: only the owner creates in public):
    # the collector runs, its writer retries for ever, and the harness's wait for the schema times out.
    role = f"collector_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
    params = conninfo_to_dict(db_url)
    params["user"] = role
    try:
        with pytest.raises(AssertionError, match="the writer to create the schema"):
            Collector(tmp_path, make_conninfo(**params), SimConfig(port=0, symbols=4, rate=10, seed=1), workers=1)
        assert _running_in(tmp_path) == []
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
