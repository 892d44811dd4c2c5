"""Derived candles (5m, 30m, 4h, 1d) from the stored 1m candles, on either back-end.

Why the collector computes them at all: Binance sends 1m klines only, and a chart of a coarser interval
must agree with Binance's own klines of that interval. After each flush of 1m candles the writer calls, on
plain PostgreSQL, rollup_candles (upserts into the derived tables) and, on TimescaleDB, where continuous
aggregates do the arithmetic, refresh_candle_views (their refresh policies look back only so far, so a
late candle from a REST repair or a spool replay would otherwise never reach them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from collector.db.mode import schema_mode
from collector.db.partitions import ensure_partitions_for, span_start
from collector.db.tables import DERIVED_CANDLES

# --- candle rollups (plain PostgreSQL) --------------------------------------------------------------------------

# Each derived interval is built from the next finer one: first/last/max/min/sum compose exactly, so the
# result equals rolling up 1m directly while reading 5..8 rows per bucket instead of up to 1440.
ROLLUP_SOURCE = {"candles_5m": "candles_1m", "candles_30m": "candles_5m", "candles_4h": "candles_30m",
                 "candles_1d": "candles_4h"}

_BIN_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"  # a UTC midnight: 4h and 1d buckets align to 00:00 UTC


def _rollup_sql(target: str, source: str, width: timedelta) -> sql.Composed:
    w = sql.Literal(width)
    return sql.SQL("""
        INSERT INTO {target} AS t (time, venue, symbol, close_time, open, high, low, close, volume, quote_volume,
                                   trades, taker_buy_volume, taker_buy_quote_volume)
        SELECT b, venue, symbol, b + {w} - INTERVAL '1 millisecond',
               (array_agg(open ORDER BY time))[1], max(high), min(low), (array_agg(close ORDER BY time DESC))[1],
               sum(volume), sum(quote_volume), sum(trades), sum(taker_buy_volume), sum(taker_buy_quote_volume)
        FROM (SELECT date_bin({w}, time, {origin}) AS b, * FROM {source}
              WHERE time >= date_bin({w}, %(since)s, {origin})
                AND time < date_bin({w}, %(until)s - INTERVAL '1 microsecond', {origin}) + {w}) s
        GROUP BY b, venue, symbol
        ON CONFLICT (venue, symbol, time) DO UPDATE SET
            close_time = EXCLUDED.close_time, open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
            close = EXCLUDED.close, volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume,
            trades = EXCLUDED.trades, taker_buy_volume = EXCLUDED.taker_buy_volume,
            taker_buy_quote_volume = EXCLUDED.taker_buy_quote_volume
        WHERE (t.open, t.high, t.low, t.close, t.volume, t.quote_volume, t.trades, t.taker_buy_volume,
               t.taker_buy_quote_volume)
              IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
               EXCLUDED.quote_volume, EXCLUDED.trades, EXCLUDED.taker_buy_volume, EXCLUDED.taker_buy_quote_volume)
        """).format(target=sql.Identifier(target), source=sql.Identifier(source), w=w,
                    origin=sql.SQL(_BIN_ORIGIN))


def rollup_candles(conn: psycopg.Connection, since: datetime, until: datetime) -> dict[str, int]:
    """Recompute every 5m/30m/4h/1d candle whose bucket overlaps [since, until) from candles_1m.

    Per venue and symbol (two venues' BTCUSDT are two contracts, rolled up apart). Same values as Binance's
    own klines of that interval: open of the first 1m candle, close of the last,
    max high, min low, summed volumes and trade counts, close_time = bucket end - 1 ms; buckets in UTC.
    Idempotent (upsert, rows rewritten only when they changed); the still-open bucket is recomputed on the
    next call. In TimescaleDB mode the continuous aggregates do this and the call returns {}.
    Returns rows inserted or changed per table.
    """
    if schema_mode(conn) == "timescaledb":
        return {}
    changed: dict[str, int] = {}
    with conn.transaction():
        for target, width in DERIVED_CANDLES.items():
            lo = span_start("day", since) - width  # generous: partition bounds only
            ensure_partitions_for(conn, target, lo, until)
            cur = conn.execute(_rollup_sql(target, ROLLUP_SOURCE[target], width), {"since": since, "until": until})
            changed[target] = cur.rowcount
    return changed


# --- candle views (TimescaleDB) -----------------------------------------------------------------------------


def refresh_window(bucket_ms: int, since_ms: int, until_ms: int, complete_ms: int) -> tuple[int, int] | None:
    """The refresh window (ms, aligned to UTC buckets) for 1m candles landed over [since, until).

    refresh_continuous_aggregate refreshes only buckets lying wholly inside its window, so the window is
    widened to bucket bounds; it stops at the last bucket that is complete by `complete_ms` (end of the
    newest 1m candle stored) because materialising a still-open bucket would hide its later candles from
    real-time aggregation until the next refresh. None when no complete bucket is affected.
    """
    start = since_ms // bucket_ms * bucket_ms
    end = min(-(-until_ms // bucket_ms) * bucket_ms, complete_ms // bucket_ms * bucket_ms)
    return (start, end) if end > start else None


def refresh_candle_views(conn: psycopg.Connection, since_ms: int, until_ms: int, complete_ms: int) -> int:
    """TimescaleDB: re-materialise every complete 5m..1d bucket containing 1m candles of [since, until).

    The refresh policies only look back 1 h / 6 h / 2 d / 7 d, so a candle stored later than that (REST
    repair, spool replay) would never reach the views; this refreshes exactly its buckets. Per the
    TimescaleDB 2.x docs, CALL refresh_continuous_aggregate(continuous_aggregate, window_start,
    window_end) cannot run inside a transaction block: `conn` must be in autocommit mode
    (https://docs.tigerdata.com/api/latest/continuous-aggregates/refresh_continuous_aggregate/).
    Returns how many views were refreshed.
    """
    if not conn.autocommit:
        raise ValueError("refresh_continuous_aggregate needs an autocommit connection")
    refreshed = 0
    for view, width in DERIVED_CANDLES.items():
        window = refresh_window(int(width.total_seconds() * 1000), since_ms, until_ms, complete_ms)
        if window is None:
            continue
        lo, hi = (datetime.fromtimestamp(ms / 1000, UTC) for ms in window)
        conn.execute(sql.SQL("CALL refresh_continuous_aggregate({}, {}, {})").format(
            sql.Literal(f"{view}_agg"), sql.Literal(lo), sql.Literal(hi)))
        refreshed += 1
    return refreshed

