"""The batches inside the committed spool fixtures (tests/data/spool-*): fixed values, so a test can compare.

`spool-v1-venue.spool` (this release's format and columns) holds exactly `fixture_batches()`; `spool-v1.spool`
(format 1 before the venue column) and `spool-legacy.pkl` (the previous release's pickle spool, written by its
own Spool.write) hold them without the venue field, which Spool.read adds as 'binance'.
"""

from __future__ import annotations

from collector.pipeline.batches import Batch
from collector.pipeline.encode import RowEncoder

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def fixture_batches() -> list[Batch]:
    trades = b"".join(BINANCE.trade(T0 + i * 1000, "BTCUSDT", 1000 + i, "87000.10", "0.500", 43500.05, "buy",
                                   "large", 2000 + i, 2000 + i) for i in range(3))
    funding = BINANCE.funding(T0, "ETHUSDT", "2950.12", "2949.80", "0.00010000", T0 + 8 * 3600_000)
    candle = BINANCE.candle(T0, "BTCUSDT", T0 + 59_999, "87000.0", "87010.5", "86990.0", "87005.2", "12.345",
                           "1074000.12", 321, "6.001", "522000.55")
    liq = BINANCE.liquidation(T0 + 5000, "SOLUSDT", "sell", "LIMIT", "120.50", "120.40", "10", "10", "FILLED",
                             1204.0)
    return [
        Batch("trades", 3, trades, T0, T0 + 2000, T0 + 2100),
        Batch("funding", 1, funding, T0, T0, T0 + 100),
        Batch("candles_1m", 1, candle, T0, T0, T0 + 60_100),
        Batch("liquidations", 1, liq, T0 + 5000, T0 + 5000, T0 + 5100),
    ]
