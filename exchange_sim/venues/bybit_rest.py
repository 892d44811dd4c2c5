"""Bybit v5 market REST, answered from the simulator's market: instruments-info (cursor pagination), kline,
open-interest, tickers and funding history in `{"retCode":0,"retMsg":"OK","result":..}` envelopes.

Limits: every answer carries X-Bapi-Limit / X-Bapi-Limit-Status / X-Bapi-Limit-Reset-Timestamp for its
endpoint; over the per-endpoint limit the answer is retCode 10006 "Too many visits!", and over the IP's
600 requests per 5 s it is HTTP 403 "access too frequent".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..frames import dec
from ..market import K_T, SymbolState
from ..universe import SymbolSpec
from . import bybit
from .base import WindowLimiter

if TYPE_CHECKING:
    from ..simulator import Simulator

# Requests per IP per second and endpoint (Bybit does not publish these for public market data: 50 keeps a
# well-behaved collector far below, and venue_rest_limit makes it small in tests).
ENDPOINT_LIMIT = 50
IP_LIMIT_PER_5S = 600
STATUS = {"TRADING": "Trading", "SETTLING": "Settling", "PENDING_TRADING": "PreLaunch"}
CTYPE = {"PERPETUAL": "LinearPerpetual", "CURRENT_QUARTER": "LinearFutures"}
INTERVALS = {"1": 60_000}


class BybitError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def envelope(result: dict[str, Any], now_ms: int, code: int = 0, msg: str = "OK") -> bytes:
    return orjson.dumps({"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms})


def error_response(status: int, now_ms: int = 0) -> tuple[int, bytes, dict[str, Any]]:
    if status == 403:
        return 403, b"access too frequent", {"Content-Type": "text/plain"}
    if status in (429, 418):
        return 200, envelope({}, now_ms, 10006, "Too many visits!"), {}
    return status, envelope({}, now_ms, 10016, "Server error."), {}


def instrument(spec: SymbolSpec) -> dict[str, Any]:
    """One linear entry of /v5/market/instruments-info, fields as the docs list them."""
    ctype = CTYPE.get(spec.contract_type, "LinearPerpetual")
    return {"symbol": spec.name, "contractType": ctype, "status": STATUS.get(spec.status, "Closed"),
            "baseCoin": spec.base, "quoteCoin": spec.quote, "launchTime": str(spec.onboard_ms),
            "deliveryTime": str(spec.delivery_ms) if ctype == "LinearFutures" else "0", "deliveryFeeRate": "",
            "priceScale": str(spec.price_dp),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "50.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": spec.tick, "maxPrice": "1999999.00", "tickSize": spec.tick},
            "lotSizeFilter": {"maxOrderQty": "1000000", "minOrderQty": spec.step, "qtyStep": spec.step,
                              "postOnlyMaxOrderQty": "1000000", "maxMktOrderQty": "100000",
                              "minNotionalValue": "5"},
            "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": spec.quote, "copyTrading": "both",
            "upperFundingRate": "0.005", "lowerFundingRate": "-0.005", "isPreListing": False,
            "preListingInfo": None}


class BybitRest:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.market = sim.market
        self.specs = sim.specs
        self.per_endpoint = WindowLimiter(1.0)
        self.per_ip = WindowLimiter(5.0)

    def reset(self) -> None:
        self.per_endpoint.reset()
        self.per_ip.reset()

    def charge(self, peer: str, path: str) -> tuple[int, bytes, dict[str, Any]] | None:
        """None if allowed (headers then come from limit_headers), else the refusal to send."""
        if not self.per_ip.charge(peer, "*", IP_LIMIT_PER_5S)[0]:
            return error_response(403)
        limit = self.sim.cfg.venue_rest_limit or ENDPOINT_LIMIT
        ok, left, reset = self.per_endpoint.charge(peer, path, limit)
        self.last_headers = {"X-Bapi-Limit": str(limit), "X-Bapi-Limit-Status": str(left),
                             "X-Bapi-Limit-Reset-Timestamp": str(int(reset * 1000))}
        if ok:
            return None
        status, body, _ = error_response(429, self.sim.sim_now())
        return status, body, dict(self.last_headers)

    def handle(self, path: str, q: dict[str, str], now_ms: int) -> tuple[int, bytes, dict[str, Any]]:
        hdrs = dict(getattr(self, "last_headers", {}))
        route = ROUTES.get(path)
        if route is None:
            return 404, orjson.dumps({"retCode": 404, "retMsg": "Not Found"}), hdrs
        try:
            if path != "/v5/market/time" and q.get("category") not in ("linear", "inverse", "spot"):
                raise BybitError(10001, "Illegal category")
            return 200, envelope(route(self, q, now_ms), now_ms), hdrs
        except BybitError as e:
            return 200, envelope({}, now_ms, e.code, e.msg), hdrs

    def _symbol(self, q: dict[str, Any]) -> SymbolState:
        st = self.market.by_name.get(q.get("symbol", ""))
        if st is None:
            raise BybitError(10001, "params error: symbol invalid")
        return st

    # -- endpoints -----------------------------------------------------------------------------------
    def instruments_info(self, q: dict[str, Any], now_ms: int) -> dict[str, Any]:
        cat = q["category"]
        if cat == "linear":
            rows = [instrument(s) for s in self.specs]
        elif cat == "inverse":
            rows = [{**instrument(SymbolSpec("BTCUSD", "BTC", "USD", "PERPETUAL", "TRADING", 1, 0, 65000.0, 0.0,
                                             1600000000000, tradable=False)), "contractType": "InversePerpetual",
                     "settleCoin": "BTC"}]
        else:
            rows = [{"symbol": "BTCUSDT", "baseCoin": "BTC", "quoteCoin": "USDT", "status": "Trading",
                     "priceFilter": {"tickSize": "0.01"}, "lotSizeFilter": {"basePrecision": "0.000001"}}]
        if q.get("symbol"):
            rows = [r for r in rows if r["symbol"] == q["symbol"]]
        if q.get("status"):
            rows = [r for r in rows if r["status"] == q["status"]]
        limit = max(1, min(1000, int(q.get("limit") or 500)))
        start = int(q.get("cursor") or 0)
        page = rows[start:start + limit]
        nxt = str(start + limit) if start + limit < len(rows) else ""
        return {"category": cat, "list": page, "nextPageCursor": nxt}

    def kline(self, q: dict[str, Any], now_ms: int) -> dict[str, Any]:
        st = self._symbol(q)
        if q.get("interval") not in INTERVALS:
            raise BybitError(10001, "Invalid period!")
        limit = max(1, min(1000, int(q.get("limit") or 200)))
        start, end = int(q.get("start") or 0), int(q.get("end") or 1 << 62)
        rows = [k for k in list(st.closed["1m"]) + [st.kline] if start <= k[K_T] <= end][-limit:]
        out = []
        for k in reversed(rows):
            d = bybit.kline_data(st, k, True, now_ms)
            out.append([str(d["start"]), d["open"], d["high"], d["low"], d["close"], d["volume"], d["turnover"]])
        return {"symbol": st.name, "category": "linear", "list": out}

    def open_interest(self, q: dict[str, Any], now_ms: int) -> dict[str, Any]:
        st = self._symbol(q)
        step = {"5min": 300_000, "15min": 900_000, "30min": 1_800_000, "1h": 3_600_000}.get(q.get("intervalTime", ""))
        if step is None:
            raise BybitError(10001, "params error: intervalTime invalid")
        limit = max(1, min(200, int(q.get("limit") or 50)))
        t = now_ms - now_ms % step
        rows = [{"openInterest": dec(st.open_interest_steps(t - i * step), st.qty_dp), "timestamp": str(t - i * step)}
                for i in range(limit) if t - i * step >= st.listed_ms]
        return {"symbol": st.name, "category": "linear", "list": rows, "nextPageCursor": ""}

    def tickers(self, q: dict[str, Any], now_ms: int) -> dict[str, Any]:
        hub = self.sim.hub
        assert isinstance(hub, bybit.BybitHub)
        states = [self._symbol(q)] if q.get("symbol") else [s for s in self.market.states if s.trading]
        return {"category": "linear", "list": [hub.snapshot(s, now_ms) for s in states]}

    def funding_history(self, q: dict[str, Any], now_ms: int) -> dict[str, Any]:
        st = self._symbol(q)
        limit = max(1, min(200, int(q.get("limit") or 200)))
        end = int(q.get("endTime") or now_ms)
        period = st.funding_period_ms
        t = end - end % period
        rows: list[dict[str, str]] = []
        while len(rows) < limit and t >= max(st.listed_ms, int(q.get("startTime") or 0)):
            rows.append({"symbol": st.name, "fundingRate": f"{st.funding_rate(t - 1):.6f}",
                         "fundingRateTimestamp": str(t)})
            t -= period
        return {"category": "linear", "list": rows}

    def server_time(self, q: dict[str, Any], now_ms: int) -> dict[str, Any]:
        return {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}


ROUTES = {
    "/v5/market/instruments-info": BybitRest.instruments_info,
    "/v5/market/kline": BybitRest.kline,
    "/v5/market/open-interest": BybitRest.open_interest,
    "/v5/market/tickers": BybitRest.tickers,
    "/v5/market/funding/history": BybitRest.funding_history,
    "/v5/market/time": BybitRest.server_time,
}
