"""JSON's ISO 8601 times, formatted a column at a time, are exactly iso() of each value (pure, no I/O)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from collector.api import encode, query

_MS = st.integers(query.MIN_MS, query.MAX_MS)


@given(st.lists(st.one_of(st.none(), _MS), max_size=50))
def test_iso_column_equals_iso_per_value(values: list[int | None]) -> None:
    assert encode.iso_column(values) == [None if v is None else encode.iso(v) for v in values]


def test_iso_column_at_the_ends_of_the_range() -> None:
    edges = [query.MIN_MS, -1, 0, 1, 999, 1741791600123, query.MAX_MS]
    assert encode.iso_column(edges) == [
        "0001-01-01T00:00:00.000Z", "1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00.000Z",
        "1970-01-01T00:00:00.001Z", "1970-01-01T00:00:00.999Z", "2025-03-12T15:00:00.123Z",
        "9999-12-31T23:59:59.999Z"]
    assert [encode.iso(v) for v in edges] == encode.iso_column(edges)


def test_json_rows_carry_iso_times_and_nulls() -> None:
    cols = query._cols("t:time x:float n:time?")
    body = orjson.loads(encode.to_json([(0, 1.5, None), (1741791600123, 2.0, 1)], cols, "iso", "c"))
    assert body == {"data": [{"t": "1970-01-01T00:00:00.000Z", "x": 1.5, "n": None},
                             {"t": "2025-03-12T15:00:00.123Z", "x": 2.0, "n": "1970-01-01T00:00:00.001Z"}],
                    "next_cursor": "c"}
