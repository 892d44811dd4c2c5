"""Schema version 7 against a real PostgreSQL: the `checkpoints` table keeps the funding rate and its
settlement time (OKX sends the rate apart from the mark price; collector.pipeline.funding_rates), a version 6
database migrates with its rows (no rate known: NULL), and a stored rate loads only while it is current."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from helpers import to_version_6_layout

from collector.db.schema import SCHEMA_VERSION, ensure_schema
from collector.pipeline.funding_rates import RATE_STALE_MS
from collector.runtime import checkpoints
from collector.runtime.checkpoints import SymbolCheckpoint

NOW = datetime(2026, 1, 1, 1, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
NEXT = NOW_MS + 7 * 3600_000  # the 08:00 settlement
INST = "BTC-USDT-SWAP"


def _columns(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT column_name::text, data_type::text FROM information_schema.columns "
                             "WHERE table_name = 'checkpoints'").fetchall())


def test_a_version_6_database_with_rows_is_migrated(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        to_version_6_layout(conn)
        assert "funding_rate" not in _columns(conn)  # really the old layout, before the migration
        conn.execute("""INSERT INTO checkpoints (venue, symbol, last_trade_id, funding_ms, filter_price, updated_ms)
                        VALUES ('okx', %s, 7, %s, 100.5, %s), ('binance', 'BTCUSDT', 9, NULL, NULL, %s)""",
                     (INST, NOW_MS - 60_000, NOW_MS, NOW_MS))
        ensure_schema(conn, "postgres", now=NOW)
        cols = _columns(conn)
        assert (cols["funding_rate"], cols["next_funding_ms"]) == ("text", "bigint")
        # the rows are kept as they were, with no rate: a successor waits for the venue's push, as before
        assert checkpoints.load(conn, venue="okx", now_ms=NOW_MS) == {
            INST: SymbolCheckpoint(7, None, NOW_MS - 60_000, 100.5, None, None, NOW_MS)}
        assert checkpoints.load(conn, venue="binance", now_ms=NOW_MS)["BTCUSDT"].last_trade_id == 9
        # and take a rate from now on
        c = SymbolCheckpoint(8, None, NOW_MS, 101.0, NOW_MS, None, NOW_MS + 1, "-0.0000123456789", NEXT)
        assert checkpoints.save(conn, {INST: c}, venue="okx") == 1
        assert checkpoints.load(conn, venue="okx", now_ms=NOW_MS) == {INST: c}
        ensure_schema(conn, "postgres", now=NOW)  # a restart finds nothing left to do
        assert conn.execute("SELECT count(*) FROM schema_version WHERE version = 7").fetchone() == (1,)
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,) == (8,)


def test_a_stored_rate_loads_only_until_it_is_stale(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        c = SymbolCheckpoint(5, filter_price=2.5, updated_ms=NOW_MS, funding_rate="0.0001", next_funding_ms=NEXT)
        checkpoints.save(conn, {INST: c}, venue="okx")
        assert checkpoints.load(conn, venue="okx", now_ms=NEXT - 1)[INST] == c
        # up to RATE_STALE_MS past the settlement as a rate the worker was sent itself (the next push is due)
        assert checkpoints.load(conn, venue="okx", now_ms=NEXT + RATE_STALE_MS)[INST] == c
        # after that the rate is a past period's: left out, the rest of the checkpoint resumed
        assert checkpoints.load(conn, venue="okx", now_ms=NEXT + RATE_STALE_MS + 1)[INST] == SymbolCheckpoint(
            5, filter_price=2.5, updated_ms=NOW_MS)
        assert conn.execute("SELECT funding_rate FROM checkpoints").fetchone() == ("0.0001",)  # stored as sent


def test_a_checkpoint_without_a_rate_stores_null(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        checkpoints.save(conn, {"BTCUSDT": SymbolCheckpoint(5, updated_ms=NOW_MS)}, venue="binance")
        assert conn.execute("SELECT funding_rate, next_funding_ms FROM checkpoints").fetchone() == (None, None)
