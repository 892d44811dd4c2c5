"""The writer's TimescaleDB job poll against a real PostgreSQL (without TimescaleDB: it must find nothing
failing, never error, and run at most once per JOBS_POLL_S). The failing-job path on a real TimescaleDB is
tests/db/test_timescaledb.py::test_failing_policy_job_is_reported_by_check_and_the_writer."""

from __future__ import annotations

from collector.writer.maintenance import JOBS_POLL_S
from collector.writer.service import Writer


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_job_poll_runs_once_a_minute_and_finds_nothing_on_plain_postgres(db_url: str) -> None:
    mono, wall = Clock(1000.0), Clock(1_750_000_000.0)
    w = Writer(db_url, mode="postgres", clock=mono, wall=wall)
    try:
        w.tick()
        assert w.backend == "postgres" and w.stats.errors == 0
        assert w.stats.jobs_checked_ms == 1_750_000_000_000 and w.stats.jobs_failing == {}
        mono.t += JOBS_POLL_S - 1
        wall.t += JOBS_POLL_S - 1
        w.tick()
        assert w.stats.jobs_checked_ms == 1_750_000_000_000  # not yet due
        mono.t += 1
        wall.t += 1
        w.tick()
        assert w.stats.jobs_checked_ms == (1_750_000_000 + JOBS_POLL_S) * 1000 and w.stats.errors == 0
        assert w.stats.snapshot()["jobs_failing"] == {}
    finally:
        w.close(0.0)
