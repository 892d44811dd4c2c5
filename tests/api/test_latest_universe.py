"""Which symbols `latest` lists: those with a tier, plus those with a 1m candle in the last hour.

The second set is found by a loose index scan over candles_1m's (venue, symbol, time) key (collector.api.query);
the filled database of the other API tests has tiers for every symbol, so the scan is checked here on
its own: no tiers, candles of several ages, every symbol probed in both the row and the column form.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from collector.api import columnar, query
from collector.db import partitions, schema, tables
from collector.db.tiers_repo import TierRow, store_tiers

VENUES = {"venues": list(query.VENUES)}  # every venue: the endpoint's default


def test_latest_lists_tiered_and_recently_traded_symbols(db_url: str) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ages = {"AAAUSDT": [2], "BBBUSDT": [90, 61], "CCCUSDT": [200, 30], "DDDUSDT": [59], "EEEUSDT": [3000]}
    with psycopg.connect(db_url) as conn:
        schema.ensure_schema(conn, "postgres")
        for table in tables.TIME_TABLES:
            partitions.ensure_partitions_for(conn, table, now - timedelta(days=3), now + timedelta(days=1))
        for sym, minutes in ages.items():
            for m in minutes:
                t = now - timedelta(minutes=m)
                conn.execute("INSERT INTO candles_1m VALUES (%s, 'binance', %s, %s, 1, 2, 0.5, 1.5, 10, 15, 3, 5, 7.5)",
                             (t, sym, t + timedelta(seconds=59.999)))
        conn.commit()

        def listed() -> tuple[list[str], list[str]]:
            rows = [r[0] for r in conn.execute(query.latest_sql(), VENUES)]
            got = conn.cursor(binary=True).execute(
                columnar.columns_sql(query.latest_sql(raw_times=True), query.LATEST_COLUMNS), VENUES).fetchone()
            assert got is not None
            arrays, _ = columnar.decode(got, query.LATEST_COLUMNS)
            return rows, arrays[0].to_pylist()

        # no tiers: the symbols whose latest candle is younger than an hour, whatever their older candles
        assert listed() == (["AAAUSDT", "CCCUSDT", "DDDUSDT"], ["AAAUSDT", "CCCUSDT", "DDDUSDT"])
        store_tiers(conn, "binance", {"EEEUSDT": TierRow(3, 1.0, None, None), "ZZZUSDT": TierRow(3, 1.0, None, None)}, now)
        conn.commit()
        want = ["AAAUSDT", "CCCUSDT", "DDDUSDT", "EEEUSDT", "ZZZUSDT"]
        assert listed() == (want, want)
        closes = {r[0]: r[8] for r in conn.execute(query.latest_sql(), VENUES)}
        assert closes["EEEUSDT"] == 1.5 and closes["ZZZUSDT"] is None

        # another venue's contracts are listed beside Binance's, even under the same name, and filtered out
        t = now - timedelta(minutes=5)
        for sym in ("AAAUSDT", "QQQUSDT"):
            conn.execute("INSERT INTO candles_1m VALUES (%s, 'bybit', %s, %s, 1, 2, 0.5, 9.5, 10, 15, 3, 5, 7.5)",
                         (t, sym, t + timedelta(seconds=59.999)))
        conn.commit()
        both = [(r[0], r[1], r[8]) for r in conn.execute(query.latest_sql(), VENUES)]
        assert both[:3] == [("AAAUSDT", "binance", 1.5), ("AAAUSDT", "bybit", 9.5), ("CCCUSDT", "binance", 1.5)]
        assert ("QQQUSDT", "bybit", 9.5) in both and len(both) == len(want) + 2
        assert [r[0] for r in conn.execute(query.latest_sql(), {"venues": ["bybit"]})] == ["AAAUSDT", "QQQUSDT"]
        assert [r[0] for r in conn.execute(query.latest_sql(), {"venues": ["binance"]})] == want


def _rows_read(plan: dict, table: str) -> float:
    """Rows a plan's nodes read from `table`: those they returned plus those their filters removed, per loop."""
    own = 0.0
    if plan.get("Relation Name") == table:
        own = (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * plan["Actual Loops"]
    return own + sum(_rows_read(p, table) for p in plan.get("Plans", []))


def test_symbols_and_latest_read_the_newest_tiers_not_their_history(db_url: str) -> None:
    """symbol_tiers keeps every tier computation (24 h apart by default, never expired): after months of it,
    a query that walks the whole history to find each contract's newest row missed the 100 ms target
    (250-320 ms for `latest` with a year of 496 symbols). Both endpoints must read a few rows per contract,
    whatever the history, and still answer with the newest computation."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    symbols = [f"S{i:02d}USDT" for i in range(20)]
    with psycopg.connect(db_url) as conn:
        schema.ensure_schema(conn, "postgres")
        for day in range(60, -1, -1):  # 61 computations; the newest (day 0) has tier 2, the older tier 1 or 3
            tier = 2 if day == 0 else 1 + 2 * (day % 2)
            store_tiers(conn, "binance", {s: TierRow(tier, 100.0 + day, None, None) for s in symbols},
                        now - timedelta(days=day))
        store_tiers(conn, "okx", {"BTC-USDT-SWAP": TierRow(4, 7.0, None, None)}, now - timedelta(days=3))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE symbol_tiers")  # as autovacuum leaves a table this size
        rows = conn.execute(query.symbols_sql(), {"venues": ["binance"]}).fetchall()
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(s, "binance", 2, 100.0) for s in symbols]
        assert [r[0] for r in conn.execute(query.symbols_sql(), {"venues": ["okx"]})] == ["BTC-USDT-SWAP"]
        listed = [(r[0], r[1]) for r in conn.execute(query.latest_sql(), VENUES)]
        assert listed == sorted([(s, "binance") for s in symbols] + [("BTC-USDT-SWAP", "okx")])

        history = 61 * len(symbols) + 1
        for q in (query.symbols_sql(), query.latest_sql()):
            plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(q), VENUES).fetchone()[0][0]
            read = _rows_read(plan["Plan"], "symbol_tiers")
            assert read <= 3 * (len(symbols) + 1), f"read {read} of {history} tier rows for {len(symbols) + 1} contracts"
