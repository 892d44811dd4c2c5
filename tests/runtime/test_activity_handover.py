"""The per-symbol rolling statistics (the tiers' input) across a worker's end and a window change.

A worker's successor takes them over from the shared-memory block (collector.runtime.checkpoints.
resume_activity) whatever point its predecessor was killed at; a SIGHUP that changes
filters.trades.stats_window starts them afresh over the new window, and neither a successor nor the
supervisor's merge (collector.runtime.tier_inputs) carries the old window on or fails on it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import signal
import struct

import msgspec
import pytest
from helpers import wait_for

from collector.config import Config
from collector.pipeline.activity import DAY_MS, SymbolActivity, window_ms
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import TradeFilter
from collector.runtime.checkpoints import resume_activity
from collector.runtime.seqlock import StaleSlot
from collector.runtime.shm import StatsBlock
from collector.runtime.tier_inputs import merge_activity
from collector.runtime.worker_control import apply_live_config

HOUR = 3_600_000
T0 = 1_750_000_000_000 // DAY_MS * DAY_MS
NOW = T0 + HOUR
SYMBOLS = ["AUSDT", "BUSDT", "CUSDT", "DUSDT"]
SLOTS = {s: i for i, s in enumerate(SYMBOLS)}


def _pipeline(window: int = DAY_MS) -> Pipeline:
    return Pipeline(list(SYMBOLS), ["trades"], TradeFilter(), lambda b: None, venue="binance",
                    stats_window_ms=window)


def _traded(act: SymbolActivity, n: int, seed: int) -> SymbolActivity:
    r = random.Random(seed)
    for i in range(n):
        act.add(T0 + i * 997, r.lognormvariate(6.0, 1.5))
    return act


@pytest.fixture
def block():
    b = StatsBlock.create(process_slots=2, symbol_slots=len(SYMBOLS) + 1)
    yield b
    b.close()


def test_a_successor_takes_over_every_published_image_value_by_value(block: StatsBlock) -> None:
    before = _pipeline()
    for i, s in enumerate(SYMBOLS[:3]):
        _traded(before.activity[s], 50 + 40 * i, seed=i)
    for s in SYMBOLS[:2]:  # CUSDT traded but its predecessor died before publishing it; DUSDT never traded
        block.publish_activity(SLOTS[s], 1, before.activity[s].to_bytes())
    block.publish_activity(len(SYMBOLS), 2, before.activity["AUSDT"].to_bytes())  # another worker's symbol

    after = _pipeline()
    assert resume_activity(block, SLOTS | {"ZZZUSDT": len(SYMBOLS)}, after) == 2
    assert "ZZZUSDT" not in after.activity
    fresh = SymbolActivity().to_bytes()
    for s in SYMBOLS:
        want = before.activity[s].to_bytes() if s in SYMBOLS[:2] else fresh
        assert after.activity[s].to_bytes() == want, s
        assert after.activity[s].summary(NOW) == (before.activity[s].summary(NOW) if s in SYMBOLS[:2]
                                                  else SymbolActivity().summary(NOW))
    # and it continues from there: the next trade is the predecessor's count plus one
    after.activity["AUSDT"].add(NOW - 1, 1000.0)
    assert after.activity["AUSDT"].count(NOW) == before.activity["AUSDT"].count(NOW) + 1 == 51


def test_stale_foreign_or_other_window_images_start_afresh(block: StatsBlock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    before = _pipeline()
    for i, s in enumerate(SYMBOLS):
        _traded(before.activity[s], 30, seed=i)
        block.publish_activity(SLOTS[s], 1, before.activity[s].to_bytes())
    # BUSDT's owner died between its two seq stores
    off = block.symbol_offset + SLOTS["BUSDT"] * block.symbol_slot_size
    struct.pack_into("@Q", block.buf, off, struct.unpack_from("@Q", block.buf, off)[0] + 1)
    # CUSDT's image was kept over a 6 h window (the configuration then); DUSDT's slot holds no image
    block.publish_activity(SLOTS["CUSDT"], 1, _traded(SymbolActivity(window_ms(6 * 3600)), 30, 9).to_bytes())
    block.publish_activity(SLOTS["DUSDT"], 1, bytes(block.activity_nbytes))

    after = _pipeline()
    with caplog.at_level(logging.INFO, logger="collector.runtime.checkpoints"):
        assert resume_activity(block, SLOTS, after) == 1
    assert after.activity["AUSDT"].to_bytes() == before.activity["AUSDT"].to_bytes()
    for s in ("BUSDT", "CUSDT", "DUSDT"):
        assert after.activity[s].to_bytes() == SymbolActivity().to_bytes(), s
    assert "the statistics of 1 symbols were not resumed" in caplog.text


def _generation(name: str, published, resumed, started) -> None:  # noqa: ANN001
    """Child: resume the statistics like a worker's successor, then trade and publish every symbol in a loop,
    recording each count once its image is fully published, until killed."""
    block = StatsBlock.attach(name)
    pipe = _pipeline()
    resume_activity(block, SLOTS, pipe)
    counts = [pipe.activity[s].count(NOW) for s in SYMBOLS]
    for i, c in enumerate(counts):
        resumed[i] = published[i] = c
    started.set()
    while True:
        for i, s in enumerate(SYMBOLS):
            act = pipe.activity[s]
            act.add(T0 + counts[i] % HOUR, 1.0)  # 1 USD each: a whole image has volume == count
            counts[i] += 1
            block.publish_activity(SLOTS[s], 1, act.to_bytes())
            published[i] = counts[i]


@pytest.mark.timeout(120)
def test_a_kill_9_at_random_points_never_resumes_a_torn_image(block: StatsBlock) -> None:
    """Six generations, each killed at a random point of its publishing loop (mid-copy included): what the
    next one resumes is, per symbol, the last image its predecessor wrote whole (the count it recorded, or
    one more when killed between the copy and the record), never a mix; a slot left mid-copy is stale and
    that symbol starts afresh; the resumed counts are exactly what the parent reads in the slots."""
    ctx = mp.get_context("spawn")
    published = ctx.Array("q", len(SYMBOLS), lock=False)
    resumed = ctx.Array("q", len(SYMBOLS), lock=False)
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    expected = [0] * len(SYMBOLS)  # what the next generation must resume, per symbol
    for gen in range(6):
        started = ctx.Event()
        p = ctx.Process(target=_generation, args=(block.name, published, resumed, started))
        p.start()
        try:
            assert started.wait(30), "generation did not start"
            assert list(resumed) == expected, (seed, gen)
            target = sum(expected) + rng.randrange(1, 4000)
            wait_for(lambda t=target: sum(published) >= t, 30, "the generation to publish", poll=0.0002)
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.join(10)
        assert p.exitcode == -signal.SIGKILL
        check = _pipeline()
        resume_activity(block, SLOTS, check)
        for i, s in enumerate(SYMBOLS):
            try:
                reading = block.read_activity(SLOTS[s])
            except StaleSlot:
                assert check.activity[s].to_bytes() == SymbolActivity().to_bytes(), (seed, gen, s)
                expected[i] = 0
                continue
            act = check.activity[s]
            n, summary = act.count(NOW), act.summary(NOW)
            assert reading is not None and act.to_bytes() == SymbolActivity.from_bytes(reading.data).to_bytes()
            assert published[i] <= n <= published[i] + 1, (seed, gen, s, n, published[i])
            assert summary.volume == n and summary.max == 1.0, (seed, gen, s, summary)
            expected[i] = n


def test_a_sighup_with_another_window_starts_the_statistics_afresh_over_it(caplog: pytest.LogCaptureFixture) -> None:
    tf = TradeFilter()
    pipe = _pipeline()
    _traded(pipe.activity["AUSDT"], 40, seed=1)
    kept = pipe.activity["AUSDT"]
    apply_live_config(Config(), pipe, tf)  # 24h, the window it has: nothing restarts
    assert pipe.activity["AUSDT"] is kept and kept.count(NOW) == 40

    cfg = Config()
    cfg = msgspec.structs.replace(cfg, filters=msgspec.structs.replace(
        cfg.filters, trades=msgspec.structs.replace(cfg.filters.trades, stats_window="6h")))
    with caplog.at_level(logging.WARNING, logger="collector.runtime.worker_control"):
        apply_live_config(cfg, pipe, tf)
    assert "filters.trades.stats_window is now 6h: the statistics of 4 symbols start afresh" in caplog.text
    for s in SYMBOLS:
        assert pipe.activity[s].window_ms == 6 * HOUR and pipe.activity[s].count(NOW) == 0
    pipe.activity["AUSDT"].add(NOW - 1, 50.0)
    assert pipe.activity["AUSDT"].count(NOW) == 1


def test_neither_a_successor_nor_the_merge_carries_the_old_window_on(block: StatsBlock,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A symbol's old owner (24 h window) and new owner (6 h, after the SIGHUP) both hold a slot: the
    supervisor's merge takes the newest image's window and leaves the other out instead of failing the
    tier computation; a successor started with 6 h does not resume a 24 h image."""
    old = _traded(SymbolActivity(), 30, seed=3)
    new = _traded(SymbolActivity(window_ms(6 * 3600)), 20, seed=4)
    block.publish_activity(0, 1, old.to_bytes(), now_ms=NOW - 5_000)
    block.publish_activity(1, 2, new.to_bytes(), now_ms=NOW - 1_000)
    with caplog.at_level(logging.WARNING, logger="collector.runtime.tier_inputs"):
        got = merge_activity(block, {"AUSDT": [0, 1]}, NOW)
    assert got["AUSDT"] == new.summary(NOW)
    assert "an image over another window" in caplog.text
    # both over 6 h: merged as before (counts add)
    block.publish_activity(0, 1, _traded(SymbolActivity(window_ms(6 * 3600)), 30, seed=3).to_bytes(), now_ms=NOW)
    assert merge_activity(block, {"AUSDT": [0, 1]}, NOW)["AUSDT"].count == 50

    after = _pipeline(window_ms(6 * 3600))
    assert resume_activity(block, {"AUSDT": 0, "BUSDT": 1}, after) == 2  # both 6 h now
    block.publish_activity(0, 1, old.to_bytes())
    after = _pipeline(window_ms(6 * 3600))
    assert resume_activity(block, {"AUSDT": 0, "BUSDT": 1}, after) == 1
    assert after.activity["AUSDT"].count(NOW) == 0 and after.activity["BUSDT"].count(NOW) == 20


def test_the_merge_leaves_out_an_image_that_is_not_one(block: StatsBlock, caplog: pytest.LogCaptureFixture) -> None:
    """A slot holding bytes that are not an activity image costs its symbol that input, with a warning, not
    the whole tier computation (SymbolActivity.from_bytes raised ValueError out of merge_activity)."""
    good = _traded(SymbolActivity(), 25, seed=5)
    block.publish_activity(0, 1, good.to_bytes(), now_ms=NOW - 2_000)
    block.publish_activity(1, 2, bytes(block.activity_nbytes), now_ms=NOW - 1_000)  # newest, and garbage
    seven = struct.pack("<qq", HOUR, 7) + bytes(block.activity_nbytes - 16)  # 7 slots: not this image's size
    block.publish_activity(2, 1, seven, now_ms=NOW - 1_000)
    with caplog.at_level(logging.WARNING, logger="collector.runtime.tier_inputs"):
        got = merge_activity(block, {"AUSDT": [0, 1], "BUSDT": 2}, NOW)
    assert got["AUSDT"] == good.summary(NOW)
    assert got["BUSDT"].count == 0
    assert caplog.text.count("an image that is not one left out") == 2
