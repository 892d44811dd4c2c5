"""OKX v5 public REST, answered from the simulator's market: instruments, candles, trade history, open
interest, funding, tickers and liquidation history, `{"code":"0","msg":"","data":[...]}` envelopes, and per-IP limits per
endpoint over 2-second windows answered with HTTP 429 `{"msg":"Too Many Requests","code":"50011"}`.

Candles and trades are served from the very rows that were streamed (trades: the history the Binance
aggTrades endpoint serves, tradeId = its id), so a REST repair equals the truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..frames import dec
from ..market import K_T, SymbolState
from ..universe import SymbolSpec
from . import okx
from .base import WindowLimiter

if TYPE_CHECKING:
    from ..simulator import Simulator

# Requests per IP per 2 s, from each endpoint's "Rate Limit" line in the OKX v5 docs.
LIMITS = {
    "/api/v5/public/instruments": 20, "/api/v5/public/underlying": 20, "/api/v5/market/candles": 40,
    "/api/v5/market/history-candles": 20, "/api/v5/market/history-trades": 20, "/api/v5/public/open-interest": 20, "/api/v5/public/funding-rate": 20,
    "/api/v5/market/tickers": 20, "/api/v5/market/ticker": 20, "/api/v5/public/liquidation-orders": 40,
    "/api/v5/public/time": 10,
}
STATE = {"TRADING": "live", "SETTLING": "suspend", "PENDING_TRADING": "preopen"}
ERRORS = {429: ("50011", "Too Many Requests"), 418: ("50011", "Too Many Requests"),
          500: ("50001", "Service temporarily unavailable. Please try again later."),
          503: ("50001", "Service temporarily unavailable. Please try again later.")}


class OkxError(Exception):
    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def envelope(data: list[Any], code: str = "0", msg: str = "") -> bytes:
    return orjson.dumps({"code": code, "data": data, "msg": msg})


def error_response(status: int) -> tuple[int, bytes, dict[str, Any]]:
    code, msg = ERRORS.get(status, ERRORS[500])
    return status, orjson.dumps({"code": code, "msg": msg, "data": []}), {}


def instrument(spec: SymbolSpec) -> dict[str, Any]:
    """One SWAP entry of /api/v5/public/instruments, fields as the docs list them."""
    linear = spec.quote != "USD"
    settle = spec.quote if linear else spec.base
    ct_dp = okx.contract_digits(spec)
    lot = "1" if ct_dp == 0 else "0.1"
    return {"alias": "", "baseCcy": "", "category": "1", "ctMult": "1", "ctType": "linear" if linear else "inverse",
            "ctVal": okx.ct_val(spec) if linear else "100", "ctValCcy": spec.base if linear else "USD",
            "expTime": "", "instFamily": f"{spec.base}-{spec.quote}", "instId": spec.name, "instType": "SWAP",
            "lever": "50", "listTime": str(spec.onboard_ms), "lotSz": lot, "maxIcebergSz": "100000000",
            "maxLmtAmt": "20000000", "maxLmtSz": "100000000", "maxMktAmt": "", "maxMktSz": "10000",
            "maxStopSz": "10000", "maxTriggerSz": "100000000", "maxTwapSz": "100000000", "minSz": lot,
            "optType": "", "quoteCcy": "", "settleCcy": settle, "state": STATE.get(spec.status, "suspend"),
            "stk": "", "tickSz": spec.tick, "uly": f"{spec.base}-{spec.quote}"}


class OkxRest:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.market = sim.market
        self.specs = sim.specs
        self.limiter = WindowLimiter(2.0)

    def reset(self) -> None:
        self.limiter.reset()

    def charge(self, peer: str, path: str) -> tuple[int, bytes, dict[str, Any]] | None:
        limit = self.sim.cfg.venue_rest_limit or LIMITS.get(path, 20)
        ok, _, _ = self.limiter.charge(peer, path, limit)
        return None if ok else error_response(429)

    def handle(self, path: str, q: dict[str, str], now_ms: int) -> tuple[int, bytes, dict[str, Any]]:
        route = ROUTES.get(path)
        if route is None:
            return 404, orjson.dumps({"msg": "Not Found", "code": "404"}), {}
        try:
            return 200, envelope(route(self, q, now_ms)), {}
        except OkxError as e:
            return e.status, envelope([], e.code, e.msg), {}

    def _inst(self, q: dict[str, Any]) -> SymbolState:
        st = self._inst_opt(q)
        if st is None:
            raise OkxError(400, "50014", "Parameter instId can not be empty.")
        return st

    def _inst_opt(self, q: dict[str, Any]) -> SymbolState | None:
        name = q.get("instId")
        if not name:
            return None
        st = self.market.by_name.get(name)
        if st is None:
            raise OkxError(200, "51001", "Instrument ID does not exist.")
        return st

    # -- endpoints -----------------------------------------------------------------------------------
    def instruments(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        kind = q.get("instType")
        if kind == "SWAP":
            return [instrument(s) for s in self.specs if q.get("instId") in (None, s.name)]
        if kind == "SPOT":
            return [{"instType": "SPOT", "instId": f"{b}-USDT", "baseCcy": b, "quoteCcy": "USDT", "settleCcy": "",
                     "ctVal": "", "ctValCcy": "", "lotSz": "0.00000001", "tickSz": "0.1", "state": "live"}
                    for b in ("BTC", "ETH")]
        if kind == "FUTURES":
            return [{"instType": "FUTURES", "instId": "BTC-USDT-261225", "uly": "BTC-USDT", "settleCcy": "USDT",
                     "ctVal": "0.01", "ctValCcy": "BTC", "lotSz": "0.1", "tickSz": "0.1", "state": "live",
                     "expTime": "1798185600000"}]
        if kind == "OPTION":
            return []
        raise OkxError(400, "50014", "Parameter instType can not be empty.")

    def underlying(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        return [["BTC-USD", "ETH-USD"]]

    def candles(self, q: dict[str, Any], now_ms: int, cap: int = 300) -> list[Any]:
        st = self._inst(q)
        if q.get("bar", "1m") != "1m":
            raise OkxError(400, "51000", "Parameter bar error")
        limit = max(1, min(cap, int(q.get("limit") or 100)))
        after, before = int(q.get("after") or 0), int(q.get("before") or 0)
        rows = list(st.closed["1m"])
        if cap == 300:      # /candles also carries the forming candle (confirm "0")
            rows.append(st.kline)
        rows = [k for k in rows if (not after or k[K_T] < after) and (not before or k[K_T] > before)]
        rows = rows[-limit:] if not before or after else rows[:limit]
        return [okx.candle_row(st, k, k is not st.kline) for k in reversed(rows)]

    def history_candles(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        return self.candles(q, now_ms, cap=100)

    def history_trades(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        """Fills newest first from the streamed history: each push of `count` fills (tradeId = the last) is
        served as its fills, ids f..l, sizes splitting the push's (the first fills qty // count lots, the
        last the rest), as OKX's REST serves individual trades. type 1 (default): `after`/`before` are
        tradeIds (older than / newer than, exclusive); type 2: `after` is a ts and `before` is not
        supported. With both cursors, the newest `limit` (at most 100) of the window between them."""
        st = self._inst(q)
        kind = q.get("type") or "1"
        if kind not in ("1", "2"):
            raise OkxError(400, "51000", "Parameter type error")
        limit = max(1, min(100, int(q.get("limit") or 100)))
        after, before = int(q.get("after") or 0), int(q.get("before") or 0)
        out: list[dict[str, Any]] = []
        pdp = st.price_dp
        for _a, p, qty, f, last, t, m in reversed(st.trades):  # trade tuples: (a, price, qty, f, last, t, m)
            if kind == "2" and after and t >= after:
                continue
            if kind == "1" and before and last <= before:
                break
            n = last - f + 1
            each = qty // n
            for tid in range(last, f - 1, -1):
                if kind == "1" and ((after and tid >= after) or (before and tid <= before)):
                    continue
                size = qty - each * (n - 1) if tid == last else each
                out.append({"instId": st.name, "side": "sell" if m else "buy", "sz": dec(size, st.ct_dp),
                            "px": dec(p, pdp), "source": "0", "tradeId": str(tid), "ts": str(t)})
                if len(out) == limit:
                    return out
        return out

    def open_interest(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        if q.get("instType") != "SWAP":
            raise OkxError(400, "50014", "Parameter instType can not be empty.")
        st = self._inst_opt(q)
        states = [st] if st is not None else [s for s in self.market.states if s.trading]
        return [okx.oi_record(s, now_ms) for s in states]

    def funding_rate(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        st = self._inst(q)
        return [okx.funding_record(st, now_ms)]

    def _ticker(self, st: SymbolState, now_ms: int) -> dict[str, Any]:
        t = self.sim.rest_binance._ticker(st, now_ms)
        pdp = st.price_dp
        last = st.price
        return {"instType": "SWAP", "instId": st.name, "last": dec(last, pdp), "lastSz": dec(st.last_qty, st.ct_dp),
                "askPx": dec(last + 1, pdp), "askSz": "1", "bidPx": dec(max(1, last - 1), pdp), "bidSz": "1",
                "open24h": t["openPrice"], "high24h": t["highPrice"], "low24h": t["lowPrice"],
                "volCcy24h": t["volume"], "vol24h": t["volume"], "sodUtc0": t["openPrice"],
                "sodUtc8": t["openPrice"], "ts": str(now_ms)}

    def tickers(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        if q.get("instType") != "SWAP":
            raise OkxError(400, "50014", "Parameter instType can not be empty.")
        return [self._ticker(s, now_ms) for s in self.market.states if s.trading]

    def ticker(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        return [self._ticker(self._inst(q), now_ms)]

    def liquidation_orders(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        if q.get("instType") != "SWAP":
            raise OkxError(400, "50014", "Parameter instType can not be empty.")
        st = self.market.by_name.get(f"{q.get('uly', '')}-SWAP")
        if st is None or q.get("state", "filled") != "filled":
            return []
        limit = max(1, min(100, int(q.get("limit") or 100)))
        details = [okx.liq_detail(st, liq) for liq in reversed(st.liqs)][:limit]
        uly = st.name[:-5]
        return [{"details": details, "instFamily": uly, "instId": st.name, "instType": "SWAP", "totalLoss": "0",
                 "uly": uly}]

    def time(self, q: dict[str, Any], now_ms: int) -> list[Any]:
        return [{"ts": str(now_ms)}]


ROUTES = {
    "/api/v5/public/instruments": OkxRest.instruments,
    "/api/v5/public/underlying": OkxRest.underlying,
    "/api/v5/market/candles": OkxRest.candles,
    "/api/v5/market/history-candles": OkxRest.history_candles,
    "/api/v5/market/history-trades": OkxRest.history_trades,
    "/api/v5/public/open-interest": OkxRest.open_interest,
    "/api/v5/public/funding-rate": OkxRest.funding_rate,
    "/api/v5/market/tickers": OkxRest.tickers,
    "/api/v5/market/ticker": OkxRest.ticker,
    "/api/v5/public/liquidation-orders": OkxRest.liquidation_orders,
    "/api/v5/public/time": OkxRest.time,
}
