"""What makes an event's values fit to store: the bounds and the one validation of a trade. Pure: no I/O.

Why a module of its own: a live trade (collector.pipeline.router, which inlines these checks, same kinds in
the same order, because a call per trade costs as much as the checks) and a trade repaired over REST
(collector.pipeline.repairs, which calls check_trade) must be judged alike; both modules take the rule from here.
"""

from __future__ import annotations

import math
from typing import Final

from collector.feed.wire import AggTrade

# Event times further than this from the receipt clock are treated as corrupt, not stored. A day covers
# any honest clock skew and the simulator's accelerated clock in tests, and still rejects garbage such as
# seconds sent as milliseconds (1970) or a year 2100 timestamp.
MAX_EVENT_SKEW_MS: Final = 86_400_000
_INF = math.inf


def check_trade(t: AggTrade, receipt: float) -> tuple[float, float] | str:
    """(price, quantity) of a trade fit to store, or the kind of rejection: the one validation of live and
    backfilled trades."""
    try:
        price = float(t.p)
        qty = float(t.q)
    except ValueError:
        return "bad_number"
    if not (0.0 < price < _INF and 0.0 < qty < _INF):  # NaN fails every comparison
        return "non_positive_or_infinite"
    if abs(t.T - receipt * 1000.0) > MAX_EVENT_SKEW_MS:
        return "absurd_timestamp"
    return price, qty
