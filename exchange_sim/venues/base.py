"""What the OKX and Bybit wires share: subscription-keyed fan-out of the market's events, rolling-window REST
limits and a value-by-value ground truth.

Binance's wire stays in frames/hub/rest/ratelimit (its bytes are the reference the collector was built on);
a venue here subclasses the same Hub, so batching, stalls, malformed-frame injection and slow-consumer cuts
behave identically, and only the rendering of each event and the subscribe protocol differ.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..hub import Hub, WsConn, prepare_state, record_trade
from ..market import Market, SymbolState
from ..universe import SymbolSpec, build_universe

if TYPE_CHECKING:
    from ..server import SimProtocol
    from ..simulator import Simulator

# Published funding / open-interest values kept per symbol for the truth (1/s pushes: ~25 min).
VALUE_HISTORY = 1500
# Liquidations kept per symbol for REST liquidation history.
LIQ_HISTORY = 100


class WindowLimiter:
    """Requests per client IP and endpoint in a rolling window (OKX: per 2 s, Bybit: per 1 s and per 5 s)."""

    def __init__(self, window_s: float, clock: Any = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self.hits: dict[tuple[str, str], deque[float]] = {}

    def charge(self, ip: str, key: str, limit: int) -> tuple[bool, int, float]:
        """(allowed, remaining in the window, wall time the window frees a slot)."""
        now = self.clock()
        q = self.hits.setdefault((ip, key), deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if len(q) >= limit:
            return False, 0, q[0] + self.window_s
        q.append(now)
        return True, limit - len(q), now

    def reset(self) -> None:
        self.hits.clear()


def venue_universe(n: int, start_ms: int, rename: Any, decoys: list[SymbolSpec]) -> list[SymbolSpec]:
    """Binance's n activity-ranked perpetuals under the venue's names, then the venue's own decoys."""
    specs = [s for s in build_universe(n, start_ms) if s.tradable]
    for s in specs:
        s.name = rename(s.base)
    return specs + decoys


