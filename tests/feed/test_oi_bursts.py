"""collector.feed.open_interest.PollPositions.burst: a worker polls the symbols due in one slot together.

Driven the way OpenInterestPoll.read drives it (wake at the first due time, poll its burst), on a simulated
clock: never later than a period for any symbol, the same weight per period, and ~OI_BURSTS_PER_PERIOD
wake-ups a period once the first period has aligned the schedule.
"""

from __future__ import annotations

from collections import defaultdict

from collector.feed.open_interest import OI_BURSTS_PER_PERIOD, PollPositions

PERIOD = 240_000  # the default: 0.8 x 300 s
T0 = 1_780_000_000_123  # not on a slot boundary
SYMBOLS = [f"S{i}USDT" for i in range(62)]
REQUEST_MS = 3  # one GET's round trip: the burst's symbols are polled one after the other


def _drive(positions: PollPositions, start_ms: int, until_ms: int) -> tuple[list[int], dict[str, list[int]]]:
    """(wake times, poll times per symbol) of a poller started at `start_ms`, up to `until_ms`."""
    wakes: list[int] = []
    polls: dict[str, list[int]] = defaultdict(list)
    now = start_ms
    while True:
        nxt = positions.next()
        assert nxt is not None
        now = max(now, nxt[1])  # an overdue symbol: at once
        if now >= until_ms:
            return wakes, polls
        wakes.append(now)
        for sym in positions.burst(now):
            positions.polled(sym, now)
            polls[sym].append(now)
            now += REQUEST_MS


def test_after_the_first_period_a_worker_wakes_once_a_slot() -> None:
    wakes, polls = _drive(PollPositions(SYMBOLS, PERIOD, T0), T0, T0 + 10 * PERIOD)
    for k in range(10):  # the fresh spread's first period too
        woke = [w for w in wakes if T0 + k * PERIOD <= w < T0 + (k + 1) * PERIOD]
        # a burst per slot (one more where a slot's first poll lands on the period's boundary); without bursts
        # the poller woke once per symbol: 62 times a period
        assert len(woke) <= OI_BURSTS_PER_PERIOD + 1, (k, len(woke))


def test_no_symbol_waits_longer_than_a_period_and_none_is_polled_more_often() -> None:
    _, polls = _drive(PollPositions(SYMBOLS, PERIOD, T0), T0, T0 + 10 * PERIOD)
    for sym, times in polls.items():
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert max(gaps) <= PERIOD, sym
        # the weight: once per period from the second on (a slot early at most, in the first)
        steady = [t for t in times if t >= T0 + 2 * PERIOD]
        assert len(steady) == 8, (sym, len(steady))


def test_a_successor_catches_up_overdue_symbols_in_bursts() -> None:
    successor = PollPositions(SYMBOLS, PERIOD, T0 + 2 * PERIOD)
    for i, s in enumerate(SYMBOLS):  # the predecessor polled them over its last period, then died
        successor.restore(s, T0 + i * PERIOD // len(SYMBOLS))
    wakes, polls = _drive(successor, T0 + 2 * PERIOD, T0 + 3 * PERIOD)
    assert set(polls) == set(SYMBOLS)
    assert len(wakes) <= OI_BURSTS_PER_PERIOD + 1  # every overdue symbol at once, slot by slot
    assert all(times[0] <= T0 + 2 * PERIOD + len(SYMBOLS) * REQUEST_MS for times in polls.values())


def test_a_failed_poll_is_retried_at_its_retry_time_not_with_the_burst() -> None:
    p = PollPositions(["A", "B"], PERIOD, T0)
    first = p.next()
    assert first is not None
    burst = p.burst(first[1])
    assert burst == ["A"]  # B is due 120 s later: another slot
    for s in burst:
        p.polled(s, first[1])
    p.failed(burst[0], first[1] + 1, 5_000)
    assert p.next() == (burst[0], first[1] + 5_001)
    assert p.burst(first[1] + 5_001) == [burst[0]]  # the other is due a period later
