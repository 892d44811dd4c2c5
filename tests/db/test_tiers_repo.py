"""collector.db.tiers_repo against a real PostgreSQL: tier history appended, the latest per symbol read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from collector.db.schema import ensure_schema
from collector.db.tiers_repo import TierRow, load_latest_tiers, store_tiers
from collector.pipeline.tiers import TierAssignment

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)


def test_tiers_round_trip_latest_wins(db_url: str) -> None:
    t1 = NOW - timedelta(hours=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        store_tiers(conn, "binance", {"BTCUSDT": TierRow(1, 100_000.0, 80_000.0, 0.9), "ETHUSDT": (2, 50_000.0, None, None)}, t1)
        store_tiers(conn, "binance", {"BTCUSDT": TierRow(2, 90_000.5, 70_000.0, 0.7)}, NOW)
        store_tiers(conn, "binance", {"BTCUSDT": TierRow(2, 90_000.5, 70_000.0, 0.7)}, NOW)  # replay: no-op
        assert load_latest_tiers(conn, "binance") == {"BTCUSDT": TierRow(2, 90_000.5, 70_000.0, 0.7),
                                           "ETHUSDT": TierRow(2, 50_000.0, None, None)}
        assert conn.execute("SELECT count(*) FROM symbol_tiers").fetchone() == (3,)
        with pytest.raises(ValueError):
            store_tiers(conn, "binance", {"bad'sym": TierRow(1, 1.0, None, None)}, NOW)


def test_a_tier_computation_reads_back_field_for_field(db_url: str) -> None:
    """What the coordinator stores (TierAssignment) is what a restart resumes (TierRow), size quantile included."""
    computed = {"BTCUSDT": TierAssignment(0, 2_000_000.0, 1_000_000.0, 0.95)}
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_schema(conn, "postgres", now=NOW)
        store_tiers(conn, "binance", computed, NOW)
        row = load_latest_tiers(conn, "binance")["BTCUSDT"]
    assert row == TierRow(0, 2_000_000.0, 1_000_000.0, 0.95)
    assert row.size_quantile_usd == computed["BTCUSDT"].size_quantile
