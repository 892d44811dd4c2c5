"""The worker's stats publisher: counters copied when they change and every heartbeat, activity images
only after a trade, and always when asked (hand-over, exit). Real shared memory and a real Pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from collector.pipeline.activity import SymbolActivity
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter
from collector.runtime.shm import StatsBlock
from collector.runtime.worker_stats import ACTIVITY_HEARTBEAT_S, HEARTBEAT_S, StatsPublisher

SYM = "BTCUSDT"
T0_MS = 1_700_000_000_000


@pytest.fixture
def block() -> Iterator[StatsBlock]:
    b = StatsBlock.create(process_slots=2, symbol_slots=2)
    yield b
    b.close()


@pytest.fixture
def opened() -> Iterator[list[StatsPublisher]]:
    pubs: list[StatsPublisher] = []
    yield pubs
    for p in pubs:
        p.close()  # its own mapping of the block


def _publisher(block: StatsBlock, clock: list[float], opened: list[StatsPublisher]) -> tuple[StatsPublisher, Pipeline]:
    pipeline = Pipeline([SYM], ["trades"], TradeFilter(FilterParams()), lambda batch: None, venue="binance")
    # collaborators the publisher only reads counters from (the thing under test is the publisher)
    spec: Any = SimpleNamespace(stats_name=block.name, index=0, symbols=[SYM], symbol_slots={SYM: 0})
    feed: Any = SimpleNamespace(connections=[])
    link: Any = SimpleNamespace(sent_batches=0, unacked=[], unacked_bytes=0)
    budget: Any = SimpleNamespace(paused_until_ms=0.0)
    pub = StatsPublisher(spec, pipeline, feed, link, budget, clock=lambda: clock[0])
    opened.append(pub)
    return pub, pipeline


def _received(block: StatsBlock) -> float:
    reading = block.read(1)
    assert reading is not None
    return reading.values["received.trades"]


def _overwrite_counters(block: StatsBlock) -> None:
    """Put a marker into the worker's slot: it stays there until the publisher copies again."""
    other = block.process_slot(1, pid=1)
    other.set("received.trades", 99)
    other.publish()


def _foreign_image() -> bytes:
    act = SymbolActivity()
    act.add(T0_MS, 123.0)
    act.add(T0_MS + 1, 456.0)
    return act.to_bytes()


def _image(block: StatsBlock) -> bytes:
    reading = block.read_activity(0)
    assert reading is not None
    return reading.data


def test_unchanged_counters_wait_for_the_heartbeat(block: StatsBlock, opened: list[StatsPublisher]) -> None:
    clock = [100.0]
    pub, _ = _publisher(block, clock, opened)
    pub.publish(False)
    assert _received(block) == 0
    _overwrite_counters(block)
    clock[0] += HEARTBEAT_S / 2
    pub.publish(False)
    assert _received(block) == 99  # nothing changed: not copied
    clock[0] += HEARTBEAT_S / 2
    pub.publish(False)
    assert _received(block) == 0  # the heartbeat copy


def test_a_changed_counter_is_copied_at_the_next_publish(block: StatsBlock, opened: list[StatsPublisher]) -> None:
    clock = [100.0]
    pub, pipeline = _publisher(block, clock, opened)
    pub.publish(False)
    _overwrite_counters(block)
    pipeline.trades_received += 1
    clock[0] += 0.5
    pub.publish(False)
    assert _received(block) == 1


def test_activity_images_are_copied_after_a_trade_or_when_asked(block: StatsBlock, opened: list[StatsPublisher]) -> None:
    clock = [100.0]
    pub, pipeline = _publisher(block, clock, opened)
    pub.publish(False)
    own = _image(block)
    block.publish_activity(0, 1, _foreign_image())
    pub._next_activity = 0.0  # the 2 s activity period is due
    pub.publish(False)
    assert _image(block) == _foreign_image()  # no trade since: not copied
    pub.publish(False, activity=True)
    assert _image(block) == own  # asked for (hand-over, exit): copied
    block.publish_activity(0, 1, _foreign_image())
    pipeline.activity[SYM].add(T0_MS, 1_000.0)
    pipeline.trades_received += 1
    pub._next_activity = 0.0
    pub.publish(False)
    assert _image(block) == pipeline.activity[SYM].to_bytes()


def test_only_the_images_of_symbols_that_traded_are_copied(block: StatsBlock, opened: list[StatsPublisher]) -> None:
    """After a trade of one symbol only its image is copied again; the heartbeat and a request copy all."""
    clock = [100.0]
    pipeline = Pipeline([SYM, "ETHUSDT"], ["trades"], TradeFilter(FilterParams()), lambda batch: None,
                        venue="binance")
    spec: Any = SimpleNamespace(stats_name=block.name, index=0, symbols=[SYM, "ETHUSDT"],
                                symbol_slots={SYM: 0, "ETHUSDT": 1})
    link: Any = SimpleNamespace(sent_batches=0, unacked=[], unacked_bytes=0)
    pub = StatsPublisher(spec, pipeline, SimpleNamespace(connections=[]), link,  # type: ignore[arg-type]
                         SimpleNamespace(paused_until_ms=0.0), clock=lambda: clock[0])  # type: ignore[arg-type]
    opened.append(pub)
    pipeline.activity[SYM].add(T0_MS, 2_000.0)
    pipeline.trades_received += 1
    pub.publish(False)
    for index in (0, 1):
        block.publish_activity(index, 1, _foreign_image())
    pipeline.activity["ETHUSDT"].add(T0_MS, 1_000.0)
    pipeline.trades_received += 1
    pub._next_activity = 0.0
    pub.publish(False)
    assert _image(block) == _foreign_image()  # BTCUSDT did not trade: its slot was not written
    assert block.read_activity(1).data == pipeline.activity["ETHUSDT"].to_bytes()  # type: ignore[union-attr]
    pipeline.activity[SYM].add(T0_MS - pipeline.activity[SYM].slot_ms, 5.0)  # an older slot (the current stays)
    pipeline.trades_received += 1
    pub._next_activity = 0.0
    pub.publish(False)
    assert _image(block) == pipeline.activity[SYM].to_bytes() != _foreign_image()
    block.publish_activity(0, 1, _foreign_image())
    clock[0] += ACTIVITY_HEARTBEAT_S  # no trade since, the heartbeat: every image again
    pub._next_activity = 0.0
    pub.publish(False)
    assert _image(block) == pipeline.activity[SYM].to_bytes()
