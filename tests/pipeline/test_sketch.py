import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.pipeline import sketch
from collector.pipeline.sketch import MAX_VALUE, MIN_VALUE, NBUCKETS, NBYTES, SizeSketch

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def exact_quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[int(q * (len(s) - 1))]


def clamp(v: float) -> float:
    return min(max(v, MIN_VALUE), MAX_VALUE)


def assert_within(estimate: float, exact: float, rel: float = 0.02) -> None:
    exact = clamp(exact)
    assert abs(estimate - exact) <= rel * exact, (estimate, exact)


def test_layout_is_fixed_and_covers_the_range():
    assert NBYTES == NBUCKETS * 4
    assert len(SizeSketch().to_bytes()) == NBYTES
    assert sketch.bucket_index(MIN_VALUE) == 0
    assert sketch.bucket_index(MAX_VALUE) == NBUCKETS - 1
    # Each end of the range is resolved, not merely clamped into a bucket far away.
    assert_within(sketch.bucket_value(sketch.bucket_index(0.0100001)), 0.0100001)
    assert_within(sketch.bucket_value(sketch.bucket_index(9.9e9)), 9.9e9)


@pytest.mark.parametrize("v", [0.01, 0.011, 0.5, 1.0, 3.14159, 99.99, 1e4, 123456.7, 5e8, 1e10])
def test_single_value_round_trips_within_two_percent(v):
    s = SizeSketch()
    s.add(v)
    for q in (0.0, 0.5, 1.0):
        assert_within(s.quantile(q), v)


def test_values_outside_range_clamp_to_end_buckets():
    s = SizeSketch()
    for v in (0.0, -5.0, 1e-9, 0.001):
        s.add(v)
    s.add(1e15)
    assert s.count == 5
    assert s.counts[0] == 4 and s.counts[NBUCKETS - 1] == 1
    assert_within(s.quantile(0.0), MIN_VALUE)
    assert_within(s.quantile(1.0), MAX_VALUE)


def test_empty_sketch_has_no_quantile():
    assert math.isnan(SizeSketch().quantile(0.9))
    assert SizeSketch().count == 0


def test_hand_computed_quantiles():
    # 10 trades of $100 and one of $1M: P90 (rank int(0.9*10)=9) is still $100, max is $1M.
    s = SizeSketch()
    s.add(100.0, count=10)
    s.add(1e6)
    assert s.count == 11
    assert_within(s.quantile(0.9), 100.0)
    assert_within(s.quantile(1.0), 1e6)
    assert s.quantile(0.9) != pytest.approx(1e6)


def test_rejects_quantile_out_of_range():
    s = SizeSketch()
    s.add(1.0)
    with pytest.raises(ValueError):
        s.quantile(1.5)


@pytest.mark.parametrize("seed", range(5))
def test_quantile_error_bound_on_heavy_tailed_data(seed):
    rng = random.Random(seed)
    # Log-normal body plus a Pareto tail: like trade sizes, spans many decades.
    values = [rng.lognormvariate(5.0, 2.0) for _ in range(20_000)]
    values += [100.0 * rng.paretovariate(1.1) for _ in range(2_000)]
    s = SizeSketch()
    for v in values:
        s.add(v)
    for q in QS:
        assert_within(s.quantile(q), exact_quantile(values, q))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e12, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from(QS))
def test_quantile_error_bound_property(values, q):
    s = SizeSketch()
    for v in values:
        s.add(v)
    assert_within(s.quantile(q), exact_quantile(values, q))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e11, allow_nan=False), max_size=200),
       st.lists(st.floats(min_value=0.0, max_value=1e11, allow_nan=False), max_size=200))
def test_merge_equals_single_sketch_of_union(a, b):
    sa, sb, union = SizeSketch(), SizeSketch(), SizeSketch()
    for v in a:
        sa.add(v)
        union.add(v)
    for v in b:
        sb.add(v)
        union.add(v)
    sa.merge(sb)
    assert sa == union
    assert sa.count == union.count == len(a) + len(b)
    for q in QS:
        assert sa.quantile(q) == union.quantile(q) or (math.isnan(union.quantile(q)) and not a + b)


def test_merge_is_in_place_for_holders_of_the_counts():
    s, other = SizeSketch(), SizeSketch()
    held = s.counts
    other.add(42.0, count=3)
    s.merge(other)
    assert sum(held) == 3


def test_bytes_round_trip():
    rng = random.Random(7)
    s = SizeSketch()
    for _ in range(1000):
        s.add(rng.paretovariate(1.3))
    s.add(5e9, count=12345)
    data = s.to_bytes()
    back = SizeSketch.from_bytes(memoryview(bytearray(data)))
    assert back == s
    assert back.count == s.count
    assert back.quantile(0.9) == s.quantile(0.9)


def test_from_bytes_rejects_wrong_size():
    with pytest.raises(ValueError):
        SizeSketch.from_bytes(b"\0" * (NBYTES - 4))


def test_overflow_is_loud_not_silent():
    s = SizeSketch()
    s.add(1.0, count=2**32 - 1)
    with pytest.raises(OverflowError):
        s.add(1.0)


def test_quantile_of_an_array_skips_empty_ends_without_moving_the_bucket() -> None:
    """The array path trims empty buckets at both ends in C; the bucket found must be the list path's."""
    from array import array

    from collector.pipeline.sketch import TYPECODE, bucket_value, quantile_of_counts

    counts = [0] * NBUCKETS
    counts[400], counts[401], counts[700] = 5, 90, 5  # rank int(q * 99): 0-4 -> 400, 5-94 -> 401, 95-99 -> 700
    arr = array(TYPECODE, counts)
    for q, bucket in ((0.0, 400), (0.05, 400), (0.06, 401), (0.9, 401), (0.96, 700), (1.0, 700)):
        assert quantile_of_counts(arr, 100, q) == quantile_of_counts(counts, 100, q) == bucket_value(bucket)
    assert quantile_of_counts(arr, 101, 1.0) == bucket_value(NBUCKETS - 1)  # a total above the counts' sum
    assert quantile_of_counts(array(TYPECODE, bytes(NBUCKETS * arr.itemsize)), 3, 0.5) == bucket_value(NBUCKETS - 1)
