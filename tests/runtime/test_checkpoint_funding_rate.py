"""The OKX funding rate across a worker restart: remembered by the pipeline, carried by the checkpoint record
(shared memory), restored in the successor, so the successor's first funding rows carry the rate its
predecessor was sent instead of NULL until the venue's next funding-rate push.

The round trip runs the real OKX decoder: a fresh decoder (the successor's) emits mark prices without a
rate until it is sent one, exactly as after kill -9 or a SIGHUP hand-over.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collector.feed.venues.common import ContractSize, VenueSymbol
from collector.feed.venues.okx import OkxDecoder
from collector.pipeline.batches import Batch
from collector.pipeline.funding_rates import MAX_RATE_CHARS, RATE_STALE_MS
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter
from collector.runtime import checkpoints
from collector.runtime.checkpoint_block import CheckpointBlock
from collector.runtime.checkpoints import Checkpointer, SymbolCheckpoint, restore, snapshot
from collector.transport.link import WriterLink

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, a settlement: the next is T0 + 8 h
NEXT = T0 + 8 * 3600_000
INST = "BTC-USDT-SWAP"


def _pipeline(out: list[Batch], venue: str = "okx") -> Pipeline:
    return Pipeline([INST], ["funding"], TradeFilter(FilterParams(tier_intervals_s=(60, 60, 60, 60))), out.append,
                    venue=venue)


def _decoder(p: Pipeline) -> OkxDecoder:
    return OkxDecoder([VenueSymbol("okx", INST, "BTC-USDT-PERP", ContractSize("0.01"))], p)


def _mark(ms: int, px: str = "100.5") -> str:
    return (f'{{"arg":{{"channel":"mark-price","instId":"{INST}"}},"data":[{{"instId":"{INST}","markPx":"{px}",'
            f'"ts":"{ms}"}}]}}')


def _rate(ms: int, rate: str, next_ms: int = NEXT) -> str:
    return (f'{{"arg":{{"channel":"funding-rate","instId":"{INST}"}},"data":[{{"instId":"{INST}",'
            f'"fundingRate":"{rate}","fundingTime":"{next_ms}","ts":"{ms}"}}]}}')


def _frames() -> list[str]:
    """Five minutes of OKX: a mark price every second, a funding-rate push at the start of minutes 0 and 3
    (after that second's mark price, as OKX and the simulator send them)."""
    out = []
    for sec in range(300):
        t = T0 + sec * 1000
        out.append(_mark(t, f"{100 + sec % 7}.5"))
        if sec in (0, 180):
            out.append(_rate(t, "0.0001234567" if sec == 0 else "-0.0000500000"))
    return out


def _feed(d: OkxDecoder, frames: list[str]) -> None:
    for f in frames:
        d.handle(f, int(f.rsplit('"ts":"', 1)[1][:13]) / 1000)  # received when sent


def _funding_rows(batches: list[Batch]) -> bytes:
    return b"".join(b.data for b in batches if b.table == "funding")


@pytest.fixture
def block() -> Iterator[CheckpointBlock]:
    b = CheckpointBlock.create(2)
    yield b
    b.close()


@pytest.mark.parametrize("cut_sec", [30, 61, 200])
def test_a_successor_stores_the_rate_its_predecessor_was_sent(cut_sec: int, block: CheckpointBlock) -> None:
    frames = _frames()
    cut = next(i for i, f in enumerate(frames) if f'"ts":"{T0 + cut_sec * 1000}"' in f)
    whole_out: list[Batch] = []
    whole = _pipeline(whole_out)
    _feed(_decoder(whole), frames)
    whole.flush_all()
    # the predecessor runs to the cut; its checkpoint goes through the shared-memory record
    pred_out: list[Batch] = []
    pred = _pipeline(pred_out)
    _feed(_decoder(pred), frames[:cut])
    pred.flush_all()
    assert pred.funding_rates is not None and pred.funding_rates.known  # a rate was sent before every cut
    snap = snapshot(pred, T0)[INST]
    block.write(0, snap)
    succ_out: list[Batch] = []
    succ = _pipeline(succ_out)
    assert restore(succ, block.read_all({INST: 0})) == 1
    _feed(_decoder(succ), frames[cut:])  # a fresh decoder: no rate until the next funding-rate push
    succ.flush_all()
    assert _funding_rows(pred_out) + _funding_rows(succ_out) == _funding_rows(whole_out)
    # without the carried rate the successor's rows differ until the next push: the fault being fixed
    bare_out: list[Batch] = []
    bare = _pipeline(bare_out)
    restore(bare, {INST: snap._replace(funding_rate="")})
    _feed(_decoder(bare), frames[cut:])
    bare.flush_all()
    assert _funding_rows(bare_out) != _funding_rows(succ_out)


def test_the_record_round_trips_the_rate_and_refuses_to_cut_one(block: CheckpointBlock) -> None:
    c = SymbolCheckpoint(5, T0, T0, 1.5, T0, T0, T0 + 1, "-0.0000123456789", NEXT)
    block.write(1, c)
    assert block.read(1) == c
    too_long = "0." + "1" * (MAX_RATE_CHARS - 1)
    block.write(1, SymbolCheckpoint(updated_ms=1, funding_rate=too_long, next_funding_ms=NEXT))
    got = block.read(1)
    assert got is not None and got.funding_rate == "" and got.next_funding_ms == NEXT


def test_a_carried_rate_is_used_as_a_sent_one_is_until_it_is_stale() -> None:
    """The restored rate and a rate the decoder merged follow one rule: the row at the settlement and those
    up to RATE_STALE_MS after it carry it (the next period's push is due), later ones none."""
    p = _pipeline([])
    assert restore(p, {INST: SymbolCheckpoint(updated_ms=T0, funding_rate="0.0003", next_funding_ms=NEXT)}) == 1
    assert p.funding_rates is not None
    assert p.funding_rates.rate_of(INST, "", 0, NEXT - 1) == ("0.0003", NEXT)
    assert p.funding_rates.rate_of(INST, "", 0, NEXT) == ("0.0003", NEXT)
    assert p.funding_rates.rate_of(INST, "", 0, NEXT + RATE_STALE_MS) == ("0.0003", NEXT)
    assert p.funding_rates.rate_of(INST, "", 0, NEXT + RATE_STALE_MS + 1) == ("", 0)  # a past period's rate
    # what a decoder merged (its own pushes stopped) is judged the same way
    assert p.funding_rates.rate_of(INST, "0.0003", NEXT, NEXT + RATE_STALE_MS) == ("0.0003", NEXT)
    assert p.funding_rates.rate_of(INST, "0.0003", NEXT, NEXT + RATE_STALE_MS + 1) == ("", 0)


def test_a_bad_rate_is_not_carried_into_later_rows() -> None:
    p = _pipeline([])
    assert p.funding_rates is not None
    assert p.funding_rates.rate_of(INST, "abc", NEXT, T0) == ("abc", NEXT)  # the encoder rejects that row
    assert p.funding_rates.rate_of(INST, "", 0, T0 + 1000) == ("", 0)
    assert snapshot(p, T0)[INST].funding_rate == ""


def test_a_rate_without_its_settlement_is_stored_but_carried_by_no_path(block: CheckpointBlock) -> None:
    """Such a rate can never be judged stale, so none of the three ways a rate reaches a later row carries
    it: the live pipeline's merge, the shared-memory record a successor restores, the table a full restart
    loads (before, the first two carried it for good while the third dropped it)."""
    p = _pipeline([])
    assert p.funding_rates is not None
    assert p.funding_rates.rate_of(INST, "0.0003", NEXT, T0) == ("0.0003", NEXT)
    assert p.funding_rates.rate_of(INST, "0.0004", 0, T0 + 1000) == ("0.0004", 0)  # its own row: as sent
    assert p.funding_rates.rate_of(INST, "", 0, T0 + 2000) == ("", 0)  # neither it nor the older one carried
    c = snapshot(p, T0 + 2000)[INST]
    assert (c.funding_rate, c.next_funding_ms) == ("", None)
    block.write(0, SymbolCheckpoint(updated_ms=T0, funding_rate="0.0004", next_funding_ms=0))
    carried = block.read(0)
    assert carried is not None
    successor = _pipeline([])
    restore(successor, {INST: carried})
    assert successor.funding_rates is not None
    assert successor.funding_rates.rate_of(INST, "", 0, T0 + 3000) == ("", 0)
    assert checkpoints.current_rate(carried, T0 + 3000).funding_rate == ""


def test_venues_that_send_the_rate_with_the_mark_price_carry_nothing() -> None:
    assert _pipeline([], "binance").funding_rates is None and _pipeline([], "bybit").funding_rates is None


def test_a_new_rate_is_published_at_once_and_never_stepped_back(block: CheckpointBlock) -> None:
    link = WriterLink("/nonexistent")
    p = Pipeline([INST], ["funding"], TradeFilter(FilterParams(tier_intervals_s=(60, 60, 60, 60))), link.send,
                 venue="okx")
    ck = Checkpointer(block, {INST: 0}, p, link, clock=lambda: T0 / 1000)
    d = _decoder(p)
    _feed(d, [_mark(T0), _rate(T0, "0.0001")])
    ck.tick(T0 / 1000)  # a snapshot waiting for the writer's acknowledgement (none comes)
    got = block.read(0)
    assert got is not None and (got.funding_rate, got.next_funding_ms) == ("0.0001", NEXT)  # not acknowledged
    _feed(d, [_rate(T0 + 60_000, "0.0002")])
    link._ack(link.last_seq)  # the snapshot taken while the rate was 0.0001 becomes durable ...
    ck.tick(T0 / 1000 + 0.1)  # ... (no newer snapshot is due yet)
    assert ck.acked.durable[INST].funding_rate == "0.0001"
    now = block.read(0)
    assert now is not None and now.funding_rate == "0.0002"
    assert checkpoints.pack(SymbolCheckpoint())[-2:] == (checkpoints.NONE, b"")
