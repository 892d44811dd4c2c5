"""Kline interval arithmetic: Binance's interval names and where each window starts and ends."""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
# The epoch (1970-01-01) was a Thursday; Binance's weekly klines open on Mondays, 4 days later.
_WEEK_OFFSET = 4 * DAY

FIXED_MS = {"1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE,
            "1h": HOUR, "2h": 2 * HOUR, "4h": 4 * HOUR, "6h": 6 * HOUR, "8h": 8 * HOUR, "12h": 12 * HOUR,
            "1d": DAY, "3d": 3 * DAY, "1w": WEEK}
VALID = tuple(FIXED_MS) + ("1M",)


def window_start(interval: str, t_ms: int) -> int:
    """Open time of the window of `interval` that contains t_ms."""
    if interval == "1M":
        d = datetime.fromtimestamp(t_ms / 1000, UTC)
        return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)
    if interval == "1w":
        return t_ms - (t_ms - _WEEK_OFFSET) % WEEK
    size = FIXED_MS[interval]
    return t_ms - t_ms % size


def window_end(interval: str, open_ms: int) -> int:
    """Close time (inclusive, ...999) of the window opening at open_ms."""
    if interval == "1M":
        d = datetime.fromtimestamp(open_ms / 1000, UTC)
        nxt = datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)
        return int(nxt.timestamp() * 1000) - 1
    return open_ms + FIXED_MS[interval] - 1
