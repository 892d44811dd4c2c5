import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.pipeline.activity import DAY_MS, EMPTY_SUMMARY, Summary, SymbolActivity, nbytes

H = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (3 * H)  # start of a 3 h slot


def near(a: float, b: float, rel: float = 0.02) -> bool:
    return abs(a - b) <= rel * abs(b)


def test_empty_summary():
    assert SymbolActivity().summary(T0) == EMPTY_SUMMARY


def test_hand_computed_summary():
    a = SymbolActivity()
    for usd in (100.0, 200.0, 300.0, 400.0, 1000.0):
        a.add(T0 + 1000, usd)
    s = a.summary(T0 + 2000)
    assert (s.volume, s.count, s.avg, s.max) == (2000.0, 5, 400.0, 1000.0)
    # Rank int(0.9 * 4) = 3 -> the 4th smallest, $400.
    assert near(s.size_quantile, 400.0)
    assert near(a.summary(T0, quantile=1.0).size_quantile, 1000.0)


def test_old_slots_age_out_of_the_window():
    a = SymbolActivity(window_ms=DAY_MS, slots=8)
    a.add(T0, 5000.0)  # slot 0
    a.add(T0 + 3 * H, 10.0)  # slot 1
    # At T0 + 24h - 1 both slots are inside the window; at T0 + 24h the first has aged out.
    assert a.summary(T0 + 24 * H - 1).count == 2
    s = a.summary(T0 + 24 * H)
    assert (s.count, s.volume, s.max) == (1, 10.0, 10.0)
    assert a.summary(T0 + 27 * H).count == 0


def test_new_slot_reuses_ring_position_and_forgets_old_data():
    a = SymbolActivity(window_ms=8 * H, slots=8)  # 1 h slots
    a.add(T0, 100.0)
    a.add(T0 + 8 * H, 1.0)  # same ring position as T0, one window later
    s = a.summary(T0 + 8 * H)
    assert (s.count, s.volume, s.max) == (1, 1.0, 1.0)


def test_late_trade_goes_into_its_own_slot():
    a = SymbolActivity(window_ms=8 * H, slots=8)
    a.add(T0 + 5 * H, 10.0)
    a.add(T0 + 2 * H, 20.0)  # late but inside the window
    assert a.summary(T0 + 5 * H).count == 2
    # After the window moves past T0 + 2h, only the 10 remains.
    s = a.summary(T0 + 10 * H)
    assert (s.count, s.volume) == (1, 10.0)
    assert a.late_dropped == 0


def test_trade_older_than_window_is_dropped_and_counted():
    a = SymbolActivity(window_ms=8 * H, slots=8)
    a.add(T0 + 10 * H, 10.0)
    a.add(T0 + 1 * H, 99.0)
    assert a.summary(T0 + 10 * H).count == 1
    assert a.late_dropped == 1


def test_trades_ahead_of_the_callers_clock_still_count():
    a = SymbolActivity()
    a.add(T0 + 3 * H, 7.0)
    assert a.summary(T0).count == 1


def test_window_must_split_into_slots():
    with pytest.raises(ValueError):
        SymbolActivity(window_ms=1000, slots=7)


def test_nbytes_matches_export_and_is_what_the_docs_say():
    assert nbytes(8) == 23_568
    assert len(SymbolActivity().to_bytes()) == nbytes()
    assert len(SymbolActivity(window_ms=4 * H, slots=4).to_bytes()) == nbytes(4)


def feed(acts: list[SymbolActivity], trades: list[tuple[int, float]], rng: random.Random) -> SymbolActivity:
    whole = SymbolActivity(window_ms=8 * H, slots=8)
    for ts, usd in trades:
        whole.add(ts, usd)
        rng.choice(acts).add(ts, usd)
    return whole


def test_bytes_round_trip():
    rng = random.Random(1)
    a = SymbolActivity(window_ms=8 * H, slots=8)
    for i in range(2000):
        a.add(T0 + i * 10_000, rng.lognormvariate(6, 2))
    b = SymbolActivity.from_bytes(memoryview(bytearray(a.to_bytes())))
    now = T0 + 2000 * 10_000
    assert b.summary(now) == a.summary(now)
    # The copy keeps accumulating into the same current slot.
    a.add(now, 1e6)
    b.add(now, 1e6)
    assert b.to_bytes() == a.to_bytes()


def test_from_bytes_rejects_garbage():
    with pytest.raises(ValueError):
        SymbolActivity.from_bytes(SymbolActivity().to_bytes()[:-1])


def test_merge_rejects_other_layouts():
    with pytest.raises(ValueError):
        SymbolActivity().merge(SymbolActivity(window_ms=4 * H, slots=4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20 * H), st.floats(0.0, 1e8, allow_nan=False)), max_size=80),
       st.integers(0, 2**32))
def test_merge_equals_one_process_seeing_everything(trades, seed):
    # Trades in time order, each seen by one of three processes, as when workers share a symbol.
    trades.sort()
    rng = random.Random(seed)
    parts = [SymbolActivity(window_ms=8 * H, slots=8) for _ in range(3)]
    whole = feed(parts, [(T0 + ts, usd) for ts, usd in trades], rng)
    merged = SymbolActivity.from_bytes(parts[0].to_bytes())
    for p in parts[1:]:
        merged.merge(SymbolActivity.from_bytes(p.to_bytes()))
    now = T0 + 20 * H
    for t in (now, now - 5 * H, now + 3 * H):
        m, w = merged.summary(t), whole.summary(t)
        assert (m.count, m.max, m.size_quantile) == (w.count, w.max, w.size_quantile)
        assert m.volume == pytest.approx(w.volume, rel=1e-9, abs=1e-6)
    assert merged.sketch(now) == whole.sketch(now)


def test_summary_is_a_namedtuple_with_the_documented_fields():
    assert Summary._fields == ("volume", "count", "avg", "max", "size_quantile")
