"""collector.client: typed DataFrames (polars and pandas) from the Arrow responses, whole ranges across
pages, equal to the database's rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pytest
from conftest import TIE_SYMBOL, ServerThread

from collector.api.app import ApiSettings
from collector.client import ApiError, Client

# venue and symbol: Categorical (the API sends a page's constant text columns dictionary-encoded)
CANDLE_DTYPES_PL = {"time": pl.Datetime("ms", "UTC"), "venue": pl.Categorical, "symbol": pl.Categorical, "close_time": pl.Datetime("ms", "UTC"),
                    "open": pl.Float64, "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
                    "volume": pl.Float64, "quote_volume": pl.Float64, "trades": pl.Int64,
                    "taker_buy_volume": pl.Float64, "taker_buy_quote_volume": pl.Float64}


@pytest.fixture(scope="module")
def symbol(filled_db: str) -> str:
    with psycopg.connect(filled_db) as conn:
        row = conn.execute("SELECT min(symbol) FROM candles_1m").fetchone()
    assert row is not None
    return str(row[0])


def test_polars_candles_typed_and_equal_to_the_table(api_url: str, filled_db: str, symbol: str) -> None:
    api = Client(api_url, page_rows=3)  # several pages: the client follows the cursor
    df = api.candles(symbol, "1m", start="2020-01-01", end=datetime(2100, 1, 1, tzinfo=UTC))
    assert dict(df.schema) == CANDLE_DTYPES_PL
    with psycopg.connect(filled_db) as conn:
        want = conn.execute("SELECT time, close, trades FROM candles_1m_closed WHERE symbol = %s ORDER BY time",
                            (symbol,)).fetchall()
    assert len(df) == len(want) >= 8
    assert list(zip(df["time"].to_list(), df["close"].to_list(), df["trades"].to_list(), strict=True)) == [
        (t, float(c), n) for t, c, n in want]


def test_pandas_trades_typed_with_nulls(api_url: str) -> None:
    df = Client(api_url, as_="pandas", page_rows=7).trades(TIE_SYMBOL, start=0, end="2100-01-01")
    assert len(df) == 40 and df["trade_id"].tolist() == list(range(1000, 1040))
    assert str(df["time"].dtype) == "datetime64[ms, UTC]"
    assert df["price"].dtype == "float64" and df["usd_value"].dtype == "float64"
    assert df["trade_id"].dtype == "int64"
    assert pd.api.types.is_string_dtype(df["side"])
    # six pages, each with its own one-value dictionaries: one category each
    assert df["symbol"].dtype == "category" and df["venue"].dtype == "category"
    assert df["symbol"].cat.categories.tolist() == [TIE_SYMBOL] and set(df["symbol"]) == {TIE_SYMBOL}
    assert df["venue"].cat.categories.tolist() == ["binance"] and set(df["venue"]) == {"binance"}
    # a nullable int64 column with a null becomes float64 with NaN in plain pandas: the null survives
    assert df["last_trade_id"].isna().tolist() == [i == 4 for i in range(40)]


def test_latest_and_symbols_as_arrow_and_polars(api_url: str) -> None:
    api = Client(api_url)
    latest = api.latest(as_="arrow")
    assert isinstance(latest, pa.Table) and latest.schema.field("funding_rate").type == pa.float64()
    assert latest.num_rows >= 6
    tiers = api.symbols()
    assert tiers.schema["tier"] == pl.Int64 and tiers.schema["computed_at"] == pl.Datetime("ms", "UTC")


def test_venue_is_passed_through(api_url: str, symbol: str) -> None:
    """The filled database holds Binance rows only: venue=binance returns them all, another venue none."""
    api = Client(api_url)
    every = api.trades(TIE_SYMBOL, start=0, end="2100-01-01")
    assert set(every["venue"].to_list()) == {"binance"} and len(every) == 40
    assert api.trades(TIE_SYMBOL, start=0, end="2100-01-01", venue="binance").equals(every)
    assert len(api.trades(TIE_SYMBOL, start=0, end="2100-01-01", venue="bybit")) == 0
    assert len(api.latest(venue="okx")) == 0 and len(api.symbols(venue="binance")) >= 6


def test_errors_carry_the_servers_detail(api_url: str, filled_db: str) -> None:
    with pytest.raises(ApiError, match=r"HTTP 400: start: expected an RFC 3339 time"):
        Client(api_url).candles("BTCUSDT", start="soon")
    with ServerThread(ApiSettings(dsn=filled_db, token="t0k")) as srv:
        with pytest.raises(ApiError, match="HTTP 401"):
            Client(srv.url).latest()
        assert len(Client(srv.url, token="t0k").latest()) >= 6
        assert "t0k" not in repr(Client(srv.url, token="t0k"))
