"""Schema version 6 against a real PostgreSQL: every table keyed by venue first, a version 5 database with
rows migrated (rows kept as 'binance'), two venues' same-named contracts side by side, the instruments table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from helpers import V5_KEYS, to_version_5_layout

from collector.db.gaps_repo import OpenGap, open_gaps
from collector.db.instruments_repo import Instrument, binance_instruments, upsert_instruments
from collector.db.partitions import ensure_partitions_for
from collector.db.rollups import rollup_candles
from collector.db.schema import SCHEMA_VERSION, TIMEFRAMES, closed_view, ensure_schema
from collector.db.tables import KEYS, TIME_TABLES, primary_key
from collector.db.tiers_repo import TierRow, load_latest_tiers, store_tiers
from collector.pipeline.encode import COLUMNS, COPY_HEADER, COPY_TRAILER, RowEncoder
from collector.runtime import checkpoints
from collector.runtime.checkpoints import SymbolCheckpoint

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)
T = NOW - timedelta(hours=1)  # 14:30, a 5m / 30m bucket start
T_MS = int(T.timestamp() * 1000)
# Every table but the time tables, with the key version 6 gives it.
OTHER_KEYS = {"gaps": KEYS["gaps"], "symbol_tiers": ("venue", "computed_at", "symbol"),
              "checkpoints": ("venue", "symbol"), "instruments": ("venue", "symbol")}


def _index_columns(conn: psycopg.Connection, index: str) -> list[str]:
    return [r[0] for r in conn.execute("""
        SELECT a.attname::text FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indexrelid = to_regclass(%s) ORDER BY k.n""", (index,))]


def _assert_v6_layout(conn: psycopg.Connection) -> None:
    """Every key and index starts with venue, on the parents and on every partition (pg_constraint, pg_index)."""
    for table in (*TIME_TABLES, *OTHER_KEYS):
        want = KEYS.get(table) or OTHER_KEYS[table]
        pk = primary_key(conn, table)
        assert pk is not None and pk[1] == want, (table, pk)
        nullable = conn.execute("SELECT is_nullable FROM information_schema.columns WHERE table_name = %s "
                                "AND column_name = 'venue'", (table,)).fetchone()
        assert nullable == ("NO",), table
        default = conn.execute("SELECT column_default FROM information_schema.columns WHERE table_name = %s "
                               "AND column_name = 'venue'", (table,)).fetchone()
        assert default == (None,), table  # a row without a venue is refused, not filed under binance
    # each partition's own key index (what the planner uses) starts with venue too
    parts = conn.execute("""SELECT c.relname::text, p.relname::text, i.indexrelid::regclass::text
                           FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid JOIN pg_class p ON p.oid = h.inhparent
                           JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary""").fetchall()
    assert {p for _, p, _ in parts} == set(TIME_TABLES)
    for child, parent, index in parts:
        assert _index_columns(conn, index) == list(KEYS[parent]), child
    assert _index_columns(conn, "gaps_open") == ["venue", "symbol"]
    # OKX and Bybit publish no trade count or taker-buy volumes: nullable on every candle table and partition
    optional = conn.execute("""SELECT table_name::text, column_name::text, is_nullable::text
                               FROM information_schema.columns WHERE table_name LIKE 'candles%%'
                               AND column_name IN ('trades', 'taker_buy_volume', 'taker_buy_quote_volume')
                               AND table_name NOT LIKE '%%closed'""").fetchall()
    assert {t for t, _, _ in optional} >= {"candles_1m", "candles_5m", "candles_30m", "candles_4h", "candles_1d"}
    assert [r for r in optional if r[2] != "YES"] == []
    assert _index_columns(conn, "symbol_tiers_latest") == ["venue", "symbol", "computed_at"]
    assert conn.execute("SELECT to_regclass('symbol_tiers_symbol_latest')").fetchone() == (None,)
    for view in TIMEFRAMES:
        cols = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_name = %s", (closed_view(view),))}
        assert "venue" in cols, view


def test_a_fresh_database_gets_the_venue_layout(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        _assert_v6_layout(conn)
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,) == (8,)


def _v5_rows(conn: psycopg.Connection) -> None:
    """One row per table, as version 5 code wrote them (no venue)."""
    conn.execute("INSERT INTO trades VALUES (%s, 'BTCUSDT', 7, 100.5, 2, 201, 'buy', 'large_trade', 7, 7)", (T,))
    conn.execute("INSERT INTO funding VALUES (%s, 'BTCUSDT', 100, 100, 0.0001, %s)", (T, T + timedelta(hours=8)))
    conn.execute("INSERT INTO liquidations VALUES (%s, 'BTCUSDT', 'sell', 'LIMIT', 100, 100, 2, 2, 'FILLED', 200)",
                 (T,))
    conn.execute("INSERT INTO open_interest VALUES (%s, 'BTCUSDT', 12345)", (T,))
    for table in ("candles_1m", "candles_5m", "candles_30m", "candles_4h", "candles_1d"):
        conn.execute(f"INSERT INTO {table} VALUES (%s, 'BTCUSDT', %s, 1, 2, 0.5, 1.5, 10, 15, 3, 5, 7)",
                     (T, T + timedelta(seconds=59.999)))
    conn.execute("""INSERT INTO gaps (symbol, kind, from_id, to_id, detected_at, state, reason, updated_at)
                    VALUES ('BTCUSDT', 'trades', 10, 12, %s, 'detected', 'v5', %s)""", (T, T))
    conn.execute("""INSERT INTO symbol_tiers (computed_at, symbol, tier, threshold_usd, size_quantile_usd, score)
                    VALUES (%s, 'BTCUSDT', 1, 5e4, 2e4, 0.5)""", (T,))
    conn.execute("INSERT INTO checkpoints (symbol, last_trade_id, updated_ms) VALUES ('BTCUSDT', 7, %s)", (T_MS,))


def test_a_version_5_database_with_rows_is_migrated(db_url: str) -> None:
    """Rows kept, every one 'binance'; the keys and indexes swapped to venue-first, on every partition."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        for table in TIME_TABLES:
            ensure_partitions_for(conn, table, T, T)
        to_version_5_layout(conn)
        for table, key in V5_KEYS.items():  # really the old layout, before the migration
            pk = primary_key(conn, table)
            assert pk is not None and ", ".join(pk[1]) == key, table
        _v5_rows(conn)
        ensure_schema(conn, "postgres", now=NOW)
        _assert_v6_layout(conn)
        for table in (*TIME_TABLES, "gaps", "symbol_tiers", "checkpoints"):
            assert conn.execute(f"SELECT venue, symbol FROM {table}").fetchall() == [("binance", "BTCUSDT")], table
        assert conn.execute("SELECT trade_id, price::text FROM trades").fetchone() == (7, "100.5")
        assert open_gaps(conn, "binance", ["BTCUSDT"]) == [OpenGap("trades", "BTCUSDT", 10, 12, T_MS)]
        assert load_latest_tiers(conn, "binance") == {"BTCUSDT": TierRow(1, 5e4, 2e4, 0.5)}
        assert checkpoints.load(conn, venue="binance")["BTCUSDT"].last_trade_id == 7
        assert conn.execute("SELECT count(*) FROM candles_5m_closed WHERE venue = 'binance'").fetchone() == (1,)
        ensure_schema(conn, "postgres", now=NOW)  # a restart finds nothing left to do
        assert conn.execute("SELECT count(*) FROM schema_version WHERE version = 6").fetchone() == (1,)


