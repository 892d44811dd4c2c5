import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.pipeline.limits import MinInterval, WeightBudget

T0 = 1_700_000_040_000  # a minute boundary
MIN = 60_000

# --- MinInterval ----------------------------------------------------------------------------------


def test_first_event_of_each_calendar_minute_wins():
    m = MinInterval(MIN)
    assert m.accept("BTC", T0 + 59_000)
    assert not m.accept("BTC", T0 + 59_999)
    assert m.accept("BTC", T0 + 60_000)  # 1 ms later, but a new minute
    assert not m.accept("BTC", T0 + 119_999)
    assert m.accept("ETH", T0 + 60_001)  # keys are independent
    assert not m.accept("BTC", T0 + 1000)  # late event for an older minute


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 10 * MIN)), max_size=200))
def test_at_most_one_per_key_per_calendar_minute_and_one_in_each_active_minute(events):
    events.sort(key=lambda e: e[1])
    m = MinInterval(MIN)
    accepted = [(k, ts) for k, ts in events if m.accept(k, T0 + ts)]
    per_minute = Counter((k, (T0 + ts) // MIN) for k, ts in accepted)
    assert all(c == 1 for c in per_minute.values())
    assert set(per_minute) == {(k, (T0 + ts) // MIN) for k, ts in events}


# --- WeightBudget ---------------------------------------------------------------------------------


def test_default_budget_is_half_of_binances_limit():
    b = WeightBudget(T0)
    assert b.budget_per_min == 1200 and b.capacity == 1200
    assert b.try_acquire(1200, T0)
    assert not b.try_acquire(1, T0)
    # Tokens refill at 1200/min = 20 per second, but Binance counts per clock minute and this minute's
    # 1200 are spent: nothing more until the next minute starts, however many tokens refilled meanwhile.
    assert b.wait_time(20, T0) == pytest.approx(MIN)
    assert not b.try_acquire(20, T0 + 1000)
    assert not b.try_acquire(20, T0 + MIN - 1)
    assert b.try_acquire(20, T0 + MIN)


def test_worst_case_in_any_minute_stays_under_the_exchange_limit():
    b = WeightBudget(T0)
    used = sum(1 for t in range(T0, T0 + MIN, 10) if b.try_acquire(1, t))
    assert used <= 2400


def test_share_scales_the_bucket():
    b = WeightBudget(T0, share=0.25)
    assert b.capacity == 300
    assert b.try_acquire(300, T0) and not b.try_acquire(1, T0)
    assert WeightBudget(T0, share=0.0).wait_time(1, T0) == math.inf


def test_request_heavier_than_the_bucket_goes_through_on_a_full_bucket():
    b = WeightBudget(T0, share=0.01)  # capacity 12
    assert b.try_acquire(40, T0)
    assert b.tokens == -28
    assert b.wait_time(1, T0) == pytest.approx(29 * MIN / 12)


def test_429_pauses_for_retry_after():
    b = WeightBudget(T0)
    b.on_response(429, {"Retry-After": "7"}, T0)
    assert not b.try_acquire(1, T0 + 6999)
    assert b.wait_time(1, T0) >= 7000
    # Tokens were zeroed, so after the pause the bucket has refilled for 7 s: 140 weight.
    assert b.try_acquire(140, T0 + 7000)


def test_429_without_retry_after_waits_for_the_next_minute():
    b = WeightBudget(T0 + 10_000)
    b.on_response(429, {}, T0 + 10_000)
    assert b.paused_until_ms == T0 + MIN


def test_418_ban_pauses_until_its_end():
    b = WeightBudget(T0)
    b.on_response(418, {"retry-after": "3600"}, T0)  # header names are case-insensitive
    assert b.wait_time(1, T0 + 1000) == pytest.approx(3_599_000)
    assert not b.try_acquire(1, T0 + 3_599_999)
    assert b.try_acquire(1, T0 + 3_600_000)
    b2 = WeightBudget(T0)
    b2.on_response(418, {}, T0)
    assert b2.paused_until_ms == T0 + WeightBudget.DEFAULT_BAN_MS


def test_server_weight_count_wins_when_higher():
    b = WeightBudget(T0)
    assert b.try_acquire(100, T0)  # we counted 100 this minute
    b.on_response(200, {"X-MBX-USED-WEIGHT-1M": "900"}, T0)  # server: the IP used 900, so 300 are left
    assert not b.try_acquire(301, T0)
    assert b.try_acquire(300, T0)
    b.on_response(200, {"X-MBX-USED-WEIGHT-1M": "10"}, T0)  # lower than ours: keep ours
    assert not b.try_acquire(1, T0)
    assert b.try_acquire(1, T0 + MIN)  # Binance's count resets with the clock minute


def test_server_count_is_shared_by_share():
    b = WeightBudget(T0, share=0.5)
    b.on_response(200, {"x-mbx-used-weight-1m": "1000"}, T0)
    assert not b.try_acquire(101, T0)
    assert b.try_acquire(100, T0)  # half of the 200 left IP-wide


def test_server_count_over_budget_pauses_until_the_minute_resets():
    b = WeightBudget(T0 + 5000)
    b.on_response(200, {"X-MBX-USED-WEIGHT-1M": "1500"}, T0 + 5000)
    assert not b.try_acquire(1, T0 + 59_999)
    assert b.try_acquire(1, T0 + 60_000)


def test_garbage_headers_are_ignored():
    b = WeightBudget(T0)
    b.on_response(200, {"X-MBX-USED-WEIGHT-1M": "lots", "Retry-After": "soon"}, T0)
    assert b.tokens == 1200
    b.on_response(429, {"Retry-After": "-5"}, T0)  # nonsense: fall back to the minute
    assert b.paused_until_ms == T0 + MIN


def test_state_round_trips_through_fixed_bytes():
    b = WeightBudget(T0, fraction=0.4, share=0.5)
    b.try_acquire(50, T0)
    b.on_response(429, {"Retry-After": "2"}, T0)
    data = b.to_bytes()
    assert len(data) == WeightBudget.STATE.size
    c = WeightBudget.from_bytes(data)
    assert (c.tokens, c.paused_until_ms, c.share, c.fraction, c.capacity) == (
        b.tokens, b.paused_until_ms, b.share, b.fraction, b.capacity)
    assert c.wait_time(10, T0 + 500) == b.wait_time(10, T0 + 500)


def test_pause_is_passed_on_between_workers():
    a, b = WeightBudget(T0, share=0.5), WeightBudget(T0, share=0.5)
    a.on_response(418, {"Retry-After": "60"}, T0)
    b.pause_until(WeightBudget.from_bytes(a.to_bytes()).paused_until_ms)
    assert not b.try_acquire(1, T0 + 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 40)), max_size=300))
def test_never_more_than_two_budgets_in_any_minute(steps):
    b = WeightBudget(T0)
    t, grants = T0, []
    for dt, w in steps:
        t += dt
        if b.try_acquire(w, t):
            grants.append((t, w))
    for start, _ in grants:
        assert sum(w for s, w in grants if start <= s < start + MIN) <= 2400
