"""Fault policies that are not a one-shot action: REST misbehaviour and per-frame corruption rates.

One-shot actions (drop now, stall, skip ids, delist) live on the Simulator; what is here is state that
is consulted on every request or frame, with its own seeded RNG so fault runs are repeatable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Binance error bodies for the statuses the simulator can inject.
ERRORS = {
    429: (-1003, "Too many requests; current limit of IP is 2400 requests per minute. "
                 "Please use the websocket for live updates to avoid polling the API."),
    418: (-1003, "Way too many requests; IP banned. Please use the websocket for live updates to avoid bans."),
    500: (-1000, "An unknown error occured while processing the request."),
    503: (-1001, "Internal error; unable to process your request. Please try again."),
}


@dataclass
class RestFault:
    status: int = 0           # 0 = answer normally (maybe slowly)
    remaining: int = 0        # applies to the next N requests ...
    fraction: float = 0.0     # ... or to this fraction of requests while remaining is 0
    delay_s: float = 0.0      # answer after this long (a slow exchange)
    retry_after: int = 30


class FaultPolicy:
    def __init__(self, seed: int, drop_prob_per_s: float = 0.0, malformed_rate: float = 0.0) -> None:
        self.rng = random.Random(f"{seed}:faults")
        self.rest = RestFault()
        self.drop_prob_per_s = drop_prob_per_s
        self.malformed_rate = malformed_rate
        self.malformed_kind = "malformed"

    def rest_fault(self) -> RestFault | None:
        """The fault to apply to this REST request, if any (consumes one of `remaining`)."""
        f = self.rest
        if f.remaining > 0:
            f.remaining -= 1
            return f
        if f.fraction > 0 and self.rng.random() < f.fraction:
            return f
        return None

    def set_rest(self, status: int = 0, count: int = 0, fraction: float = 0.0, delay_s: float = 0.0,
                 retry_after: int = 30) -> None:
        self.rest = RestFault(status, count, fraction, delay_s, retry_after)