def _copy(conn: psycopg.Connection, table: str, rows: list[bytes]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(COPY_HEADER + b"".join(rows) + COPY_TRAILER)


def test_two_venues_same_symbol_side_by_side_and_rolled_up_apart(db_url: str) -> None:
    """Binance's and Bybit's BTCUSDT: the same symbol, time and ids in every table, no key conflict, each
    venue's candles rolled up from its own 1m candles only."""
    venues = {"binance": RowEncoder("binance"), "bybit": RowEncoder("bybit")}
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        for table in TIME_TABLES:
            ensure_partitions_for(conn, table, T, NOW)
        for k, (venue, enc) in enumerate(venues.items()):
            _copy(conn, "trades", [enc.trade(T_MS, "BTCUSDT", 7, "100.5", "2", 201.0, "buy", "large_trade", 7, 7)])
            _copy(conn, "funding", [enc.funding(T_MS, "BTCUSDT", "100", None, f"0.000{k + 1}", None)])
            _copy(conn, "liquidations", [enc.liquidation(T_MS, "BTCUSDT", "sell", "LIMIT", "100", "100", "2", "2",
                                                         "FILLED", 200.0)])
            _copy(conn, "open_interest", [enc.open_interest(T_MS, "BTCUSDT", str(1000 * (k + 1)))])
            # five 1m candles of one 5m bucket; bybit's close 10 higher
            _copy(conn, "candles_1m", [enc.candle(T_MS + m * 60_000, "BTCUSDT", T_MS + m * 60_000 + 59_999, "1",
                                                  str(2 + m), "0.5", str(1.5 + m + 10 * k), "10", "15", 3, "5", "7")
                                       for m in range(5)])
            _copy(conn, "gaps", [enc.gap("BTCUSDT", 10, 12, T_MS, kind="trades", state="detected", reason=venue)])
            store_tiers(conn, venue, {"BTCUSDT": TierRow(k, 1e4 * (k + 1), None, None)}, T)
            checkpoints.save(conn, {"BTCUSDT": SymbolCheckpoint(7 + k, updated_ms=T_MS)}, venue=venue)
        changed = rollup_candles(conn, T, T + timedelta(minutes=5))
        assert changed["candles_5m"] == 2
        for table in (*TIME_TABLES, "gaps", "symbol_tiers", "checkpoints"):
            got = conn.execute(f"SELECT venue, count(*) FROM {table} WHERE symbol = 'BTCUSDT' "
                               "GROUP BY venue ORDER BY venue").fetchall()
            want = 5 if table == "candles_1m" else 1
            assert got == [("binance", want), ("bybit", want)], table
        closes = dict(conn.execute("SELECT venue, close::float8 FROM candles_5m WHERE symbol = 'BTCUSDT'").fetchall())
        assert closes == {"binance": 5.5, "bybit": 15.5}
        assert dict(conn.execute("SELECT venue, open_interest::float8 FROM open_interest").fetchall()) == {
            "binance": 1000.0, "bybit": 2000.0}
        assert load_latest_tiers(conn, "bybit") == {"BTCUSDT": TierRow(1, 2e4, None, None)}
        assert open_gaps(conn, "bybit", ["BTCUSDT"]) == [OpenGap("trades", "BTCUSDT", 10, 12, T_MS)]
        assert checkpoints.load(conn, venue="binance")["BTCUSDT"].last_trade_id == 7
        with pytest.raises(psycopg.errors.NotNullViolation):  # a row without a venue is refused
            conn.execute("INSERT INTO open_interest (time, symbol, open_interest) VALUES (%s, 'BTCUSDT', 1)", (T,))


def test_instruments_upsert_keeps_first_seen_and_moves_last_seen(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        universe = binance_instruments(["BTCUSDT", "1000PEPEUSDT", "BTCUSDC"])  # the last is no USDT perpetual
        assert universe == [Instrument("binance", "BTCUSDT", "BTC-USDT-PERP", "BTC", "1"),
                            Instrument("binance", "1000PEPEUSDT", "1000PEPE-USDT-PERP", "1000PEPE", "1")]
        okx = Instrument("okx", "BTC-USDT-SWAP", "BTC-USDT-PERP", "BTC", "0.01")
        assert upsert_instruments(conn, [*universe, okx], T) == 3
        assert upsert_instruments(conn, universe[:1], NOW) == 1
        assert upsert_instruments(conn, universe[:1], T - timedelta(days=1)) == 1  # a late, older sighting
        rows = conn.execute("""SELECT venue, symbol, contract_size::text, first_seen, last_seen FROM instruments
                               WHERE normalized = 'BTC-USDT-PERP' ORDER BY venue""").fetchall()
        assert rows == [("binance", "BTCUSDT", "1", T - timedelta(days=1), NOW),
                        ("okx", "BTC-USDT-SWAP", "0.01", T, T)]
        for bad in (okx._replace(contract_size="0"), okx._replace(venue="OKX"), okx._replace(normalized="BTC"),
                    okx._replace(contract_size="nan")):
            with pytest.raises(ValueError):
                upsert_instruments(conn, [bad], NOW)
        assert conn.execute("SELECT count(*) FROM instruments").fetchone() == (3,)


def test_a_candle_without_count_or_taker_volumes_is_stored_with_nulls_and_rolled_up(db_url: str) -> None:
    """OKX's klines carry neither a trade count nor taker-buy volumes (the decoder gives -1 and ""): stored as
    NULL, not refused, and the roll-up keeps them NULL instead of inventing a zero."""
    enc = RowEncoder("okx")
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        for table in TIME_TABLES:
            ensure_partitions_for(conn, table, T, NOW)
        _copy(conn, "candles_1m", [enc.candle(T_MS + m * 60_000, "BTC-USDT-SWAP", T_MS + m * 60_000 + 59_999, "1",
                                              "2", "0.5", "1.5", "10", "15", -1, "", "") for m in range(5)])
        rollup_candles(conn, T, T + timedelta(minutes=5))
        for table in ("candles_1m", "candles_5m"):
            rows = conn.execute(f"SELECT venue, volume::text, trades, taker_buy_volume, taker_buy_quote_volume "
                                f"FROM {table}").fetchall()
            want = ("okx", "10" if table == "candles_1m" else "50", None, None, None)
            assert rows == [want] * (5 if table == "candles_1m" else 1), table
