"""README's cross-venue cookbook, executed: every query of its SQL block runs against a database holding
Binance, Bybit and OKX rows of one contract (BTC-USDT-PERP) plus a Binance-only one, and returns what the
seeded rows say it must."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from collector.db.instruments_repo import Instrument, upsert_instruments
from collector.db.partitions import ensure_partitions_for
from collector.db.schema import ensure_schema
from collector.db.tables import TIME_TABLES

README = Path(__file__).parents[2] / "README.md"
AT = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # the moment the cookbook's queries name
VENUE_SYMBOL = {"binance": "BTCUSDT", "bybit": "BTCUSDT", "okx": "BTC-USDT-SWAP"}


def cookbook() -> list[str]:
    """The statements of the ```sql block under '### Cross-venue cookbook', in order."""
    text = README.read_text()
    section = text.split("### Cross-venue cookbook", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block is not None, "no sql block in the cookbook section"
    return [s.strip() for s in block.group(1).split(";") if s.strip()]


def _seed(conn: psycopg.Connection) -> None:
    for table in TIME_TABLES:
        ensure_partitions_for(conn, table, AT - timedelta(days=1), AT + timedelta(days=1))
    upsert_instruments(conn, [Instrument("binance", "BTCUSDT", "BTC-USDT-PERP", "BTC", "1"),
                              Instrument("bybit", "BTCUSDT", "BTC-USDT-PERP", "BTC", "1"),
                              Instrument("okx", "BTC-USDT-SWAP", "BTC-USDT-PERP", "BTC", "0.01"),
                              Instrument("binance", "ETHUSDT", "ETH-USDT-PERP", "ETH", "1")], AT)
    rates = {"binance": "0.0001", "bybit": "0.0003", "okx": "-0.0001"}
    opens = {"binance": 1000, "bybit": 3000, "okx": 6000}  # open interest, BTC
    closes = {"binance": Decimal("100000"), "bybit": Decimal("100050"), "okx": Decimal("99990")}
    for venue, sym in VENUE_SYMBOL.items():
        # funding: an older rate, then the one in force at AT; a row after AT must not count
        conn.execute("INSERT INTO funding (time, venue, symbol, mark_price, funding_rate) VALUES "
                     "(%s, %s, %s, 1, 0.5), (%s, %s, %s, 1, %s), (%s, %s, %s, 1, 0.9)",
                     (AT - timedelta(minutes=1, seconds=30), venue, sym, AT - timedelta(seconds=20), venue, sym,
                      rates[venue], AT + timedelta(seconds=1), venue, sym))
        conn.execute("INSERT INTO open_interest VALUES (%s, %s, %s, %s)", (AT - timedelta(minutes=1), venue, sym,
                                                                           opens[venue]))
        for m in range(10, 0, -1):  # 07:50 .. 07:59, closed candles
            t = AT - timedelta(minutes=m)
            close = closes[venue] + (10 if venue == "bybit" and m == 3 else 0)  # 07:57: bybit 60 above binance
            conn.execute("INSERT INTO candles_1m VALUES (%s, %s, %s, %s, 1, 1, 1, %s, 1, 1, 1, 1, 1)",
                         (t, venue, sym, t + timedelta(seconds=59.999), close))
    # a cascade: binance first at 08:01, bybit at 08:02
    for venue, minute, usd in (("binance", 1, 5e5), ("binance", 1, 2e5), ("bybit", 2, 1e6)):
        t = AT + timedelta(minutes=minute, seconds=5)
        conn.execute("INSERT INTO liquidations VALUES (%s, %s, %s, 'sell', 'LIMIT', 1, 1, %s, 1, 'FILLED', %s)",
                     (t, venue, VENUE_SYMBOL[venue], usd, usd))
    # a Binance-only contract: no spread, no divergence, its whole share on one venue
    conn.execute("INSERT INTO funding (time, venue, symbol, mark_price, funding_rate) VALUES "
                 "(%s, 'binance', 'ETHUSDT', 1, 0.0002)", (AT - timedelta(seconds=5),))


@pytest.fixture
def results(db_url: str) -> list[list[tuple[object, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=AT)
        _seed(conn)
        return [conn.execute(q).fetchall() for q in cookbook()]  # type: ignore[arg-type]


def test_the_cookbook_has_the_queries_the_issue_asks_for() -> None:
    names = [q.splitlines()[0] for q in cookbook()]
    assert len(names) == 5, names
    assert all(n.startswith("--") for n in names)


def test_every_cookbook_query_returns_what_the_rows_say(results: list[list[tuple[object, ...]]]) -> None:
    spread, daily, liquidations, share, divergence = results
    assert spread == [("BTC-USDT-PERP", Decimal("0.0004"), "bybit", "okx")]
    assert [(n, v) for n, v, _ in daily] == [("BTC-USDT-PERP", "binance"), ("BTC-USDT-PERP", "bybit"),
                                              ("BTC-USDT-PERP", "okx"), ("ETH-USDT-PERP", "binance")]
    # the day's average includes the 08:00:01 row: (0.5 + rate + 0.9) / 3
    assert daily[0][2] == (Decimal("0.5") + Decimal("0.0001") + Decimal("0.9")) / 3
    assert liquidations == [("BTC-USDT-PERP", AT + timedelta(minutes=1), "binance", 2, 7e5),
                            ("BTC-USDT-PERP", AT + timedelta(minutes=2), "bybit", 1, 1e6)]
    usd = {"binance": 1000 * 100000, "bybit": 3000 * 100050, "okx": 6000 * 99990}
    total = sum(usd.values())
    assert [(n, v, float(s)) for n, v, s in share] == [
        ("BTC-USDT-PERP", v, round(usd[v] / total, 4)) for v in ("okx", "bybit", "binance")]
    top = divergence[0]
    assert top[:2] == ("BTC-USDT-PERP", AT - timedelta(minutes=3))
    assert top[2] == round((Decimal("100060") - Decimal("99990")) / Decimal("99990") * 10000, 2)
    assert len(divergence) == 10 and all(row[0] == "BTC-USDT-PERP" for row in divergence)
