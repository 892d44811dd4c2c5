"""Binance JSON rendering: field names, order and types exactly as recorded from fstream.binance.com.

Built with string formatting from per-symbol pre-rendered pieces instead of json.dumps: at 50k frames/s
the serialiser is the simulator's largest cost, and every value here is a known int or decimal string.
"""

from __future__ import annotations

import struct

from .market import K_C, K_CT, K_F, K_H, K_L, K_LID, K_N, K_O, K_QV, K_T, K_TQV, K_TV, K_V, SymbolState


def dec(n: int, dp: int) -> str:
    """Integer n of 10**-dp units as Binance's fixed-point string ("1.2300" style, never exponent)."""
    s = str(n)
    if not dp:
        return s
    if len(s) <= dp:
        s = "0" * (dp - len(s) + 1) + s
    return s[:-dp] + "." + s[-dp:]


def ws_header(n: int, opcode: int = 0x1) -> bytes:
    """Header of one unmasked, unfragmented server frame (RFC 6455 5.2) with payload length n."""
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n)
    return struct.pack("!BBQ", 0x80 | opcode, 127, n)


def ws_text(payload: bytes) -> bytes:
    return ws_header(len(payload)) + payload


def agg_trade(st: SymbolState, a: int, f: int, last: int, t: int, e: int, p: int, q: int, m: bool) -> str:
    return (f'{{"e":"aggTrade","E":{e},"a":{a},"s":"{st.name}","p":"{dec(p, st.price_dp)}",'
            f'"q":"{dec(q, st.qty_dp)}","f":{f},"l":{last},"T":{t},"m":{"true" if m else "false"}}}')


def kline(st: SymbolState, interval: str, k: list, e: int, closed: bool) -> str:
    pdp, qdp = st.price_dp, st.qty_dp
    return (f'{{"e":"kline","E":{e},"s":"{st.name}","k":{{"t":{k[K_T]},"T":{k[K_CT]},"s":"{st.name}",'
            f'"i":"{interval}","f":{k[K_F]},"L":{k[K_LID]},"o":"{dec(k[K_O], pdp)}","c":"{dec(k[K_C], pdp)}",'
            f'"h":"{dec(k[K_H], pdp)}","l":"{dec(k[K_L], pdp)}","v":"{dec(k[K_V], qdp)}","n":{k[K_N]},'
            f'"x":{"true" if closed else "false"},"q":"{dec(k[K_QV], pdp + qdp)}","V":"{dec(k[K_TV], qdp)}",'
            f'"Q":"{dec(k[K_TQV], pdp + qdp)}","B":"0"}}}}')


def kline_row(st: SymbolState, k: list) -> list:
    """One REST /fapi/v1/klines row."""
    pdp, qdp = st.price_dp, st.qty_dp
    return [k[K_T], dec(k[K_O], pdp), dec(k[K_H], pdp), dec(k[K_L], pdp), dec(k[K_C], pdp), dec(k[K_V], qdp),
            k[K_CT], dec(k[K_QV], pdp + qdp), k[K_N], dec(k[K_TV], qdp), dec(k[K_TQV], pdp + qdp), "0"]


def kline_dict(st: SymbolState, interval: str, k: list) -> dict:
    """A closed kline as the ground truth records it (stream field names)."""
    pdp, qdp = st.price_dp, st.qty_dp
    return {"s": st.name, "i": interval, "t": k[K_T], "T": k[K_CT], "f": k[K_F], "L": k[K_LID],
            "o": dec(k[K_O], pdp), "c": dec(k[K_C], pdp), "h": dec(k[K_H], pdp), "l": dec(k[K_L], pdp),
            "v": dec(k[K_V], qdp), "n": k[K_N], "q": dec(k[K_QV], pdp + qdp), "V": dec(k[K_TV], qdp),
            "Q": dec(k[K_TQV], pdp + qdp)}


def mark_values(st: SymbolState, t: int) -> tuple[str, str, str, str, int]:
    """(mark, index, estimated settle, funding rate, next funding time) as Binance formats them."""
    mark, index = st.mark_ticks_e8(t)
    # Mark prices carry 8 decimals on the wire regardless of the tick size.
    p = dec(mark * 10 ** (8 - st.price_dp), 8) if st.price_dp <= 8 else dec(mark, st.price_dp)
    i = dec(index, 8)
    return p, i, i, f"{st.funding_rate(t):.8f}", st.next_funding(t)


def mark_price(st: SymbolState, t: int, e: int) -> str:
    p, i, est, r, nxt = mark_values(st, t)
    return (f'{{"e":"markPriceUpdate","E":{e},"s":"{st.name}","p":"{p}","i":"{i}","P":"{est}",'
            f'"r":"{r}","T":{nxt}}}')


def force_order(st: SymbolState, liq: tuple) -> str:
    t, e, side, q, p, ap = liq
    qs = dec(q, st.qty_dp)
    return (f'{{"e":"forceOrder","E":{e},"o":{{"s":"{st.name}","S":"{side}","o":"LIMIT","f":"IOC",'
            f'"q":"{qs}","p":"{dec(p, st.price_dp)}","ap":"{dec(ap, st.price_dp)}","X":"FILLED",'
            f'"l":"{qs}","z":"{qs}","T":{t}}}}}')


def liquidation_dict(st: SymbolState, liq: tuple) -> dict:
    t, e, side, q, p, ap = liq
    qs = dec(q, st.qty_dp)
    return {"s": st.name, "E": e, "S": side, "o": "LIMIT", "f": "IOC", "q": qs, "p": dec(p, st.price_dp),
            "ap": dec(ap, st.price_dp), "X": "FILLED", "l": qs, "z": qs, "T": t}


def wrap(stream: str, data: str) -> bytes:
    """A complete combined-stream WebSocket frame."""
    return ws_text(f'{{"stream":"{stream}","data":{data}}}'.encode())
