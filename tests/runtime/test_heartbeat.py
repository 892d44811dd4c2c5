"""collector.runtime.heartbeat.PublishPolicy: copy on change, never silent for longer than the heartbeat."""

from __future__ import annotations

import pytest

from collector.runtime.heartbeat import PublishPolicy


def test_first_call_publishes() -> None:
    assert PublishPolicy(5.0).check(100.0, (0, 0))


def test_unchanged_signature_is_not_published_again_until_the_heartbeat() -> None:
    p = PublishPolicy(5.0)
    assert p.check(100.0, (1, 2))
    assert not p.check(100.5, (1, 2))
    assert not p.check(104.9, (1, 2))
    assert p.check(105.0, (1, 2))  # the heartbeat: published although nothing changed
    assert not p.check(109.9, (1, 2))  # the heartbeat counts from that copy
    assert p.check(110.0, (1, 2))


def test_a_changed_signature_is_published_at_once_and_restarts_the_heartbeat() -> None:
    p = PublishPolicy(5.0)
    assert p.check(100.0, (1, 2))
    assert p.check(100.5, (1, 3))
    assert not p.check(101.0, (1, 3))
    assert not p.check(105.4, (1, 3))
    assert p.check(105.5, (1, 3))


def test_due_does_not_record_a_copy() -> None:
    p = PublishPolicy(5.0)
    p.published(100.0, "a")
    assert p.due(101.0, "b")
    assert p.due(101.0, "b")  # still due: the caller has not published
    assert not p.due(101.0, "a")


def test_clock_going_backwards_is_not_a_heartbeat() -> None:
    p = PublishPolicy(5.0)
    p.published(100.0, "a")
    assert not p.check(90.0, "a")


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_a_heartbeat_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="heartbeat_s"):
        PublishPolicy(bad)
