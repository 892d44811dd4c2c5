"""The OKX funding rate across a full restart (SIGTERM, then a fresh start), through the real PostgreSQL: the
worker's final checkpoint, the supervisor's copy of the block into the `checkpoints` table
(Coordinator.save_checkpoints, what the arbiter calls once the workers drained), a fresh start's load of
the table into a new block (bootstrap, before any worker starts) and the new worker's resume. The new
worker's funding rows carry the rate the last run was sent, as an uninterrupted run's do, instead of NULL
until the venue's next funding-rate push. The real OKX decoder: a fresh one emits no rate until sent one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from collector.config import config_from_dict
from collector.db.schema import ensure_schema
from collector.feed.endpoints import Endpoints
from collector.feed.venues.common import ContractSize, VenueSymbol
from collector.feed.venues.okx import OkxDecoder
from collector.pipeline.batches import Batch
from collector.pipeline.funding_rates import RATE_STALE_MS
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter
from collector.runtime import checkpoints
from collector.runtime.bootstrap import Resources, _load_checkpoints
from collector.runtime.checkpoint_block import CheckpointBlock
from collector.runtime.checkpoints import RESUME_IDS_MAX_AGE_MS, Checkpointer, SymbolCheckpoint
from collector.runtime.coordinator import Coordinator
from collector.runtime.shm import StatsBlock
from collector.runtime.symbol_keys import key
from collector.transport.link import WriterLink

INST = "BTC-USDT-SWAP"
KEY = key("okx", INST)
EIGHT_H = 8 * 3600_000
# A fresh start loads a rate only before its settlement by the wall clock (checkpoints.load), so the market
# here starts at the minute this module is imported and settles 8 h later: whenever the suite runs its tests
# (a CI run collected the module at 07:58 and ran it at 08:13, past an 8-hour boundary the first version
# took as the settlement).
T0 = int(time.time() * 1000) // 60_000 * 60_000
NEXT = T0 + EIGHT_H


def _mark(ms: int, px: str) -> str:
    return (f'{{"arg":{{"channel":"mark-price","instId":"{INST}"}},"data":[{{"instId":"{INST}","markPx":"{px}",'
            f'"ts":"{ms}"}}]}}')


def _rate(ms: int, rate: str) -> str:
    return (f'{{"arg":{{"channel":"funding-rate","instId":"{INST}"}},"data":[{{"instId":"{INST}",'
            f'"fundingRate":"{rate}","fundingTime":"{NEXT}","ts":"{ms}"}}]}}')


def _frames() -> list[tuple[int, str]]:
    """(sent ms, frame): five minutes of OKX, a mark price every second, a funding-rate push at the start of
    minutes 0 and 3 (after that second's mark price, as OKX and the simulator send them)."""
    out = []
    for sec in range(300):
        t = T0 + sec * 1000
        out.append((t, _mark(t, f"{100 + sec % 7}.5")))
        if sec in (0, 180):
            out.append((t, _rate(t, "0.0001234567" if sec == 0 else "-0.0000500000")))
    return out


class _Worker:
    """One worker's pipeline, decoder and checkpointer on a block, its batches acknowledged by the writer."""

    def __init__(self, block: CheckpointBlock, clock_ms: int) -> None:
        self.out: list[Batch] = []
        self.link = WriterLink("/nonexistent")
        self.pipeline = Pipeline([INST], ["funding"], TradeFilter(FilterParams(tier_intervals_s=(60, 60, 60, 60))),
                                 self._emit, venue="okx")
        self.clock_ms = clock_ms
        self.ck = Checkpointer(block, {INST: 0}, self.pipeline, self.link, clock=lambda: self.clock_ms / 1000)
        self.decoder = OkxDecoder([VenueSymbol("okx", INST, "BTC-USDT-PERP", ContractSize("0.01"))], self.pipeline)

    def _emit(self, batch: Batch) -> None:
        self.ck.before_send(batch)
        self.link.send(batch)
        self.out.append(batch)

    def feed(self, frames: list[tuple[int, str]]) -> None:
        for ms, frame in frames:
            self.clock_ms = ms
            self.decoder.handle(frame, ms / 1000)  # received when sent
            self.ck.tick()
            self.link._ack(self.link.last_seq)  # the writer commits everything

    def funding_rows(self) -> bytes:
        self.pipeline.flush_all()
        return b"".join(b.data for b in self.out if b.table == "funding")


@pytest.fixture
def blocks() -> Iterator[tuple[CheckpointBlock, CheckpointBlock]]:
    """The first run's checkpoint block and the fresh start's (a new block: the first run's died with it)."""
    first, second = CheckpointBlock.create(1), CheckpointBlock.create(1)
    yield first, second
    first.close()
    second.close()


def _save(block: CheckpointBlock, db_url: str) -> None:
    """What the first run's supervisor does at SIGTERM once its workers drained."""
    stats = StatsBlock.create(1, 8)
    try:
        cfg = config_from_dict({"collection": {"exchanges": ["okx"]}})
        Coordinator(cfg, Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1"), db_url, stats, block, [KEY], [[INST]],
                    {KEY: 0}, {}, None, lambda _: None, venues=["okx"], universes={"okx": [INST]}).save_checkpoints()
    finally:
        stats.close()


def _load(block: CheckpointBlock, db_url: str) -> None:
    """What a fresh start does before any worker starts."""
    _load_checkpoints(Resources(dsn=db_url, universes={"okx": [INST]}, symbol_slots={KEY: 0}, checkpoints=block))


@pytest.mark.parametrize("cut_sec", [61, 150])
def test_a_full_restart_gives_the_new_worker_the_rate_the_last_run_was_sent(
        cut_sec: int, db_url: str, blocks: tuple[CheckpointBlock, CheckpointBlock]) -> None:
    first_block, second_block = blocks
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres")
    frames = _frames()
    cut = next(i for i, (ms, _) in enumerate(frames) if ms == T0 + cut_sec * 1000)
    whole = _Worker(CheckpointBlock.create(1), T0)
    try:
        whole.feed(frames)
        want = whole.funding_rows()
    finally:
        whole.ck.block.close()
    first = _Worker(first_block, T0)
    first.feed(frames[:cut])
    first.ck.final()  # SIGTERM: the worker drains, everything acknowledged
    _save(first_block, db_url)
    _load(second_block, db_url)
    second = _Worker(second_block, frames[cut][0])
    assert second.ck.resume(None, RESUME_IDS_MAX_AGE_MS) == 1
    assert second.pipeline.funding_rates is not None
    assert second.pipeline.funding_rates.known == {INST: ("0.0001234567", NEXT)}
    second.feed(frames[cut:])  # a fresh decoder: no rate until the venue's push at minute 3
    # the rows of the cut's minutes up to that push would have a NULL rate without the carried one
    assert first.funding_rows() + second.funding_rows() == want


def test_a_rate_past_its_settlement_at_the_fresh_start_is_not_resumed(
        db_url: str, blocks: tuple[CheckpointBlock, CheckpointBlock]) -> None:
    first_block, second_block = blocks
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres")
        now_ms = int(time.time() * 1000)
        checkpoints.save(conn, {INST: SymbolCheckpoint(funding_ms=T0, updated_ms=now_ms - 1, funding_rate="0.0002",
                                                        next_funding_ms=now_ms - RATE_STALE_MS - 1)}, venue="okx")
    _load(second_block, db_url)
    got = second_block.read(0)
    # the checkpoint is resumed (its funding minute among it), its rate is not: a past period's
    assert got is not None and got.funding_ms == T0 and (got.funding_rate, got.next_funding_ms) == ("", None)
