"""collector.db.rollups: derived candles equal Binance's klines computed by hand; the TimescaleDB refresh window."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

from collector.db.partitions import ensure_partitions_for
from collector.db.rollups import refresh_window, rollup_candles
from collector.db.schema import ensure_schema
from collector.db.tables import DERIVED_CANDLES

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)


def _candle_rows(start: datetime, minutes: int, missing: set[int], symbol: str, rng: random.Random) -> list[tuple]:
    rows = []
    price = Decimal("100.00")
    for m in range(minutes):
        if m in missing:
            continue
        o = price
        c = (o + Decimal(rng.randint(-50, 50)) / 100).quantize(Decimal("0.01"))
        h = max(o, c) + Decimal(rng.randint(0, 20)) / 100
        lo = min(o, c) - Decimal(rng.randint(0, 20)) / 100
        t = start + timedelta(minutes=m)
        rows.append((t, symbol, t + timedelta(seconds=59.999), o, h, lo, c, Decimal(rng.randint(1, 999)) / 1000,
                     Decimal(rng.randint(1, 99999)) / 100, rng.randint(1, 500), Decimal(rng.randint(0, 999)) / 1000,
                     Decimal(rng.randint(0, 9999)) / 100))
        price = c
    return rows


def _expected(rows: list[tuple], width: timedelta) -> dict[tuple[str, datetime], tuple]:
    """Binance's kline of `width` for each UTC-aligned bucket, computed by hand from the 1m rows."""
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    buckets: dict[tuple[str, datetime], list[tuple]] = {}
    for r in sorted(rows, key=lambda r: r[0]):
        b = origin + ((r[0] - origin) // width) * width
        buckets.setdefault((r[1], b), []).append(r)
    out = {}
    for (sym, b), rs in buckets.items():
        out[(sym, b)] = (b + width - timedelta(milliseconds=1), rs[0][3], max(r[4] for r in rs),
                         min(r[5] for r in rs), rs[-1][6], sum(r[7] for r in rs), sum(r[8] for r in rs),
                         sum(r[9] for r in rs), sum(r[10] for r in rs), sum(r[11] for r in rs))
    return out


def test_rollup_equals_hand_computed_klines(db_url: str) -> None:
    rng = random.Random(7)
    start = datetime(2025, 3, 9, 22, 0, tzinfo=UTC)  # crosses UTC midnight: 4h and 1d alignment matters
    minutes = 10 * 60
    rows = _candle_rows(start, minutes, {3, 4, 61, 125, 300}, "BTCUSDT", rng)  # holes, one a bucket's first
    rows += _candle_rows(start, minutes, {0, 599}, "ETHUSDT", rng)  # first and last minute missing
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        ensure_partitions_for(conn, "candles_1m", start, start + timedelta(minutes=minutes))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO candles_1m (time, symbol, close_time, open, high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, venue) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s, 'binance')", rows)
        changed = rollup_candles(conn, start, start + timedelta(minutes=minutes))
        assert changed["candles_5m"] == 2 * 120
        for table, width in DERIVED_CANDLES.items():
            got = {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(
                f"SELECT symbol, time, close_time, open, high, low, close, volume, quote_volume, trades, "
                f"taker_buy_volume, taker_buy_quote_volume FROM {table}").fetchall()}
            assert got == _expected(rows, width), table
        days = {r[0] for r in conn.execute("SELECT time FROM candles_1d").fetchall()}
        assert days == {datetime(2025, 3, 9, tzinfo=UTC), datetime(2025, 3, 10, tzinfo=UTC)}
        four = {r[0] for r in conn.execute("SELECT time FROM candles_4h").fetchall()}
        assert four == {datetime(2025, 3, 9, 20, tzinfo=UTC), datetime(2025, 3, 10, 0, tzinfo=UTC),
                        datetime(2025, 3, 10, 4, tzinfo=UTC)}
        # idempotent: nothing changes on a rerun
        assert set(rollup_candles(conn, start, start + timedelta(minutes=minutes)).values()) == {0}
        # a late 1m candle for a hole updates every level, touching only its buckets
        late = _candle_rows(start + timedelta(minutes=61), 1, set(), "BTCUSDT", rng)
        conn.execute("INSERT INTO candles_1m (time, symbol, close_time, open, high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, venue) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s, 'binance')", late[0])
        changed = rollup_candles(conn, late[0][0], late[0][0] + timedelta(minutes=1))
        assert changed == {"candles_5m": 1, "candles_30m": 1, "candles_4h": 1, "candles_1d": 1}
        got5 = {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(
            "SELECT symbol, time, close_time, open, high, low, close, volume, quote_volume, trades, "
            "taker_buy_volume, taker_buy_quote_volume FROM candles_5m").fetchall()}
        assert got5 == _expected(rows + late, timedelta(minutes=5))


def test_refresh_window_covers_whole_complete_buckets_only() -> None:
    m, five = 60_000, 300_000
    t = 1_767_225_600_000  # a 5m boundary
    # a late candle at minute 2 of a complete bucket: exactly that bucket
    assert refresh_window(five, t + 2 * m, t + 3 * m, t + 20 * m) == (t, t + five)
    # candles across two buckets: both
    assert refresh_window(five, t + 4 * m, t + 6 * m, t + 20 * m) == (t, t + 2 * five)
    # the bucket of the newest candle is still open: left to real-time aggregation
    assert refresh_window(five, t + 2 * m, t + 3 * m, t + 3 * m) is None
    assert refresh_window(five, t + 4 * m, t + 6 * m, t + 6 * m) == (t, t + five)
    # the candle that closes a bucket completes it
    assert refresh_window(five, t + 4 * m, t + 5 * m, t + 5 * m) == (t, t + five)
