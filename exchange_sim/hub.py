"""Fan-out of market events to WebSocket subscribers, batched into one write per connection per tick.

Implements the market's Sink: each event is rendered once (only if someone subscribed to its stream),
appended to every subscriber's pending list, and flush() writes each connection's list as a single
transport.write. This is what keeps the simulator cheap at 50k frames/s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from . import frames
from .market import Market, SymbolState
from .truth import Truth

MALFORMED = frames.ws_text(b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":17000000')


def _unknown_symbol_frame(now_ms: int) -> bytes:
    return frames.wrap("zzzzzusdt@aggTrade",
                       f'{{"e":"aggTrade","E":{now_ms},"a":1,"s":"ZZZZZUSDT","p":"1.000","q":"1","f":1,'
                       f'"l":1,"T":{now_ms},"m":false}}')


class WsConn:
    """One subscriber connection and what was sent to it (for the ground truth)."""

    def __init__(self, cid: int, transport: asyncio.Transport, path: str, peer: str, streams: list[str],
                 sim_ms: int) -> None:
        self.id = cid
        self.transport = transport
        self.path = path
        self.peer = peer
        self.streams = streams
        self.opened_sim = sim_ms
        self.opened_wall = time.time()
        now = time.monotonic()
        self.last_pong = now
        self.last_ping = now
        self.stalled = False
        self.closed = False
        self.close_reason = ""
        self.closed_sim: int | None = None
        self.out: list[bytes] = []
        self.sent: dict[str, int] = {}       # stream -> events sent (closed klines only for kline streams)
        self.updates: dict[str, int] = {}    # kline stream -> open (x:false) updates sent
        self.frames = 0
        self.bytes = 0

    def record(self) -> dict:
        return {"id": self.id, "path": self.path, "peer": self.peer, "streams": len(self.streams),
                "opened_sim": self.opened_sim, "opened_wall": self.opened_wall, "closed": self.closed,
                "closed_sim": self.closed_sim, "close_reason": self.close_reason, "stalled": self.stalled,
                "frames": self.frames, "bytes": self.bytes, "sent": dict(self.sent),
                "open_kline_updates": dict(self.updates)}


class Hub:
    def __init__(self, truth: Truth, sim_now: Callable[[], int]) -> None:
        self.truth = truth
        self.sim_now = sim_now
        self.market: Market | None = None
        self.subs: dict[str, list[WsConn]] = {}
        self.kline_streams: dict[str, tuple[SymbolState, str]] = {}
        self.conns: dict[int, WsConn] = {}
        self.dirty: set[WsConn] = set()
        self.mark_subs = 0
        self.malformed_rate = 0.0
        self.malformed_kind = "malformed"
        self.rng = None
        self.max_buffer = 64 * 1024 * 1024
        self.on_overflow: Callable[[WsConn], None] | None = None

    # -- subscriptions -------------------------------------------------------------------------------
    def add(self, conn: WsConn, streams: list[str]) -> None:
        self.conns[conn.id] = conn
        for s in streams:
            lst = self.subs.setdefault(s, [])
            if conn not in lst:
                lst.append(conn)
            self._index(s)

    def _index(self, s: str) -> None:
        sym, _, kind = s.partition("@")
        if kind.startswith("kline_") and self.market:
            st = self.market.by_name.get(sym.upper())
            iv = kind[6:]
            if st is not None and iv in self.market.intervals:
                self.kline_streams[s] = (st, iv)

    def remove(self, conn: WsConn) -> None:
        self.conns.pop(conn.id, None)
        self.dirty.discard(conn)
        for s in conn.streams:
            lst = self.subs.get(s)
            if lst and conn in lst:
                lst.remove(conn)
                if not lst:
                    del self.subs[s]
                    self.kline_streams.pop(s, None)

    # -- sending -------------------------------------------------------------------------------------
    def _send(self, stream: str, conns: list[WsConn], frame: bytes, update: bool = False) -> None:
        for c in conns:
            if c.stalled:
                continue
            c.out.append(frame)
            if update:
                c.updates[stream] = c.updates.get(stream, 0) + 1
            else:
                c.sent[stream] = c.sent.get(stream, 0) + 1
            self.dirty.add(c)
            if self.malformed_rate and self.rng.random() < self.malformed_rate:
                self.inject(c, self.malformed_kind)

    def inject(self, c: WsConn, kind: str) -> None:
        """Queue one bad frame on c: truncated JSON, or a well-formed frame for a symbol never listed."""
        c.out.append(MALFORMED if kind == "malformed" else _unknown_symbol_frame(self.sim_now()))
        self.truth.injected[kind] = self.truth.injected.get(kind, 0) + 1
        self.dirty.add(c)

    def flush(self) -> None:
        # Swapped out first: on_overflow (a slow consumer cut) removes its connection from `dirty`, which
        # must not change the set being iterated ("Set changed size during iteration").
        dirty, self.dirty = self.dirty, set()
        for c in dirty:
            if c.closed or not c.out:
                c.out.clear()
                continue
            data = b"".join(c.out)
            c.frames += len(c.out)
            c.bytes += len(data)
            c.out.clear()
            c.transport.write(data)
            if c.transport.get_write_buffer_size() > self.max_buffer and self.on_overflow:
                self.on_overflow(c)

    # -- Sink ----------------------------------------------------------------------------------------
    def on_new_symbol(self, st: SymbolState) -> None:
        prepare_state(st)

    def on_trade(self, st: SymbolState, a: int, f: int, l_: int, t: int, e: int, p: int, q: int, m: bool,
                 streamed: bool) -> None:
        if not record_trade(st, a, streamed):
            return
        conns = self.subs.get(st.s_agg)
        if conns:
            self._send(st.s_agg, conns, frames.wrap(st.s_agg, frames.agg_trade(st, a, f, l_, t, e, p, q, m)))

    def on_kline_close(self, st: SymbolState, interval: str, k: list, e: int) -> None:
        st.n_kline[interval] = st.n_kline.get(interval, 0) + 1
        self.truth.klines.append((st, interval, k))
        name = f"{st.lower}@kline_{interval}"
        conns = self.subs.get(name)
        if conns:
            # Binance publishes the closed kline a few ms after the boundary.
            self._send(name, conns, frames.wrap(name, frames.kline(st, interval, k, e + 5, True)))

    def on_liquidation(self, st: SymbolState, liq: tuple) -> None:
        st.n_liq += 1
        self.truth.liquidations.append((st, liq))
        conns = self.subs.get(st.s_liq)
        allc = self.subs.get("!forceOrder@arr")
        if conns or allc:
            data = frames.force_order(st, liq)
            if conns:
                self._send(st.s_liq, conns, frames.wrap(st.s_liq, data))
            if allc:
                self._send("!forceOrder@arr", allc, frames.wrap("!forceOrder@arr", data))

    def on_mark_tick(self, t_ms: int, three_s: bool) -> None:
        states = self.market.states
        subs = self.subs
        for st in states:
            if st.trading:
                st.n_mark1s += 1
                if three_s:
                    st.n_mark += 1
        if not subs:
            return
        arr_names = ["!markPrice@arr@1s"] + (["!markPrice@arr"] if three_s else [])
        arr_conns = [(n, subs[n]) for n in arr_names if n in subs]
        parts = [] if arr_conns else None
        e = t_ms + 1
        for st in states:
            if not st.trading:
                continue
            c1 = subs.get(st.s_mark1)
            c3 = subs.get(st.s_mark) if three_s else None
            if not (c1 or c3 or arr_conns):
                continue
            data = frames.mark_price(st, t_ms, e)
            if c1:
                self._send(st.s_mark1, c1, frames.wrap(st.s_mark1, data))
            if c3:
                self._send(st.s_mark, c3, frames.wrap(st.s_mark, data))
            if parts is not None:
                parts.append(data)
        for name, conns in arr_conns:
            self._send(name, conns, frames.wrap(name, "[" + ",".join(parts) + "]"))

    def push_open_klines(self, now_ms: int) -> None:
        """Open-kline (x:false) updates for every subscribed kline stream whose symbol traded lately."""
        market = self.market
        for name, (st, iv) in self.kline_streams.items():
            if st.kline_dirty and st.trading:
                conns = self.subs.get(name)
                if conns:
                    k = market.open_kline(st, iv)
                    self._send(name, conns, frames.wrap(name, frames.kline(st, iv, k, now_ms, False)), True)
        for st in market.states:
            st.kline_dirty = False


def record_trade(st: SymbolState, a: int, streamed: bool) -> bool:
    """A trade's place in the ground truth, shared by every venue's hub: a skipped one (a fault) extends the
    symbol's skipped id ranges; a streamed one is counted. True when it is to be sent."""
    if not streamed:
        sk = st.skipped
        if sk and sk[-1][1] == a - 1:
            sk[-1][1] = a
        else:
            sk.append([a, a])
        return False
    st.n_trade += 1
    if st.first_a is None:
        st.first_a = a
    st.last_a = a
    return True


def prepare_state(st: SymbolState) -> None:
    """Attach the stream names and truth counters the hub uses on the hot path."""
    st.s_agg = f"{st.lower}@aggTrade"
    st.s_liq = f"{st.lower}@forceOrder"
    st.s_mark = f"{st.lower}@markPrice"
    st.s_mark1 = f"{st.lower}@markPrice@1s"
    st.n_trade = st.n_mark = st.n_mark1s = st.n_liq = 0
    st.n_kline = {}
    st.first_a = st.last_a = None
    st.skipped = []
