"""Rate limits: per-key row caps and the REST weight budget.

All clocks are passed in as milliseconds (event time for MinInterval, wall time for the others).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Hashable, Mapping

MINUTE_MS = 60_000


class MinInterval:
    """At most one accepted event per key per calendar bucket of `interval_ms` of event time.

    The first event of each bucket (floor(ts / interval)) wins. Chosen over "one per interval
    since the last accepted", which also never exceeds one row per calendar minute but drifts:
    accepted at :59.9, the next is only allowed at :59.9 a minute later, so whole minutes go
    without a row. Buckets give exactly one row per key per minute in which the key had events.
    Events older than the key's last accepted bucket (late, out of order) are rejected.
    """

    __slots__ = ("interval_ms", "_last")

    def __init__(self, interval_ms: int = MINUTE_MS) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be > 0")
        self.interval_ms = interval_ms
        self._last: dict[Hashable, int] = {}

    def accept(self, key: Hashable, ts_ms: int) -> bool:
        bucket = ts_ms // self.interval_ms
        last = self._last.get(key)
        if last is not None and bucket <= last:
            return False
        self._last[key] = bucket
        return True


    def last_accepted_ms(self, key: Hashable) -> int | None:
        """Start (event ms) of the key's last accepted bucket, None if none: what a successor resumes.

        Saved as a time rather than a bucket number so that it still means the same after
        interval_ms changes (SIGHUP) or in a process configured differently.
        """
        last = self._last.get(key)
        return None if last is None else last * self.interval_ms

    def restore(self, key: Hashable, accepted_ms: int) -> None:
        """Continue from last_accepted_ms(): no second event of that bucket (or an older one) is accepted."""
        bucket = accepted_ms // self.interval_ms
        last = self._last.get(key)
        if last is None or bucket > last:
            self._last[key] = bucket


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


class WeightBudget:
    """Token bucket of Binance REST request weight, honouring 429/418 and the server's count.

    Rate = limit_per_min * fraction * share per minute; capacity one minute's worth. A token
    bucket allows a full bucket plus a minute of refill inside one minute, i.e. up to twice the
    rate, so fraction = 0.5 is what guarantees never passing Binance's 2400/min even in that
    worst case (and leaves the usual minute for other tools on the same IP).

    Sharing across processes: every worker uses the same bucket, kept as its fixed-size state
    (to_bytes/from_bytes, STATE.size bytes) in a file (collector.feed.rest_budget), so a 429/418 any
    worker reports pauses all of them. `share` < 1 gives one process a slice of the budget instead.

    Binance counts weight per clock minute, and requests in flight are not in its header yet; so the
    bucket also counts what it granted in the current clock minute, at least share * the server's
    X-MBX-USED-WEIGHT-1M (the whole IP's weight this minute: trusted when it says more is used), and
    grants nothing beyond `capacity` in one minute; once the header reaches the budget, everyone waits
    for the next minute, when Binance's count resets. The tokens themselves are left alone by the
    header, so a new minute starts with what refilled meanwhile. Without this, concurrent requests (two
    workers on one shared budget) could each spend the last tokens the header left and pass the budget.
    """

    # tokens, last refill ms, paused until ms, share, fraction, clock minute, weight granted in it
    STATE = struct.Struct("<ddddddd")

    # Binance USDT-M futures: 2400 weight per minute per IP.
    BINANCE_LIMIT_PER_MIN = 2400
    # 4 h: long enough that an unexplained ban is never retried early; Binance states the end in
    # Retry-After, so this applies only if the header is missing.
    DEFAULT_BAN_MS = 4 * 3_600_000

    def __init__(self, now_ms: float, limit_per_min: float = BINANCE_LIMIT_PER_MIN, fraction: float = 0.5,
                 share: float = 1.0) -> None:
        if not 0 < fraction <= 1 or not 0 <= share <= 1 or limit_per_min <= 0:
            raise ValueError("need limit_per_min > 0, 0 < fraction <= 1 and 0 <= share <= 1")
        self.limit_per_min = limit_per_min
        self.fraction = fraction
        self.share = share
        self.tokens = self.capacity
        self._last = now_ms
        self.paused_until_ms = -math.inf
        self._minute = now_ms // MINUTE_MS
        self._minute_used = 0.0

    @property
    def budget_per_min(self) -> float:
        """The IP-wide weight per minute we allow ourselves (all processes together)."""
        return self.limit_per_min * self.fraction

    @property
    def capacity(self) -> float:
        return self.budget_per_min * self.share

    def _refill(self, now_ms: float) -> None:
        if now_ms > self._last:
            self.tokens = min(self.capacity, self.tokens + (now_ms - self._last) * self.capacity / MINUTE_MS)
            self._last = now_ms

    def _need(self, weight: float, reserve: float = 0.0) -> float:
        # A request heavier than the whole bucket would never fit: let it through on a full
        # bucket and let the tokens go negative, which delays what follows by the excess.
        # `reserve` (a fraction of capacity) must be left over: weight kept for more urgent requests.
        return min(weight + reserve * self.capacity, self.capacity)

    def _minute_room(self, now_ms: float) -> float:
        """Weight still grantable in the current clock minute."""
        minute = now_ms // MINUTE_MS
        if minute > self._minute:
            self._minute, self._minute_used = minute, 0.0
        return self.capacity - self._minute_used

    def try_acquire(self, weight: float, now_ms: float, reserve: float = 0.0) -> bool:
        """Take `weight` if it is there now, leaving `reserve` (a fraction of capacity) untouched."""
        self._refill(now_ms)
        need = self._need(weight, reserve)
        if (now_ms < self.paused_until_ms or self.tokens < need or self.capacity <= 0
                or self._minute_room(now_ms) < need):
            return False
        self.tokens -= weight
        self._minute_used += weight
        return True

    def wait_time(self, weight: float, now_ms: float, reserve: float = 0.0) -> float:
        """Milliseconds until try_acquire(weight, reserve) can succeed (0 = now; inf = share is zero)."""
        self._refill(now_ms)
        if self.capacity <= 0:
            return math.inf
        need = self._need(weight, reserve)
        pause = max(0.0, self.paused_until_ms - now_ms)
        missing = need - self.tokens
        refill = missing * MINUTE_MS / self.capacity if missing > 0 else 0.0
        minute = _next_minute(now_ms) - now_ms if self._minute_room(now_ms) < need else 0.0
        return max(pause, refill, minute)

    def pause_until(self, until_ms: float) -> None:
        self.paused_until_ms = max(self.paused_until_ms, until_ms)

    def on_response(self, status: int, headers: Mapping[str, str], now_ms: float) -> None:
        self._refill(now_ms)
        retry_after = _number(_header(headers, "Retry-After"))  # seconds
        if status == 418:
            self.pause_until(now_ms + (retry_after * 1000 if retry_after is not None else self.DEFAULT_BAN_MS))
            self.tokens = min(self.tokens, 0.0)
        elif status == 429:
            # Without Retry-After, the limit that tripped is most likely the minute's: wait it out.
            self.pause_until(now_ms + retry_after * 1000 if retry_after is not None else _next_minute(now_ms))
            self.tokens = min(self.tokens, 0.0)
        used = _number(_header(headers, "X-MBX-USED-WEIGHT-1M"))
        if used is not None:
            self._minute_room(now_ms)
            self._minute_used = max(self._minute_used, used * self.share)
            if used >= self.budget_per_min:  # the IP's minute is spent (by us or anyone): wait it out
                self.tokens = min(self.tokens, 0.0)
                self.pause_until(_next_minute(now_ms))

    def to_bytes(self) -> bytes:
        return self.STATE.pack(self.tokens, self._last, self.paused_until_ms, self.share, self.fraction,
                               self._minute, self._minute_used)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview,
                   limit_per_min: float = BINANCE_LIMIT_PER_MIN) -> WeightBudget:
        tokens, last, paused, share, fraction, minute, minute_used = cls.STATE.unpack(data)
        self = cls(last, limit_per_min, fraction, share)
        self.tokens, self.paused_until_ms = tokens, paused
        self._minute, self._minute_used = minute, minute_used
        return self


def _next_minute(now_ms: float) -> float:
    return (now_ms // MINUTE_MS + 1) * MINUTE_MS

