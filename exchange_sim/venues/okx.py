"""OKX v5 public WebSocket wire: /ws/v5/public (trades, funding-rate, open-interest, mark-price,
liquidation-orders) and /ws/v5/business (candle1m), `{"op":"subscribe","args":[{channel, instId}]}` with one
`{"event":"subscribe"}` acknowledgement per argument, `{"event":"error"}` answers, and text "ping" -> "pong".

Swaps trade in contracts of `ctVal` base units: a market quantity of q steps (10**-qty_dp base) is
q / 10**ct_dp contracts, so every size on the wire is an exact decimal (see `contract_digits`).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson

from ..frames import dec, ws_text
from ..market import K_C, K_H, K_L, K_O, K_QV, K_T, K_V, SymbolState
from ..universe import SymbolSpec, _pow10_str
from .base import VenueHub, venue_universe

if TYPE_CHECKING:
    from ..hub import WsConn
    from ..server import SimProtocol

PUBLIC, BUSINESS = "/ws/v5/public", "/ws/v5/business"
PUBLIC_CHANNELS = ("trades", "funding-rate", "open-interest", "mark-price", "liquidation-orders")
BUSINESS_CHANNELS = ("candle1m",)
# OKX pushes funding-rate every 30-90 s and open-interest every 3 s when it changed; sim seconds here.
FUNDING_PUSH_S = 60
OI_PUSH_S = 3
EIGHT_H = 8 * 3600 * 1000


def inst_id(base: str) -> str:
    return f"{base}-USDT-SWAP"


def contract_digits(st_or_spec: SymbolState | SymbolSpec) -> int:
    """Decimal digits of a contract count: lotSz 0.1 where the base step allows it, else whole contracts."""
    qty_dp = st_or_spec.qty_dp
    return 1 if qty_dp >= 1 else 0


def ct_val(spec: SymbolSpec) -> str:
    return _pow10_str(-(spec.qty_dp - contract_digits(spec)))


def _decoy(name: str, base: str, quote: str, ctype: str, status: str, price: float, dp: int) -> SymbolSpec:
    return SymbolSpec(name, base, quote, ctype, status, dp, 3, price, 0.0, 1600000000000, tradable=False)


def decoys() -> list[SymbolSpec]:
    """SWAP entries a collector must skip: USDC- and coin-margined, suspended, not yet open."""
    return [
        _decoy("BTC-USDC-SWAP", "BTC", "USDC", "PERPETUAL", "TRADING", 65010.0, 1),
        _decoy("BTC-USD-SWAP", "BTC", "USD", "INVERSE", "TRADING", 65005.0, 1),
        _decoy("ETH-USD-SWAP", "ETH", "USD", "INVERSE", "TRADING", 3200.0, 2),
        _decoy("OLDCOIN-USDT-SWAP", "OLDCOIN", "USDT", "PERPETUAL", "SETTLING", 0.5, 5),
        _decoy("NEWCOIN-USDT-SWAP", "NEWCOIN", "USDT", "PERPETUAL", "PENDING_TRADING", 1.0, 4),
    ]


def build(n: int, start_ms: int) -> list[SymbolSpec]:
    return venue_universe(n, start_ms, inst_id, decoys())


def base_of(name: str) -> str:
    return name.split("-")[0]


def candle_row(st: SymbolState, k: list[Any], confirm: bool) -> list[str]:
    """[ts, o, h, l, c, vol (contracts), volCcy (base), volCcyQuote (USDT), confirm], as OKX sends it."""
    pdp, qdp = st.price_dp, st.qty_dp
    return [str(k[K_T]), dec(k[K_O], pdp), dec(k[K_H], pdp), dec(k[K_L], pdp), dec(k[K_C], pdp),
            dec(k[K_V], st.ct_dp), dec(k[K_V], qdp), dec(k[K_QV], pdp + qdp), "1" if confirm else "0"]


def funding_record(st: SymbolState, t: int) -> dict[str, Any]:
    nxt = st.next_funding(t)
    rate = f"{st.funding_rate(t):.10f}"
    mark, index = st.mark_ticks_e8(t)
    premium = f"{(mark * st.tick * 1e8 - index) / index:.10f}" if index else "0"
    return {"formulaType": "withRate", "fundingRate": rate, "fundingTime": str(nxt), "impactValue": "",
            "instId": st.name, "instType": "SWAP", "interestRate": "0", "maxFundingRate": "0.0075",
            "method": "current_period", "minFundingRate": "-0.0075", "nextFundingRate": "",
            "nextFundingTime": str(nxt + EIGHT_H), "premium": premium, "settFundingRate": rate,
            "settState": "settled", "ts": str(t)}


def oi_record(st: SymbolState, t: int) -> dict[str, Any]:
    steps = st.open_interest_steps(t)
    return {"instId": st.name, "instType": "SWAP", "oi": dec(steps, st.ct_dp), "oiCcy": dec(steps, st.qty_dp),
            "oiUsd": dec(steps * st.price, st.price_dp + st.qty_dp), "ts": str(t)}


def liq_detail(st: SymbolState, liq: tuple[Any, ...]) -> dict[str, Any]:
    t, _e, side, q, p, _ap = liq
    # side is the liquidation order's side: a SELL closes a long position.
    return {"bkLoss": "0", "bkPx": dec(p, st.price_dp), "ccy": "", "posSide": "long" if side == "SELL" else "short",
            "side": side.lower(), "sz": dec(q, st.ct_dp), "ts": str(t)}


def conn_id(cid: int) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, f"okx:{cid}").hex[:8]


class OkxHub(VenueHub):
    venue = "okx"
    ws_paths = (PUBLIC, BUSINESS)

    def keys_of(self, st: SymbolState) -> None:
        st.ct_dp = contract_digits(st)
        st.k_trade = f"trades:{st.name}"
        st.k_candle = f"candle1m:{st.name}"
        st.k_fund = f"funding-rate:{st.name}"
        st.k_oi = f"open-interest:{st.name}"
        st.k_mark = f"mark-price:{st.name}"
        st.okx_arg = {c: f'{{"channel":"{c}","instId":"{st.name}"}}' for c in
                      ("trades", "candle1m", "funding-rate", "open-interest", "mark-price")}

    def _frame(self, st: SymbolState, channel: str, data: str) -> bytes:
        return ws_text(f'{{"arg":{st.okx_arg[channel]},"data":[{data}]}}'.encode())

    def trade_frame(self, st: SymbolState, a: int, f: int, l_: int, t: int, e: int, p: int, q: int,
                    m: bool) -> tuple[bytes, dict[str, Any]]:
        side = "sell" if m else "buy"
        px, sz = dec(p, st.price_dp), dec(q, st.ct_dp)
        # One push per taker order and price: `count` fills f..l_, tradeId the LAST fill's id (OKX's docs).
        data = (f'{{"instId":"{st.name}","tradeId":"{l_}","px":"{px}","sz":"{sz}","side":"{side}","ts":"{t}",'
                f'"count":"{l_ - f + 1}","source":"0","seqId":{a}}}')
        return self._frame(st, "trades", data), {"instId": st.name, "tradeId": str(l_), "px": px, "sz": sz,
                                                 "side": side, "ts": str(t), "count": str(l_ - f + 1)}

    def candle_frame(self, st: SymbolState, k: list[Any], e: int, closed: bool) -> bytes:
        return self._frame(st, "candle1m", orjson.dumps(candle_row(st, k, closed)).decode())

    def kline_truth(self, st: SymbolState, k: list[Any]) -> dict[str, Any]:
        return {"instId": st.name, "candle": candle_row(st, k, True)}

    def liq_truth(self, st: SymbolState, liq: tuple[Any, ...]) -> dict[str, Any]:
        return {"instId": st.name, **liq_detail(st, liq)}

    def send_liquidation(self, st: SymbolState, liq: tuple[Any, ...]) -> None:
        conns = self.subs.get("liquidation-orders:SWAP")
        if conns:
            body = orjson.dumps({"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [{
                "details": [liq_detail(st, liq)], "instFamily": st.name[:-5], "instId": st.name,
                "instType": "SWAP", "uly": st.name[:-5]}]})
            self._send("liquidation-orders:SWAP", conns, ws_text(body))

    def on_mark_tick(self, t_ms: int, three_s: bool) -> None:
        sec = t_ms // 1000
        fund, oi = sec % FUNDING_PUSH_S == 0, sec % OI_PUSH_S == 0
        subs = self.subs
        for st in self.mkt.states:
            if not st.trading:
                continue
            st.n_mark1s += 1
            c = subs.get(st.k_mark)
            if c:
                mark, _ = st.mark_ticks_e8(t_ms)
                self._send(st.k_mark, c, self._frame(st, "mark-price", (
                    f'{{"instType":"SWAP","instId":"{st.name}","markPx":"{dec(mark, st.price_dp)}","ts":"{t_ms}"}}')))
            # The truth keeps what was sent: records of symbols nobody subscribed to are not kept.
            c = subs.get(st.k_fund) if fund else None
            if c:
                rec = funding_record(st, t_ms)
                self.record_funding(st, rec, c)
                self._send(st.k_fund, c, self._frame(st, "funding-rate", orjson.dumps(rec).decode()))
            c = subs.get(st.k_oi) if oi else None
            if c:
                rec = oi_record(st, t_ms)
                self.record_oi(st, rec)
                self._send(st.k_oi, c, self._frame(st, "open-interest", orjson.dumps(rec).decode()))

    def bad_frame(self, kind: str) -> bytes:
        if kind == "malformed":
            return ws_text(b'{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-US')
        now = self.sim_now()
        return ws_text((f'{{"arg":{{"channel":"trades","instId":"ZZZZZ-USDT-SWAP"}},"data":[{{"instId":'
                        f'"ZZZZZ-USDT-SWAP","tradeId":"1","px":"1.0","sz":"1","side":"buy","ts":"{now}",'
                        f'"count":"1","source":"0","seqId":1}}]}}').encode())

    # -- subscribe protocol --------------------------------------------------------------------------
    def ws_message(self, proto: SimProtocol, conn: WsConn, payload: bytes) -> None:
        cid = conn_id(conn.id)
        if payload == b"ping":
            proto.send_control(0x1, b"pong")
            return
        try:
            req = orjson.loads(payload)
            op, args = req["op"], req["args"]
            if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
                raise ValueError(op)
        except (ValueError, KeyError, TypeError):
            self._reply(proto, {"event": "error", "code": "60012",
                                "msg": f"Invalid request: {payload.decode('utf-8', 'replace')}", "connId": cid})
            return
        allowed = BUSINESS_CHANNELS if conn.path == BUSINESS else PUBLIC_CHANNELS
        keys = []
        for arg in args:
            key = self._key(arg, allowed)
            if key is None:
                ch = arg.get("channel") if isinstance(arg, dict) else arg
                inst = arg.get("instId", arg.get("instType", "")) if isinstance(arg, dict) else ""
                self._reply(proto, {"event": "error", "code": "60018",
                                    "msg": f"Wrong URL or channel:{ch},instId:{inst} doesn't exist. Please use the "
                                           "correct URL, channel and parameters referring to API document.",
                                    "connId": cid})
                continue
            keys.append(key)
            self._reply(proto, {"event": op, "arg": arg, "connId": cid})
        if op == "subscribe":
            self.subscribe(conn, keys)
        else:
            self.unsubscribe(conn, keys)

    def _key(self, arg: object, allowed: tuple[str, ...]) -> str | None:
        if not isinstance(arg, dict) or arg.get("channel") not in allowed:
            return None
        ch = arg["channel"]
        if ch == "liquidation-orders":
            return "liquidation-orders:SWAP" if arg.get("instType") == "SWAP" else None
        st = self.mkt.by_name.get(arg.get("instId", ""))
        return f"{ch}:{st.name}" if st is not None else None

    def _reply(self, proto: SimProtocol, obj: dict[str, Any]) -> None:
        proto.send_control(0x1, orjson.dumps(obj))
