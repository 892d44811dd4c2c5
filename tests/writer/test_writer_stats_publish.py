"""The writer's stats publisher copies WriterStats into shared memory when they change, and every heartbeat."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from collector.pipeline.batches import Batch
from collector.runtime.shm import StatsBlock
from collector.writer.main import HEARTBEAT_S, WriterStatsPublisher, stats_signature
from collector.writer.stats import WriterStats


@pytest.fixture
def block() -> Iterator[StatsBlock]:
    b = StatsBlock.create(process_slots=1, symbol_slots=0)
    yield b
    b.close()


def _errors(block: StatsBlock) -> float:
    reading = block.read(0)
    assert reading is not None
    return reading.values["errors"]


def test_unchanged_stats_are_copied_only_at_the_heartbeat(block: StatsBlock) -> None:
    now = [1000.0]
    publish = WriterStatsPublisher(block.process_slot(0, pid=100), clock=lambda: now[0])
    st = WriterStats(errors=1)
    publish(st)
    assert _errors(block) == 1
    # someone else's value in the slot shows whether the publisher copied again
    other = block.process_slot(0, pid=100)
    other.set("errors", 7)
    other.publish()
    now[0] += HEARTBEAT_S / 2
    publish(st)
    assert _errors(block) == 7  # nothing changed: no copy
    now[0] += HEARTBEAT_S / 2
    publish(st)
    assert _errors(block) == 1  # the heartbeat copy


def test_a_change_is_copied_at_once(block: StatsBlock) -> None:
    now = [1000.0]
    publish = WriterStatsPublisher(block.process_slot(0, pid=100), clock=lambda: now[0])
    st = WriterStats()
    publish(st)
    st.errors = 3
    now[0] += 0.01
    publish(st)
    assert _errors(block) == 3


def test_every_published_writer_field_moves_the_signature() -> None:
    """A commit, a failure, a spool change, a job check: each changes what the publisher compares."""
    changes: list[Callable[[WriterStats], object]] = [
        lambda s: s.record_copy("trades", [Batch("trades", 1, b"", 5, 5, 5)], 0.0, 10),  # a commit
        lambda s: setattr(s, "copy_latency_sum_s", 0.5), lambda s: setattr(s, "commit_lag_last_ms", 9),
        lambda s: setattr(s, "errors", 1), lambda s: setattr(s, "last_error", "boom"),
        lambda s: setattr(s, "last_error_ms", 5), lambda s: setattr(s, "failing_since_ms", 5),
        lambda s: setattr(s, "pending_rows", 1), lambda s: setattr(s, "pending_bytes", 1),
        lambda s: setattr(s, "spooled_batches", 1), lambda s: setattr(s, "spooled_bytes", 1),
        lambda s: setattr(s, "replayed_flushes", 1), lambda s: setattr(s, "partitions_created", 1),
        lambda s: setattr(s, "partitions_dropped", 1), lambda s: setattr(s, "rejected_batches", 1),
        lambda s: setattr(s, "refused_batches", 1), lambda s: setattr(s, "schema_ready", True),
        lambda s: setattr(s, "jobs_checked_ms", 1), lambda s: s.jobs_failing.__setitem__("policy_retention", 1),
    ]
    for change in changes:
        st = WriterStats()
        before = stats_signature(st)
        change(st)
        assert stats_signature(st) != before
