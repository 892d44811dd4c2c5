"""batches.py: a builder hands its rows over as one picklable Batch; batches make one COPY stream."""

from __future__ import annotations

import pickle

import pytest

from collector.pipeline.batches import BatchBuilder, copy_payload
from collector.pipeline.encode import COPY_HEADER, COPY_TRAILER, RowEncoder

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them


def test_batch_builder_take_and_pickle() -> None:
    b = BatchBuilder("trades")
    assert b.take() is None
    r1 = BINANCE.trade(2_000, "BTCUSDT", 1, "1", "1", 1.0, "buy", "keep_all", 1, 1)
    r2 = BINANCE.trade(1_000, "BTCUSDT", 2, "1", "1", 1.0, "sell", "keep_all", 2, 2)
    b.add(r1, 2_000)
    b.add(r2, 1_000)
    assert len(b) == 2 and b.nbytes == len(r1) + len(r2)
    batch = b.take(now_ms=5)
    assert batch is not None and len(b) == 0 and b.take() is None
    assert (batch.rows, batch.data, batch.first_event_ms, batch.last_event_ms, batch.created_ms) == (
        2, r1 + r2, 1_000, 2_000, 5)
    assert pickle.loads(pickle.dumps(batch)) == batch
    assert copy_payload([batch, batch]) == COPY_HEADER + r1 + r2 + r1 + r2 + COPY_TRAILER
    with pytest.raises(ValueError):
        BatchBuilder("nope")