class VenueHub(Hub):
    """A Hub whose subscription keys are the venue's own (topic or channel:instId); subclasses render."""

    venue = ""
    ws_paths: tuple[str, ...] = ()

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim.truth, sim.sim_now)
        self.sim = sim
        self.cfg = sim.cfg
        self.funding: dict[str, deque[dict[str, Any]]] = {}
        self.oi: dict[str, deque[dict[str, Any]]] = {}
        self.trades_sent: list[dict[str, Any]] | None = [] if sim.cfg.truth_trades else None
        self.candle_keys: dict[str, SymbolState] = {}

    @property
    def mkt(self) -> Market:
        assert self.market is not None, "hub used before its market was attached"
        return self.market

    # -- to be provided by each venue ----------------------------------------------------------------
    def keys_of(self, st: SymbolState) -> None:
        raise NotImplementedError

    def trade_frame(self, st: SymbolState, a: int, f: int, l_: int, t: int, e: int, p: int, q: int,
                    m: bool) -> tuple[bytes, dict[str, Any]]:
        raise NotImplementedError

    def candle_frame(self, st: SymbolState, k: list[Any], e: int, closed: bool) -> bytes:
        raise NotImplementedError

    def kline_truth(self, st: SymbolState, k: list[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def liq_truth(self, st: SymbolState, liq: tuple[Any, ...]) -> dict[str, Any]:
        raise NotImplementedError

    def send_liquidation(self, st: SymbolState, liq: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def ws_message(self, proto: SimProtocol, conn: WsConn, payload: bytes) -> None:
        raise NotImplementedError

    def bad_frame(self, kind: str) -> bytes:
        raise NotImplementedError

    # -- Sink ----------------------------------------------------------------------------------------
    def on_new_symbol(self, st: SymbolState) -> None:
        prepare_state(st)
        st.liqs = deque(maxlen=LIQ_HISTORY)
        self.funding[st.name] = deque(maxlen=VALUE_HISTORY)
        self.oi[st.name] = deque(maxlen=VALUE_HISTORY)
        self.keys_of(st)

    def on_trade(self, st: SymbolState, a: int, f: int, l_: int, t: int, e: int, p: int, q: int, m: bool,
                 streamed: bool) -> None:
        if not record_trade(st, a, streamed):
            return
        conns = self.subs.get(st.k_trade)
        if conns:
            frame, record = self.trade_frame(st, a, f, l_, t, e, p, q, m)
            self._send(st.k_trade, conns, frame)
            if self.trades_sent is not None:
                self.trades_sent.append(record)

    def on_kline_close(self, st: SymbolState, interval: str, k: list[Any], e: int) -> None:
        if interval != "1m":
            return
        st.n_kline["1m"] = st.n_kline.get("1m", 0) + 1
        self.truth.klines.append((st, interval, k))
        conns = self.subs.get(st.k_candle)
        if conns:
            self._send(st.k_candle, conns, self.candle_frame(st, k, e + 5, True))

    def on_liquidation(self, st: SymbolState, liq: tuple[Any, ...]) -> None:
        st.n_liq += 1
        self.truth.liquidations.append((st, liq))
        st.liqs.append(liq)
        self.send_liquidation(st, liq)

    def push_open_klines(self, now_ms: int) -> None:
        for key, st in self.candle_keys.items():
            if st.kline_dirty and st.trading:
                conns = self.subs.get(key)
                if conns:
                    self._send(key, conns, self.candle_frame(st, st.kline, now_ms, False), True)
        for st in self.mkt.states:
            st.kline_dirty = False

    def _index(self, s: str) -> None:
        st = self.candle_index.get(s) if self.market else None
        if st is not None:
            self.candle_keys[s] = st

    def remove(self, conn: WsConn) -> None:
        super().remove(conn)
        for s in conn.streams:
            if s not in self.subs:
                self.candle_keys.pop(s, None)

    @property
    def candle_index(self) -> dict[str, SymbolState]:
        return {st.k_candle: st for st in self.mkt.states}

    def inject(self, c: WsConn, kind: str) -> None:
        c.out.append(self.bad_frame(kind))
        self.truth.injected[kind] = self.truth.injected.get(kind, 0) + 1
        self.dirty.add(c)

    # -- subscriptions (called by the venue's ws_message) --------------------------------------------
    def subscribe(self, conn: WsConn, keys: list[str]) -> None:
        new = [k for k in keys if k not in conn.streams]
        conn.streams.extend(new)
        self.add(conn, new)

    def unsubscribe(self, conn: WsConn, keys: list[str]) -> None:
        gone = set(keys)
        self.remove(conn)
        conn.streams = [s for s in conn.streams if s not in gone]
        self.add(conn, conn.streams)

    # -- ground truth --------------------------------------------------------------------------------
    def record_funding(self, st: SymbolState, rec: dict[str, Any], to: list[WsConn] | None = None) -> None:
        """Keep a published funding record for the truth; with `to`, the ids of the connections the push is
        queued on (stalled ones get nothing) as "to", in the truth's copy only (`rec` itself is what is sent).
        Why: a test asking what reached whom cannot tell it from the record's time: a tick due before a
        successor's socket opened can run after it subscribed (a late tick under load) and reach it."""
        st.n_mark += 1
        self.funding[st.name].append(rec if to is None else {**rec, "to": [c.id for c in to if not c.stalled]})

    def record_oi(self, st: SymbolState, rec: dict[str, Any]) -> None:
        self.oi[st.name].append(rec)

    def truth_doc(self, live_conns: list[WsConn], sim_ms: int, klines: bool) -> dict[str, Any]:
        symbols = {}
        for st in self.mkt.states:
            symbols[st.name] = {
                "trading": st.trading, "trades": st.n_trade, "funding": st.n_mark, "liquidations": st.n_liq,
                "candles_closed": st.n_kline.get("1m", 0),
                "trade_ids": {"first": st.first_a, "last": st.last_a, "skipped": [list(r) for r in st.skipped]},
            }
        t = self.truth
        doc = {
            "venue": self.venue, "sim_ms": sim_ms, "symbols": symbols,
            "liquidations": [self.liq_truth(st, liq) for st, liq in t.liquidations],
            "funding": {k: list(v) for k, v in self.funding.items()},
            "open_interest": {k: list(v) for k, v in self.oi.items()},
            "listings": t.listings, "faults": t.faults,
            "rest_status": {str(k): v for k, v in t.rest_status.items()}, "injected": t.injected,
            "connections": [c.record() for c in live_conns] + t.closed_conns,
        }
        if self.trades_sent is not None:
            doc["trades"] = self.trades_sent
        if klines:
            doc["klines"] = [self.kline_truth(st, k) for st, iv, k in t.klines if iv == "1m"]
        return doc
