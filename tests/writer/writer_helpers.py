"""Shared by the writer's tests: a hand-moved clock, a database that is down, and small fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from collector.pipeline.batches import Batch, BatchBuilder
from collector.pipeline.encode import RowEncoder
from collector.writer.service import Writer

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them

DAY_MS = 86_400_000
# Nothing listens on port 1: connecting fails at once, like a database that is down.
DEAD_DSN = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1"


class Clock:
    """A clock (monotonic or wall) the test moves by hand: no sleeping to wait for timers."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def outage_writer(tmp_path: Path, clock: Clock, acked: list[Batch], **kw: object) -> Writer:
    """A writer whose database is down (swap `w.dsn` for a real one to end the outage)."""
    return Writer(DEAD_DSN, mode="postgres", clock=clock, spool_dir=tmp_path / "spool", on_committed=acked.extend,
                  spool_after_s=5.0, **kw)  # type: ignore[arg-type]


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("pending-*.spool"))


def candles_batch(t0: int, minutes: list[int], symbol: str = "BTCUSDT") -> Batch:
    """1m candles opening at t0 + m minutes: open 100+m, high 101+m, low 99+m, close 100.5+m, volume 1.5."""
    b = BatchBuilder("candles_1m")
    for m in minutes:
        t = t0 + m * 60_000
        b.add(BINANCE.candle(t, symbol, t + 59_999, str(100 + m), str(101 + m), str(99 + m), str(100.5 + m),
                            "1.5", "150", 10, "0.5", "50"), t)
    batch = b.take()
    assert batch is not None
    return batch


def candle_5m(db_url: str, view: str = "candles_5m") -> tuple | None:
    with psycopg.connect(db_url) as conn:
        return conn.execute(f"SELECT open::text, high::text, low::text, close::text, volume::text, trades "
                            f"FROM {view} ORDER BY time LIMIT 1").fetchone()


def tick_until(w: Writer, clock: Clock, pred: Callable[[], bool], ticks: int = 30) -> bool:
    """Drive the writer tick by tick (moving its clock 0.1 s each) until pred() holds."""
    for _ in range(ticks):
        if pred():
            return True
        clock.advance(0.1)
        w.tick()
    return pred()
