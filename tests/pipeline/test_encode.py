"""encode.py: every value type round-trips exactly through a real PostgreSQL binary COPY."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.pipeline import encode as enc
from collector.pipeline.encode import COPY_HEADER, COPY_TRAILER, RowEncoder, encode_row, valid_symbol

BINANCE = RowEncoder("binance")  # rows as a Binance worker encodes them

NUMERIC_CASES = [
    "0", "0.0", "0.00010000", "-1.5", "123456789.123", "007.50", "000.000", "-0.0", "10000", "100000000",
    "99999999.99999999", "0.1", "1", "-1", "43123.10", "0.00000001", "12345678901234567890.12345678901234567890",
    "+3.14", "9999", "10000.0001",
]


def pg_text(v: str) -> str:
    """What PostgreSQL prints for a NUMERIC given as `v`: same scale, no leading zeros, no negative zero."""
    d = Decimal(v)
    if d == 0:
        d = abs(d)
    return f"{d:f}"


def copy_rows(conn: psycopg.Connection, table: str, cols: str, rows: list[bytes]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(COPY_HEADER + b"".join(rows) + COPY_TRAILER)


def test_numeric_edge_cases_round_trip_exactly(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TEMP TABLE n (i bigint, v numeric)")
        copy_rows(conn, "n", "i, v", [encode_row(["int8", "numeric"], [i, v]) for i, v in enumerate(NUMERIC_CASES)])
        got = dict(conn.execute("SELECT i, v::text FROM n").fetchall())
    assert got == {i: pg_text(v) for i, v in enumerate(NUMERIC_CASES)}


def test_every_scalar_type_and_null_round_trips(db_url: str) -> None:
    types = ["timestamptz", "text", "int8", "int2", "float8", "bool", "numeric"]
    rows = [
        [1_700_000_000_123, "BTCUSDT", 2**62, -32768, 1.0 / 3.0, True, "0.00010000"],
        [0, "ü€ text", -(2**63), 32767, -0.0, False, "-42"],
        [-1, "", 0, 0, 1e308, True, "0"],
        [None, None, None, None, None, None, None],
    ]
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TEMP TABLE a (t timestamptz, s text, i8 int8, i2 int2, f float8, b bool, n numeric)")
        copy_rows(conn, "a", "t, s, i8, i2, f, b, n", [encode_row(types, r) for r in rows])
        got = conn.execute("SELECT t, s, i8, i2, f, b, n::text FROM a ORDER BY i8 NULLS LAST, s").fetchall()
    def ts(ms: int) -> datetime:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    expected = [
        (ts(0), "ü€ text", -(2**63), 32767, -0.0, False, "-42"),
        (ts(-1), "", 0, 0, 1e308, True, "0"),
        (ts(1_700_000_000_123), "BTCUSDT", 2**62, -32768, 1.0 / 3.0, True, "0.00010000"),
        (None,) * 7,
    ]
    assert got == expected


def test_table_encoders_match_their_columns(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("""CREATE TEMP TABLE trades (time timestamptz, venue text, symbol text, trade_id bigint, price numeric,
            amount numeric, usd_value float8, side text, save_reason text, first_trade_id bigint,
            last_trade_id bigint)""")
        conn.execute("""CREATE TEMP TABLE funding (time timestamptz, venue text, symbol text, mark_price numeric,
            index_price numeric, funding_rate numeric, next_funding_time timestamptz)""")
        conn.execute("""CREATE TEMP TABLE liquidations (time timestamptz, venue text, symbol text, side text, order_type text,
            price numeric, avg_price numeric, quantity numeric, filled_quantity numeric, status text,
            usd_value float8)""")
        conn.execute("CREATE TEMP TABLE open_interest (time timestamptz, venue text, symbol text, open_interest numeric)")
        conn.execute("""CREATE TEMP TABLE candles_1m (time timestamptz, venue text, symbol text, close_time timestamptz,
            open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
            trades bigint, taker_buy_volume numeric, taker_buy_quote_volume numeric)""")
        t = 1_700_000_000_123
        cases = {
            "trades": (BINANCE.trade(t, "BTCUSDT", 7, "43123.10", "0.015", 646.8465, "buy", "large_trade", 5, 9),
                       (t, "binance", "BTCUSDT", 7, "43123.10", "0.015", 646.8465, "buy", "large_trade", 5, 9)),
            "funding": (BINANCE.funding(t, "ETHUSDT", "2301.50000000", None, "0.00010000", None),
                        (t, "binance", "ETHUSDT", "2301.50000000", None, "0.00010000", None)),
            "liquidations": (BINANCE.liquidation(t, "SOLUSDT", "SELL", "LIMIT", "101.5", "101.49", "3", "3",
                                                "FILLED", 304.47),
                             (t, "binance", "SOLUSDT", "SELL", "LIMIT", "101.5", "101.49", "3", "3", "FILLED", 304.47)),
            "open_interest": (BINANCE.open_interest(t, "BTCUSDT", "81234.567"), (t, "binance", "BTCUSDT", "81234.567")),
            "candles_1m": (BINANCE.candle(t, "BTCUSDT", t + 59_999, "1.0", "2.00", "0.5", "1.5", "10", "15.5",
                                         42, "4", "6.2"),
                           (t, "binance", "BTCUSDT", t + 59_999, "1.0", "2.00", "0.5", "1.5", "10", "15.5", 42, "4", "6.2")),
        }
        for table, (row, values) in cases.items():
            cols = enc.COLUMNS[table]
            copy_rows(conn, table, ", ".join(cols), [row])
            select = ", ".join(
                f"(extract(epoch from {c}) * 1000)::bigint" if c in ("time", "close_time", "next_funding_time")
                else f"{c}::text" if c not in ("venue", "symbol", "side", "save_reason", "order_type", "status")
                and not c.endswith("_id") and c not in ("usd_value", "trades") else c
                for c in cols)
            got = conn.execute(f"SELECT {select} FROM {table}").fetchone()
            assert got == values, table


def test_the_venue_is_fixed_per_encoder_and_validated(db_url: str) -> None:
    """Two encoders, one per venue, encode the same symbol into rows that differ only in the venue field;
    a venue name that could not be stored safely is refused when the encoder is made."""
    okx = enc.RowEncoder("okx")
    t = 1_700_000_000_123
    rows = [BINANCE.open_interest(t, "BTCUSDT", "1.5"), okx.open_interest(t, "BTCUSDT", "1.5"),
            BINANCE.open_interest(t, "BTCUSDT", "2")]  # the second binance row reuses the cached pair
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TEMP TABLE open_interest (time timestamptz, venue text, symbol text, "
                     "open_interest numeric)")
        copy_rows(conn, "open_interest", ", ".join(enc.COLUMNS["open_interest"]), rows)
        got = conn.execute("SELECT venue, symbol, open_interest::text FROM open_interest").fetchall()
    assert got == [("binance", "BTCUSDT", "1.5"), ("okx", "BTCUSDT", "1.5"), ("binance", "BTCUSDT", "2")]
    # (None is outside the typed contract, as for every str argument here: the compiled module refuses it with
    # a TypeError at the call, the source with this ValueError; config validation never passes one.)
    for bad in ["", "Binance", "b", "bin ance", "x'; --", "b" * 21]:
        with pytest.raises(ValueError):
            enc.RowEncoder(bad)
    with pytest.raises(ValueError):
        okx.trade(t, "btc'; drop table trades; --", 1, "1", "1", 1.0, "buy", "keep_all", 1, 1)


def test_garbage_numerics_are_refused() -> None:
    for bad in ["", "-", "+", ".5", "1.", "1e5", "NaN", "inf", " 1", "1 ", "1,5", "0x10", "١٢", "1.2.3", "--1",
                "1" * 300]:
        with pytest.raises(ValueError):
            enc.enc_numeric(bad)


def test_symbols_are_validated() -> None:
    assert valid_symbol("BTCUSDT") and valid_symbol("1000PEPEUSDT")
    for bad in ["btcusdt", "BTCUSDT_250926", "B", "BTC-USDT", "币安人生USDT", "X" * 31, "", None, "BTC USDT"]:
        assert not valid_symbol(bad)
    with pytest.raises(ValueError):
        BINANCE.trade(0, "btc'; drop table trades; --", 1, "1", "1", 1.0, "buy", "keep_all", 1, 1)


def test_numeric_wire_layout() -> None:
    # "0.00010000": one digit group 1 at weight -1, dscale 8
    assert enc.enc_numeric("0.00010000") == bytes.fromhex("0000000a" "0001" "ffff" "0000" "0008" "0001")
    # "-1.5": groups [1, 5000], weight 0, negative, dscale 1
    assert enc.enc_numeric("-1.5") == bytes.fromhex("0000000c" "0002" "0000" "4000" "0001" "0001" "1388")
    assert enc.enc_numeric("0") == bytes.fromhex("00000008" "0000" "0000" "0000" "0000")
    # "10000": trailing zero groups are not sent: one group 1 at weight 1, dscale 0
    assert enc.enc_numeric("10000") == bytes.fromhex("0000000a" "0001" "0001" "0000" "0000" "0001")
    # "0.00000001": a leading zero group of the fraction only lowers the weight (-2), dscale 8
    assert enc.enc_numeric("0.00000001") == bytes.fromhex("0000000a" "0001" "fffe" "0000" "0008" "0001")
    # "+012345.67890": sign and leading zeros dropped; groups 1, 2345, 6789 at weight 1, dscale 5
    assert enc.enc_numeric("+012345.67890") == bytes.fromhex("0000000e" "0003" "0001" "0000" "0005"
                                                             "0001" "0929" "1a85")


decimals = st.builds(
    lambda sign, ip, fp: f"{sign}{ip}{'.' + fp if fp is not None else ''}",
    st.sampled_from(["", "-", "+"]),
    st.text("0123456789", min_size=1, max_size=25),
    st.none() | st.text("0123456789", min_size=1, max_size=25),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(decimals, min_size=1, max_size=20))
def test_random_decimals_round_trip_through_postgres(db_url: str, values: list[str]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS h (i bigint, v numeric)")
        conn.execute("TRUNCATE h")
        copy_rows(conn, "h", "i, v", [encode_row(["int8", "numeric"], [i, v]) for i, v in enumerate(values)])
        got = dict(conn.execute("SELECT i, v::text FROM h").fetchall())
    assert got == {i: pg_text(v) for i, v in enumerate(values)}


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_random_decimals_encode_like_decimal_tuple(d: Decimal) -> None:
    # pure: re-derive the value from the wire digits and compare with Decimal arithmetic
    s = f"{d:f}"
    if len(s) > 200:
        return
    raw = enc.enc_numeric(s)
    _, nd, weight, sign, dscale = struct.unpack(">ihhhh", raw[:12])
    groups = struct.unpack(f">{nd}H", raw[12:])
    with localcontext() as ctx:
        ctx.prec = 1000  # exact: the default 28 digits would round the reconstruction
        value = sum(Decimal(g) * Decimal(10000) ** (weight - i) for i, g in enumerate(groups))
        if sign == 0x4000:
            value = -value  # unary minus rounds to the context precision too: keep it inside
        assert value == d
    assert dscale == max(0, -d.as_tuple().exponent)  # type: ignore[operator]


def _distinct_rows(start: int, n: int) -> None:
    """Trades with a new price and amount each, and every 10th a candle and a funding row of new figures."""
    for i in range(start, start + n):
        BINANCE.trade(1_700_000_000_000 + i, "BTCUSDT", i, f"{43000 + i / 100:.2f}", f"0.{i:06d}", 1.0, "buy",
                      "large_trade", i, i)
        if i % 10 == 0:
            v = f"{i * 1.37:.4f}"
            BINANCE.candle(1_700_000_000_000, "BTCUSDT", 1_700_000_059_999, v, v, v, v, v, v, 1, v, v)
            BINANCE.funding(1_700_000_000_000, "BTCUSDT", v, v, f"0.000{i:06d}", None)


def test_the_numeric_cache_stops_growing_after_a_few_thousand_values() -> None:
    """Issue 12: a 5,000/s soak's workers grew ~8 MB each over an hour while the NUMERIC cache filled with every
    distinct price, amount, candle volume and funding figure (emptied only at 65,536 entries). A filtered
    worker's encoder, once warm, may at no point of 100,000 more rows of distinct values hold more than ~1 MB
    beyond what it held (tracemalloc counts whatever the caches keep)."""
    import tracemalloc

    tracemalloc.start()
    try:
        _distinct_rows(0, 10_000)
        warm = tracemalloc.get_traced_memory()[0]
        grown = 0
        for start in range(10_000, 110_000, 1_000):
            _distinct_rows(start, 1_000)
            grown = max(grown, tracemalloc.get_traced_memory()[0] - warm)
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, f"the numeric caches grew by up to {grown:,} bytes"


def test_the_numeric_cache_keeps_two_generations_of_exact_encodings() -> None:
    cache = enc.NumericCache(2)
    values = ["1.5", "2", "0.00010000", "43123.10", "-1.5", "1.5", "2"]
    for v in values:
        assert (cache.get(v) or cache.miss(v)) == enc._enc_numeric(v)
        assert len(cache) <= 4
    # generations of 2: ["-1.5", "1.5"] became the previous one when "2" (the 3rd distinct since) came in
    assert cache.get("2") == enc._enc_numeric("2")
    assert cache.get("-1.5") is None and cache.miss("-1.5") == enc._enc_numeric("-1.5")  # from the previous one
    assert cache.get("-1.5") == enc._enc_numeric("-1.5")  # and now in the current one
    cache.size = 1  # a SIGHUP that turns keep_all off shrinks it from the next miss on
    for v in ["7", "8", "9"]:
        cache.miss(v)
    assert len(cache) == 2
    with pytest.raises(ValueError):
        enc.NumericCache(0)
