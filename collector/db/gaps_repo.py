"""The gaps repository: the durable queue of repairs, from detection to filled or given up.

Why durable from detection: a gap a worker found but had not repaired when it stopped is work a successor
must finish; the `gaps` table is that queue. Workers send every version of a gap row through the
writer (upsert_gaps_sql keeps the most advanced one); a starting worker takes over open_gaps.
"""

from __future__ import annotations

from typing import NamedTuple

import psycopg
from psycopg import sql

from collector.db.tables import KEYS
from collector.pipeline.encode import COLUMNS

# A gap's states and their rank: a row is only ever replaced by a version of at least the same rank (and,
# within a rank, a newer updated_at). So a late "filling" cannot undo "filled", and two processes
# repairing the same range (a successor and a predecessor still draining) cannot move it backwards.
GAP_STATES: dict[str, int] = {"detected": 0, "filling": 0, "unfillable": 1, "filled": 2}
OPEN_GAP_STATES = ("detected", "filling")


def _gap_rank(ref: str) -> str:
    return f"CASE {ref}.state " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in GAP_STATES.items()) + " END"


def upsert_gaps_sql(stage: str) -> sql.Composed:
    """Move staged gap rows into `gaps`, keeping per key the most advanced version (see GAP_STATES).

    Why an upsert and not COPY: a gap is written at detection, again when its repair starts and once
    more when it ends, under the same key. DISTINCT ON collapses versions that arrive in one flush
    (ON CONFLICT DO UPDATE may not touch a row twice in one statement).
    """
    cols = COLUMNS["gaps"]
    key = KEYS["gaps"]
    return sql.SQL("""
        INSERT INTO gaps AS g ({cols})
        SELECT DISTINCT ON ({key}) {cols} FROM {stage}
        ORDER BY {key}, {rank_s} DESC, updated_at DESC
        ON CONFLICT ({key}) DO UPDATE SET filled_at = EXCLUDED.filled_at, state = EXCLUDED.state,
            reason = EXCLUDED.reason, updated_at = EXCLUDED.updated_at
        WHERE {rank_new} > {rank_old} OR ({rank_new} = {rank_old} AND EXCLUDED.updated_at >= g.updated_at)
        """).format(cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    key=sql.SQL(", ").join(map(sql.Identifier, key)), stage=sql.Identifier(stage),
                    rank_s=sql.SQL(_gap_rank(stage)), rank_new=sql.SQL(_gap_rank("EXCLUDED")),
                    rank_old=sql.SQL(_gap_rank("g")))


class OpenGap(NamedTuple):
    kind: str
    symbol: str
    from_id: int
    to_id: int
    detected_ms: int


def open_gaps(conn: psycopg.Connection, venue: str, symbols: list[str]) -> list[OpenGap]:
    """The unfinished repairs (detected or filling) of `venue`'s `symbols`, oldest first: what a worker
    takes over (the gaps_open index on (venue, symbol) serves it)."""
    rows = conn.execute("""SELECT kind, symbol, from_id, to_id, (extract(epoch FROM detected_at) * 1000)::bigint
                           FROM gaps WHERE state IN ('detected', 'filling') AND venue = %s AND symbol = ANY(%s)
                           ORDER BY detected_at""", (venue, symbols)).fetchall()
    return [OpenGap(*r) for r in rows]
