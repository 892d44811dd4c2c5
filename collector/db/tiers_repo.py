"""The tiers repository: every tier computation appended to `symbol_tiers`, the latest read back on start.

Tiers are ranked within a venue (a symbol's activity is compared with its own venue's), so every call
names the venue and rows are keyed by it.

Why stored at all: tiers come from 24 h of live statistics, so a restart without them would run on the
ticker's rough bootstrap tiers for hours. History is kept (one row per symbol per computation) so a
threshold that looked wrong can be traced to the statistics it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

import psycopg

from collector.symbols import valid_symbol, valid_venue


class TierRow(NamedTuple):
    """One symbol's stored tier; fields in the order of collector.pipeline.tiers.TierAssignment."""

    tier: int
    threshold_usd: float
    size_quantile_usd: float | None  # the size quantile (filters.trades.threshold_quantile) behind the threshold
    score: float | None


# (tier, threshold_usd, size quantile USD, score): a TierRow, a TierAssignment or a plain tuple.
TierTuple = tuple[int, float, float | None, float | None]


def store_tiers(conn: psycopg.Connection, venue: str, assignments: Mapping[str, TierTuple],
                computed_at: datetime) -> int:
    """Append one tier computation of `venue` (symbol -> TierRow, TierAssignment or a tuple in their field order).

    History is kept (one row per symbol per computation); re-storing the same computed_at is a no-op.
    """
    if not valid_venue(venue):
        raise ValueError(f"invalid venue: {venue!r}")
    rows = []
    for symbol, (tier, thr, quantile, score) in assignments.items():
        if not valid_symbol(symbol):
            raise ValueError(f"invalid symbol: {symbol!r}")
        rows.append((computed_at, venue, symbol, int(tier), float(thr), quantile, score))
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("""INSERT INTO symbol_tiers (computed_at, venue, symbol, tier, threshold_usd,
                                                     size_quantile_usd, score)
                           VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""", rows)
    return len(rows)


def load_latest_tiers(conn: psycopg.Connection, venue: str) -> dict[str, TierRow]:
    """Each of `venue`'s symbols' most recent tier, so a restart resumes where the last computation left off."""
    rows = conn.execute("""SELECT DISTINCT ON (symbol) symbol, tier, threshold_usd, size_quantile_usd, score
                           FROM symbol_tiers WHERE venue = %s ORDER BY symbol, computed_at DESC""",
                        (venue,)).fetchall()
    return {r[0]: TierRow(*r[1:]) for r in rows}
