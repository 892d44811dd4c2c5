"""Binance's REST request-weight accounting: per client IP, per wall-clock minute, 429 then 418."""

from __future__ import annotations

import time
from dataclasses import dataclass

# Request weights from Binance's USDT-M docs (per endpoint; some depend on parameters).
WEIGHTS = {
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/openInterest": 1,
    "/fapi/v1/aggTrades": 20,
    "/fapi/v1/time": 1,
    "/fapi/v1/ping": 1,
}


def weight_of(path: str, query: dict[str, str]) -> int:
    if path == "/fapi/v1/ticker/24hr":
        return 1 if query.get("symbol") else 40
    if path == "/fapi/v1/premiumIndex":
        return 1 if query.get("symbol") else 10
    if path == "/fapi/v1/klines":
        try:
            limit = int(query.get("limit", 500))
        except ValueError:
            limit = 500
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    return WEIGHTS.get(path, 1)


@dataclass
class _IpState:
    minute: int = -1
    used: int = 0
    violations: int = 0
    banned_until: float = 0.0


class WeightLimiter:
    def __init__(self, limit: int, ban_after: int, ban_seconds: float, clock=time.time) -> None:
        self.limit = limit
        self.ban_after = ban_after
        self.ban_seconds = ban_seconds
        self.clock = clock
        self.ips: dict[str, _IpState] = {}

    def charge(self, ip: str, weight: int) -> tuple[int, int, int]:
        """Charge a request: (status 200/429/418, weight used this minute, Retry-After seconds)."""
        now = self.clock()
        st = self.ips.setdefault(ip, _IpState())
        minute = int(now // 60)
        if minute != st.minute:
            st.minute, st.used = minute, 0
        if now < st.banned_until:
            return 418, st.used, int(st.banned_until - now) + 1
        retry = int(60 - now % 60) + 1
        if st.used + weight > self.limit:
            st.violations += 1
            if st.violations > self.ban_after:
                st.banned_until = now + self.ban_seconds
                st.violations = 0
                return 418, st.used, int(self.ban_seconds)
            return 429, st.used, retry
        st.used += weight
        st.violations = 0
        return 200, st.used, 0

    def reset(self) -> None:
        self.ips.clear()
