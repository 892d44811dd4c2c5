"""/health and a writer that has not reached the database yet: no grace period for that."""

from __future__ import annotations

from test_health import NOW, _edit, _publish_healthy, _snap, block  # noqa: F401 - block is a fixture

from collector import health as h
from collector.stats import StatsBlock


def test_writer_that_never_wrote_is_reported_at_once(block: StatsBlock) -> None:  # noqa: F811
    _publish_healthy(block)
    snap = _edit(_snap(block), 0, **{k: 0 for k in _snap(block)["children"][0]["stats"] if k.startswith("batches.")})
    snap = _edit(snap, 0, failing_since_ms=NOW - 2_000)
    ok, reasons = h.health(snap, NOW)
    assert not ok and reasons == ["writer: cannot write to the database yet (2 s)"]
    # one that has written before gets the grace period for a short outage
    _publish_healthy(block)
    snap = _edit(_snap(block), 0, failing_since_ms=NOW - 2_000)
    assert h.health(snap, NOW) == (True, [])


def test_writer_not_yet_at_the_database_is_not_healthy(block: StatsBlock) -> None:  # noqa: F811
    """A writer publishes zeros the moment it starts; 200 must wait until it has reached the database."""
    _publish_healthy(block)
    snap = _edit(_snap(block), 0, schema_ready=0)
    assert h.health(snap, NOW) == (False, ["writer is connecting to the database"])
    snap = _edit(_snap(block), 0, schema_ready=0, failing_since_ms=NOW - 3_000)
    assert h.health(snap, NOW) == (False, ["writer: cannot reach the database yet (3 s)"])
