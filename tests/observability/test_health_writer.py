"""/health and a writer that has not reached the database yet: no grace period for that."""

from __future__ import annotations

from test_health import NOW, _edit, _publish_healthy, _snap

from collector.observability import health as h
from collector.observability.stats import stats_json
from collector.runtime.shm import StatsBlock


def test_writer_that_never_wrote_is_reported_at_once(block: StatsBlock) -> None:
    _publish_healthy(block)
    snap = _edit(_snap(block), 0, **{k: 0 for k in _snap(block)["children"][0]["stats"] if k.startswith("batches.")})
    snap = _edit(snap, 0, failing_since_ms=NOW - 2_000)
    ok, reasons = h.health(snap, NOW)
    assert not ok and reasons == ["writer: cannot write to the database yet (2 s)"]
    # one that has written before gets the grace period for a short outage
    _publish_healthy(block)
    snap = _edit(_snap(block), 0, failing_since_ms=NOW - 2_000)
    assert h.health(snap, NOW) == (True, [])


def test_writer_not_yet_at_the_database_is_not_healthy(block: StatsBlock) -> None:
    """A writer publishes zeros the moment it starts; 200 must wait until it has reached the database."""
    _publish_healthy(block)
    snap = _edit(_snap(block), 0, schema_ready=0)
    assert h.health(snap, NOW) == (False, ["writer is connecting to the database"])
    snap = _edit(_snap(block), 0, schema_ready=0, failing_since_ms=NOW - 3_000)
    assert h.health(snap, NOW) == (False, ["writer: no database for 3 s"])


SERVER_SAYS = ('connect: connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
               'database "collector" does not exist')


def test_writer_error_text_travels_through_shared_memory(block: StatsBlock) -> None:
    """The writer's last error, as it published it, is the reason /health gives and /stats' last_error."""
    _publish_healthy(block)
    w = block.process_slot(0, pid=100)
    w.update({"schema_ready": 0, "failing_since_ms": NOW - 4_000, "errors": 3})
    w.set_text(SERVER_SAYS)
    w.publish(now_ms=NOW - 100)
    snap = _snap(block)
    assert h.health(snap, NOW) == (False, [f"writer: no database for 4 s: {SERVER_SAYS}"])
    assert stats_json(snap)["writer"]["last_error"] == SERVER_SAYS
    # a writer that wrote before and then fails for longer than the grace period says why, too
    w.update({"schema_ready": 1, "batches.trades": 4, "failing_since_ms": NOW - 45_000})
    w.set_text("trades: the connection is lost")
    w.publish(now_ms=NOW - 100)
    assert h.health(_snap(block), NOW) == (
        False, ["writer: flushes failing for 45 s (3 errors): trades: the connection is lost"])


def test_text_is_bounded_and_cut_at_a_character(block: StatsBlock) -> None:
    from collector.runtime.shm import TEXT_CAPACITY

    w = block.process_slot(0, pid=100)
    w.set_text("é" * TEXT_CAPACITY)  # two bytes each: cut between characters, never inside one
    w.publish(now_ms=NOW)
    text = block.read(0).text
    assert text == "é" * (TEXT_CAPACITY // 2)
    w.set_text("")
    w.publish(now_ms=NOW)
    assert block.read(0).text == ""
    block.process_slot(0, pid=200).set_text("x")  # never published: a successor's reset clears it
    assert block.read(0).text == ""
