"""Bybit v5 public linear WebSocket wire: /v5/public/linear with topics publicTrade.<S>, tickers.<S> (one
snapshot on subscribe, then deltas of the changed fields; carries fundingRate, nextFundingTime, markPrice,
indexPrice, openInterest), allLiquidation.<S> and kline.1.<S> (confirm flag); `{"op":"subscribe","args":[..],
"req_id":..}` answered `{"success":..,"ret_msg":..,"conn_id":..,"op":"subscribe"}`; `{"op":"ping"}` -> pong.

Trade ids are UUIDs (no order); each trade also carries `seq`, Bybit's cross sequence: the matching engine's
counter, which every fill of one taker order shares and order book updates advance. The simulator makes it
cross_sequence(aggTrade id): every two consecutive trades share one, and it jumps between them, so a client
that takes `seq` for a trade id loses one of each pair and sees a gap at every other trade.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson

from ..frames import dec, ws_text
from ..market import K_C, K_CT, K_H, K_L, K_O, K_QV, K_T, K_V, SymbolState
from ..universe import SymbolSpec
from .base import VenueHub, venue_universe

if TYPE_CHECKING:
    from ..hub import WsConn
    from ..server import SimProtocol

LINEAR = "/v5/public/linear"
TOPICS = ("publicTrade", "tickers", "allLiquidation", "kline.1")
_NS = uuid.UUID("6ba7b812-9dad-11d1-80b4-00c04fd430c8")


def cross_sequence(agg_id: int) -> int:
    """The `seq` sent with aggTrade `agg_id`: shared by pairs, advancing by 7 (book updates in between)."""
    return 500_000_000_000 + (agg_id // 2) * 7


def symbol(base: str) -> str:
    return f"{base}USDT"


def decoys() -> list[SymbolSpec]:
    """Linear entries a collector must skip: a USDC perpetual, a dated future, closed and pre-launch."""
    def d(name: str, base: str, quote: str, ctype: str, status: str, price: float) -> SymbolSpec:
        return SymbolSpec(name, base, quote, ctype, status, 2, 3, price, 0.0, 1600000000000, tradable=False)
    return [
        d("BTCPERP", "BTC", "USDC", "PERPETUAL", "TRADING", 65010.0),
        d("BTCUSDT-26DEC26", "BTC", "USDT", "CURRENT_QUARTER", "TRADING", 66000.0),
        d("OLDCOINUSDT", "OLDCOIN", "USDT", "PERPETUAL", "SETTLING", 0.5),
        d("NEWCOINUSDT", "NEWCOIN", "USDT", "PERPETUAL", "PENDING_TRADING", 1.0),
    ]


def build(n: int, start_ms: int) -> list[SymbolSpec]:
    return venue_universe(n, start_ms, symbol, decoys())


def base_of(name: str) -> str:
    return name[:-4] if name.endswith("USDT") else name


def kline_data(st: SymbolState, k: list[Any], confirm: bool, ts: int) -> dict[str, Any]:
    pdp, qdp = st.price_dp, st.qty_dp
    return {"start": k[K_T], "end": k[K_CT], "interval": "1", "open": dec(k[K_O], pdp), "close": dec(k[K_C], pdp),
            "high": dec(k[K_H], pdp), "low": dec(k[K_L], pdp), "volume": dec(k[K_V], qdp),
            "turnover": dec(k[K_QV], pdp + qdp), "confirm": confirm, "timestamp": ts}


def liq_data(st: SymbolState, liq: tuple[Any, ...]) -> dict[str, Any]:
    t, _e, side, q, p, _ap = liq
    # "S" is the side of the liquidated position: a SELL liquidation order closes a long ("Buy") position.
    return {"T": t, "s": st.name, "S": "Buy" if side == "SELL" else "Sell", "v": dec(q, st.qty_dp),
            "p": dec(p, st.price_dp)}


def ticker_state(st: SymbolState, t: int) -> dict[str, str]:
    """The fields a tickers push can change second by second (24h statistics come from REST/snapshot)."""
    pdp = st.price_dp
    mark, index = st.mark_ticks_e8(t)
    oi = st.open_interest_steps(t)
    return {"lastPrice": dec(st.price, pdp), "markPrice": dec(mark, pdp), "indexPrice": dec(index, 8),
            "openInterest": dec(oi, st.qty_dp), "openInterestValue": dec(oi * st.price, pdp + st.qty_dp),
            "nextFundingTime": str(st.next_funding(t)), "fundingRate": f"{st.funding_rate(t):.6f}",
            "bid1Price": dec(max(1, st.price - 1), pdp), "bid1Size": "1", "ask1Price": dec(st.price + 1, pdp),
            "ask1Size": "1"}


def conn_id(cid: int) -> str:
    return f"{uuid.uuid5(_NS, f'bybit:{cid}').hex[:20]}-{cid % 100:02d}"


class BybitHub(VenueHub):
    venue = "bybit"
    ws_paths = (LINEAR,)

    def keys_of(self, st: SymbolState) -> None:
        st.k_trade = f"publicTrade.{st.name}"
        st.k_candle = f"kline.1.{st.name}"
        st.k_tick = f"tickers.{st.name}"
        st.k_liq = f"allLiquidation.{st.name}"
        st.by_last = None
        st.by_prev = st.price

    def trade_frame(self, st: SymbolState, a: int, f: int, l_: int, t: int, e: int, p: int, q: int,
                    m: bool) -> tuple[bytes, dict[str, Any]]:
        side = "Sell" if m else "Buy"
        tick = ("PlusTick" if p > st.by_prev else "MinusTick" if p < st.by_prev else "ZeroPlusTick")
        st.by_prev = p
        tid = str(uuid.uuid5(_NS, f"{st.name}:{a}"))
        seq = cross_sequence(a)
        px, v = dec(p, st.price_dp), dec(q, st.qty_dp)
        body = (f'{{"topic":"{st.k_trade}","type":"snapshot","ts":{e},"data":[{{"T":{t},"s":"{st.name}",'
                f'"S":"{side}","v":"{v}","p":"{px}","L":"{tick}","i":"{tid}","BT":false,"RPI":false,"seq":{seq}}}]}}')
        return ws_text(body.encode()), {"s": st.name, "i": tid, "seq": seq, "T": t, "S": side, "v": v, "p": px}

    def candle_frame(self, st: SymbolState, k: list[Any], e: int, closed: bool) -> bytes:
        return ws_text(orjson.dumps({"topic": st.k_candle, "data": [kline_data(st, k, closed, e)], "ts": e,
                                     "type": "snapshot"}))

    def kline_truth(self, st: SymbolState, k: list[Any]) -> dict[str, Any]:
        d = kline_data(st, k, True, k[K_CT] + 1)
        d.pop("timestamp")
        return {"symbol": st.name, **d}

    def liq_truth(self, st: SymbolState, liq: tuple[Any, ...]) -> dict[str, Any]:
        return liq_data(st, liq)

    def send_liquidation(self, st: SymbolState, liq: tuple[Any, ...]) -> None:
        conns = self.subs.get(st.k_liq)
        if conns:
            self._send(st.k_liq, conns, ws_text(orjson.dumps({"topic": st.k_liq, "type": "snapshot", "ts": liq[1],
                                                              "data": [liq_data(st, liq)]})))

    def snapshot(self, st: SymbolState, t: int) -> dict[str, Any]:
        """The full tickers object a new subscriber gets first, 24h statistics included."""
        b = self.sim.rest_binance._ticker(st, t)
        if st.by_last is None:     # subscribed before the first push: later deltas are relative to this
            st.by_last = ticker_state(st, t)
        last = st.by_last
        pct = f"{float(b['priceChangePercent']) / 100:.6f}"
        return {"symbol": st.name, "tickDirection": "ZeroPlusTick", "price24hPcnt": pct, **last,
                "prevPrice24h": b["openPrice"], "highPrice24h": b["highPrice"], "lowPrice24h": b["lowPrice"],
                "prevPrice1h": b["openPrice"], "turnover24h": b["quoteVolume"], "volume24h": b["volume"],
                "preOpenPrice": "", "preQty": "", "curPreListingPhase": ""}

    def _tickers_frame(self, st: SymbolState, kind: str, data: dict[str, Any], t: int) -> bytes:
        return ws_text(orjson.dumps({"topic": st.k_tick, "type": kind, "data": data, "cs": t * 10 + 7, "ts": t}))

    def _record(self, st: SymbolState, data: dict[str, Any], t: int) -> None:
        if "fundingRate" in data:
            nxt = data.get("nextFundingTime") or (st.by_last or {}).get("nextFundingTime", "")
            self.record_funding(st, {"symbol": st.name, "fundingRate": data["fundingRate"], "nextFundingTime": nxt,
                                     "ts": t})
        if "openInterest" in data:
            self.record_oi(st, {"symbol": st.name, "openInterest": data["openInterest"], "ts": t})

    def on_mark_tick(self, t_ms: int, three_s: bool) -> None:
        subs = self.subs
        for st in self.mkt.states:
            if not st.trading:
                continue
            st.n_mark1s += 1
            conns = subs.get(st.k_tick)
            if not conns:
                st.by_last = None     # nobody to send deltas to: the next subscriber's snapshot starts afresh
                continue
            cur = ticker_state(st, t_ms)
            prev = st.by_last
            st.by_last = cur
            delta = {k: v for k, v in cur.items() if prev is None or prev[k] != v}
            if delta:
                self._record(st, delta, t_ms)
                self._send(st.k_tick, conns, self._tickers_frame(st, "delta", {"symbol": st.name, **delta}, t_ms))

    def bad_frame(self, kind: str) -> bytes:
        if kind == "malformed":
            return ws_text(b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":17000000')
        now = self.sim_now()
        return ws_text((f'{{"topic":"publicTrade.ZZZZZUSDT","type":"snapshot","ts":{now},"data":[{{"T":{now},'
                        f'"s":"ZZZZZUSDT","S":"Buy","v":"1","p":"1.0","L":"PlusTick","i":"{_NS}","BT":false,'
                        f'"RPI":false,"seq":1}}]}}').encode())

    # -- subscribe protocol --------------------------------------------------------------------------
    def ws_message(self, proto: SimProtocol, conn: WsConn, payload: bytes) -> None:
        cid = conn_id(conn.id)
        try:
            req = orjson.loads(payload)
            op = req["op"]
        except (ValueError, KeyError, TypeError):
            self._reply(proto, {"success": False, "ret_msg": "error:request not supported", "conn_id": cid,
                                "op": ""})
            return
        rid = {"req_id": req["req_id"]} if "req_id" in req else {}
        if op == "ping":
            self._reply(proto, {"success": True, "ret_msg": "pong", "conn_id": cid, **rid, "op": "ping"})
            return
        args = req.get("args") if isinstance(req.get("args"), list) else []
        if op not in ("subscribe", "unsubscribe"):
            self._reply(proto, {"success": False, "ret_msg": f"error:request not supported,op:{op}",
                                "conn_id": cid, **rid, "op": op})
            return
        good = [a for a in args if self._valid(a)]
        bad = [a for a in args if not self._valid(a)]
        ok = not bad
        msg = "" if ok else f"error:handler not found,topics:{','.join(str(b) for b in bad)}"
        self._reply(proto, {"success": ok, "ret_msg": msg, "conn_id": cid, **rid, "op": op})
        if op == "unsubscribe":
            self.unsubscribe(conn, good)
            return
        self.subscribe(conn, good)
        now = self.sim_now()
        for topic in good:
            if topic.startswith("tickers."):
                st = self.mkt.by_name[topic[8:]]
                snap = self.snapshot(st, now)
                self._record(st, snap, now)
                self._send(topic, [conn], self._tickers_frame(st, "snapshot", snap, now))
        self.flush()

    def _valid(self, topic: object) -> bool:
        if not isinstance(topic, str):
            return False
        kind, _, sym = topic.rpartition(".")
        return kind in TOPICS and sym in self.mkt.by_name and self.mkt.by_name[sym].trading

    def _reply(self, proto: SimProtocol, obj: dict[str, Any]) -> None:
        self.flush()   # answers follow the data already queued for this connection
        proto.send_control(0x1, orjson.dumps(obj))
