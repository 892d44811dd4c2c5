"""Binance USDT-M REST market-data endpoints, answered from the simulator's own state.

Everything a client can backfill from (klines, aggTrades) is served from the very rows that were
streamed, so a collector that repairs a gap over REST ends up with exactly what the truth says.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import orjson

from . import frames
from .intervals import DAY, VALID
from .market import K_C, K_F, K_H, K_L, K_LID, K_N, K_O, K_QV, K_T, K_V, Market, SymbolState
from .universe import SymbolSpec

RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
]
ASSETS = [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"}
          for a in ("USDT", "BTC", "BNB", "ETH", "USDC", "BUSD")]


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def error_body(code: int, msg: str) -> bytes:
    return orjson.dumps({"code": code, "msg": msg})


def symbol_info(spec: SymbolSpec) -> dict:
    """One exchangeInfo symbols[] entry in Binance's field order; PRICE_FILTER first (cryptofeed reads [0])."""
    return {
        "symbol": spec.name, "pair": spec.name.split("_")[0], "contractType": spec.contract_type,
        "deliveryDate": spec.delivery_ms, "onboardDate": spec.onboard_ms, "status": spec.status,
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "baseAsset": spec.base,
        "quoteAsset": spec.quote, "marginAsset": spec.quote, "pricePrecision": spec.price_dp,
        "quantityPrecision": spec.qty_dp, "baseAssetPrecision": 8, "quotePrecision": 8,
        "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05",
        "filters": [
            {"minPrice": spec.tick, "maxPrice": "1000000", "filterType": "PRICE_FILTER", "tickSize": spec.tick},
            {"stepSize": spec.step, "filterType": "LOT_SIZE", "maxQty": "1000000", "minQty": spec.step},
            {"stepSize": spec.step, "filterType": "MARKET_LOT_SIZE", "maxQty": "100000", "minQty": spec.step},
            {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
            {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
            {"notional": "5", "filterType": "MIN_NOTIONAL"},
            {"multiplierDown": "0.9500", "multiplierUp": "1.0500", "multiplierDecimal": "4",
             "filterType": "PERCENT_PRICE"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def _int(q: dict, key: str, default: int | None = None) -> int | None:
    v = q.get(key)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{key}'; legal range is '^[0-9]{{1,20}}$'.") from None


class RestApi:
    def __init__(self, market: Market, specs: list[SymbolSpec]) -> None:
        self.market = market
        self.specs = specs
        self._symbols_json: bytes | None = None

    def invalidate(self) -> None:
        self._symbols_json = None

    def handle(self, path: str, q: dict[str, str], now_ms: int) -> Response:
        route = self.ROUTES.get(path)
        if route is None:
            return Response(404, error_body(-1000, "Not found."))
        try:
            body = route(self, q, now_ms)
        except ApiError as e:
            return Response(e.status, error_body(e.code, e.msg))
        return Response(200, body)

    def _symbol(self, q: dict, required: bool = True) -> SymbolState | None:
        name = q.get("symbol")
        if not name:
            if required:
                raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return None
        st = self.market.by_name.get(name)
        if st is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return st

    # -- endpoints -----------------------------------------------------------------------------------
    def exchange_info(self, q: dict, now_ms: int) -> bytes:
        if self._symbols_json is None:
            self._symbols_json = orjson.dumps([symbol_info(s) for s in self.specs])
        head = orjson.dumps({"timezone": "UTC", "serverTime": now_ms, "futuresType": "U_MARGINED",
                             "rateLimits": RATE_LIMITS, "exchangeFilters": [], "assets": ASSETS})
        return head[:-1] + b',"symbols":' + self._symbols_json + b"}"

    def open_interest(self, q: dict, now_ms: int) -> bytes:
        st = self._symbol(q)
        return orjson.dumps({"openInterest": frames.dec(st.open_interest_steps(now_ms), st.qty_dp),
                             "symbol": st.name, "time": now_ms})

    def premium_index(self, q: dict, now_ms: int) -> bytes:
        def one(st: SymbolState) -> dict:
            p, i, est, r, nxt = frames.mark_values(st, now_ms)
            return {"symbol": st.name, "markPrice": p, "indexPrice": i, "estimatedSettlePrice": est,
                    "lastFundingRate": r, "interestRate": "0.00010000", "nextFundingTime": nxt, "time": now_ms}
        st = self._symbol(q, required=False)
        if st is not None:
            return orjson.dumps(one(st))
        return orjson.dumps([one(s) for s in self.market.states if s.trading])

    def ticker_24hr(self, q: dict, now_ms: int) -> bytes:
        st = self._symbol(q, required=False)
        if st is not None:
            return orjson.dumps(self._ticker(st, now_ms))
        return orjson.dumps([self._ticker(s, now_ms) for s in self.market.states if s.trading])

    def _ticker(self, st: SymbolState, now_ms: int) -> dict:
        # Hourly resolution of the rolling window when 1h klines are tracked: cheap for all symbols at once.
        iv = "1h" if "1h" in st.closed else "1m"
        since = now_ms - DAY
        rows = [k for k in st.closed[iv] if k[K_T] >= since - (0 if iv == "1m" else 3_600_000)]
        rows.append(self.market.open_kline(st, iv))
        traded = [k for k in rows if k[K_N]]
        o = traded[0][K_O] if traded else rows[-1][K_C]
        last = rows[-1][K_C]
        hi = max((k[K_H] for k in traded), default=last)
        lo = min((k[K_L] for k in traded), default=last)
        vol = sum(k[K_V] for k in rows)
        qv = sum(k[K_QV] for k in rows)
        n = sum(k[K_N] for k in rows)
        pdp, qdp = st.price_dp, st.qty_dp
        change = last - o
        return {
            "symbol": st.name, "priceChange": frames.dec(change, pdp) if change >= 0 else "-" + frames.dec(-change, pdp),
            "priceChangePercent": f"{(change / o * 100) if o else 0:.3f}",
            "weightedAvgPrice": frames.dec(qv // vol if vol else last, pdp),
            "lastPrice": frames.dec(last, pdp), "lastQty": frames.dec(st.last_qty, qdp),
            "openPrice": frames.dec(o, pdp), "highPrice": frames.dec(hi, pdp), "lowPrice": frames.dec(lo, pdp),
            "volume": frames.dec(vol, qdp), "quoteVolume": frames.dec(qv, pdp + qdp),
            "openTime": max(since, rows[0][K_T]), "closeTime": now_ms,
            "firstId": traded[0][K_F] if traded else -1, "lastId": traded[-1][K_LID] if traded else -1,
            "count": n,
        }

    def klines(self, q: dict, now_ms: int) -> bytes:
        st = self._symbol(q)
        iv = q.get("interval", "")
        if iv not in VALID or iv not in (("1m",) + st.intervals):
            raise ApiError(400, -1120, "Invalid interval.")
        limit = max(1, min(1500, _int(q, "limit", 500)))
        start, end = _int(q, "startTime"), _int(q, "endTime")
        rows = list(st.closed[iv])
        cur = self.market.open_kline(st, iv)
        if not rows or rows[-1][K_T] != cur[K_T]:
            rows.append(cur)
        if start is not None:
            rows = rows[bisect.bisect_left([k[K_T] for k in rows], start):]
        if end is not None:
            rows = [k for k in rows if k[K_T] <= end]
        rows = rows[:limit] if start is not None else rows[-limit:]
        return orjson.dumps([frames.kline_row(st, k) for k in rows])

    def agg_trades(self, q: dict, now_ms: int) -> bytes:
        st = self._symbol(q)
        limit = max(1, min(1000, _int(q, "limit", 500)))
        from_id, start, end = _int(q, "fromId"), _int(q, "startTime"), _int(q, "endTime")
        hist = st.trades
        if from_id is not None:
            # aggTrade ids are consecutive in the history (skipped ones included), so index directly.
            first = hist[0][0] if hist else 0
            i = max(0, from_id - first)
            rows = [hist[j] for j in range(i, min(len(hist), i + limit))]
        elif start is not None or end is not None:
            lo = start if start is not None else 0
            hi = end if end is not None else 1 << 62
            rows = [r for r in hist if lo <= r[5] <= hi][:limit]
        else:
            n = len(hist)
            rows = [hist[j] for j in range(max(0, n - limit), n)]
        pdp, qdp = st.price_dp, st.qty_dp
        return orjson.dumps([{"a": a, "p": frames.dec(p, pdp), "q": frames.dec(qt, qdp), "f": f, "l": last,
                              "T": t, "m": m} for a, p, qt, f, last, t, m in rows])

    def time(self, q: dict, now_ms: int) -> bytes:
        return orjson.dumps({"serverTime": now_ms})

    def ping(self, q: dict, now_ms: int) -> bytes:
        return b"{}"

    ROUTES = {
        "/fapi/v1/exchangeInfo": exchange_info,
        "/fapi/v1/openInterest": open_interest,
        "/fapi/v1/premiumIndex": premium_index,
        "/fapi/v1/ticker/24hr": ticker_24hr,
        "/fapi/v1/klines": klines,
        "/fapi/v1/aggTrades": agg_trades,
        "/fapi/v1/time": time,
        "/fapi/v1/ping": ping,
    }
