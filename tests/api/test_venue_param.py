"""The read API with two venues holding the same symbol name: every row names its venue, `venue` filters,
and without it every venue's rows come back merged in (time, venue, key) order, paged without loss."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pyarrow as pa
import pytest
from conftest import ServerThread

from collector.api import encode, query
from collector.api.app import ApiSettings
from collector.db import partitions, schema, tables
from collector.db.tiers_repo import TierRow, store_tiers

T0 = datetime(2025, 3, 12, 15, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
ARROW = encode.ARROW_MEDIA_TYPE
WIDE = {"start": "2025-03-12", "end": "2025-03-13", "time_format": "ms"}


@pytest.fixture
def two_venues(db_url: str) -> Iterator[str]:
    """Binance and Bybit BTCUSDT trades: 4 each, two pairs sharing a millisecond across venues; tiers for both."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        schema.ensure_schema(conn, "postgres", now=T0)
        for table in tables.TIME_TABLES:
            partitions.ensure_partitions_for(conn, table, T0, T0)
        for k, venue in enumerate(("bybit", "binance")):
            for i in range(4):
                t = T0 + timedelta(milliseconds=10 * (i // 2) + k * (i % 2))
                conn.execute("INSERT INTO trades VALUES (%s, %s, 'BTCUSDT', %s, 100, 1, 100, 'buy', 'keep_all', "
                             "NULL, NULL)", (t, venue, i))
            store_tiers(conn, venue, {"BTCUSDT": TierRow(k, 1e4, None, None)}, T0)
        # inside one millisecond, Binance's trade is later than Bybit's: microseconds decide, not the venue
        for venue, us, i in (("binance", 700, 4), ("bybit", 200, 4)):
            conn.execute("INSERT INTO trades VALUES (%s, %s, 'SUBMSUSDT', %s, 100, 1, 100, 'buy', 'keep_all', "
                         "NULL, NULL)", (T0 + timedelta(microseconds=us), venue, i))
    with ServerThread(ApiSettings(dsn=db_url, max_rows=100, default_rows=3)) as srv:
        yield srv.url


def _pages(url: str, path: str, **params: object) -> list[dict[str, object]]:
    """Every page as JSON; each page also as Arrow, which must carry the same rows and cursor (the Arrow
    path merges the venues itself, collector.api.columnar.merge_venues)."""
    rows: list[dict[str, object]] = []
    while True:
        r = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=30)  # type: ignore[arg-type]
        a = httpx.get(f"{url}/api/v1/{path}", params=params, headers={"Accept": ARROW}, timeout=30)  # type: ignore[arg-type]
        assert r.status_code == 200 and a.status_code == 200, (r.text, a.text)
        table = pa.ipc.open_stream(a.content).read_all()
        times = {f.name for f in table.schema if pa.types.is_timestamp(f.type)}
        as_json = [{k: (v.cast(pa.int64()) if k in times else v).as_py() for k, v in zip(table.column_names, vals, strict=True)}
                   for vals in zip(*table.columns, strict=True)] if table.num_rows else []
        body = r.json()
        if params.get("time_format") == "ms":
            assert as_json == body["data"], (path, params)
        else:
            assert len(as_json) == len(body["data"])
        cursor = (table.schema.metadata or {}).get(b"next_cursor")
        assert (cursor.decode() if cursor else None) == body["next_cursor"]
        rows += body["data"]
        if body["next_cursor"] is None:
            return rows
        params["cursor"] = body["next_cursor"]


def test_without_venue_every_venue_is_served_in_order_and_pages_lose_nothing(two_venues: str) -> None:
    rows = _pages(two_venues, "trades", symbol="BTCUSDT", limit=3, **WIDE)  # page edges inside one millisecond
    got = [(r["time"] - T0_MS, r["venue"], r["trade_id"]) for r in rows]  # type: ignore[operator]
    assert got == [(0, "binance", 0), (0, "bybit", 0), (0, "bybit", 1), (1, "binance", 1),
                   (10, "binance", 2), (10, "bybit", 2), (10, "bybit", 3), (11, "binance", 3)]


def test_rows_of_two_venues_inside_one_millisecond_keep_their_true_order(two_venues: str) -> None:
    for limit in (1, 2, 100):
        rows = _pages(two_venues, "trades", symbol="SUBMSUSDT", limit=limit, **WIDE)
        assert [r["venue"] for r in rows] == ["bybit", "binance"], limit


def test_venue_filters_every_endpoint(two_venues: str) -> None:
    bybit = _pages(two_venues, "trades", symbol="BTCUSDT", venue="bybit", **WIDE)
    assert {r["venue"] for r in bybit} == {"bybit"} and [r["trade_id"] for r in bybit] == [0, 1, 2, 3]
    tiers = _pages(two_venues, "symbols", time_format="ms")
    assert [(r["symbol"], r["venue"], r["tier"]) for r in tiers] == [("BTCUSDT", "binance", 1), ("BTCUSDT", "bybit", 0)]
    assert [r["venue"] for r in _pages(two_venues, "symbols", venue="binance")] == ["binance"]
    assert _pages(two_venues, "funding", symbol="BTCUSDT", venue="okx", **WIDE) == []
    r = httpx.get(f"{two_venues}/api/v1/trades", params={"symbol": "BTCUSDT", "venue": "kraken"})
    assert r.status_code == 422 and "venue" in r.text


def test_the_openapi_document_describes_venue_on_every_endpoint(two_venues: str) -> None:
    spec = httpx.get(f"{two_venues}/api/v1/openapi.json").json()
    for path, ops in spec["paths"].items():
        if path.endswith(("openapi.json", "docs")):
            continue
        params = {p["name"]: p for p in ops["get"]["parameters"]}
        assert "venue" in params and not params["venue"].get("required", False), path
        assert "omitted: every venue" in params["venue"]["description"], path
    assert "no default venue" in spec["info"]["description"]
    assert set(query.VENUES) == {"binance", "bybit", "okx"}
