"""The simulator: clock, market, fan-out, REST, faults and truth wired onto one asyncio server.

`cfg.venue` picks the wire: Binance (frames/hub/rest) or a module of venues/ (OKX, Bybit), all over the
same market model, faults and truth.

All methods must run on the simulator's event loop; runner.py gives thread-safe wrappers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import orjson

from . import control
from .config import SimConfig
from .faults import ERRORS, FaultPolicy
from .hub import Hub, WsConn
from .market import Market
from .ratelimit import WeightLimiter, weight_of
from .replay import ReplaySource
from .rest import RestApi, error_body
from .server import SimProtocol
from .truth import Truth
from .universe import build_universe, new_listing
from .venues import VENUES

LOG = logging.getLogger(__name__)
# Paths Binance serves combined streams on: the legacy one and the 2025 market/public split.
STREAM_PATHS = ("/stream", "/market/stream", "/public/stream")


class Simulator:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        now = int(time.time() * 1000)
        self.start_ms = cfg.start_ms if cfg.start_ms is not None else now - now % 60_000
        self.truth = Truth()
        self.wire = VENUES.get(cfg.venue)
        if self.wire is None:
            self.hub = Hub(self.truth, self.sim_now)
            self.specs = build_universe(cfg.symbols, self.start_ms)
        else:
            self.hub = self.wire.hub(self)
            self.specs = self.wire.build(cfg.symbols, self.start_ms)
        self.market = Market(self.specs, cfg.seed, cfg.rate, self.start_ms, cfg.kline_intervals,
                             cfg.trade_history, cfg.kline_history, self.hub, cfg.funding_period_ms)
        self.hub.market = self.market
        self.hub.max_buffer = cfg.max_buffer_bytes
        self.hub.on_overflow = lambda c: self._proto_of(c).abort("slow consumer: output buffer overflow")
        self.faults = FaultPolicy(cfg.seed, cfg.drop_prob_per_s, cfg.malformed_rate)
        self.hub.rng = self.faults.rng
        self.hub.malformed_rate = cfg.malformed_rate
        self.rest = RestApi(self.market, self.specs)
        # Binance's REST also computes the 24h statistics the other venues' tickers carry.
        self.rest_binance = self.rest
        self.venue_rest = self.wire.rest(self) if self.wire else None
        self.limiter = WeightLimiter(cfg.weight_limit, cfg.ban_after_429s, cfg.ban_seconds)
        self.replay = ReplaySource(cfg.replay, cfg.replay_speed) if cfg.replay else None
        self.protos: dict[int, SimProtocol] = {}
        self._next_id = 1
        self._t0 = 0.0
        self._paused_at: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_push = 0.0
        self._last_tick = 0.0
        self._tasks: set[asyncio.Task] = set()
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        for st in self.market.states:
            self.truth.listings.append({"symbol": st.name, "event": "listed", "sim_ms": self.start_ms})

    # -- clock ---------------------------------------------------------------------------------------
    def sim_now(self) -> int:
        if self._paused_at is not None:
            return self._paused_at
        return self.start_ms + int((time.monotonic() - self._t0) * self.cfg.speed * 1000)

    def pause(self) -> int:
        """Freeze sim time: nothing more is generated or sent, so the truth is stable for comparison."""
        if self._paused_at is None:
            self._tick()
            self.hub.flush()
            self._paused_at = self.sim_now()
        return self._paused_at

    def resume(self) -> None:
        if self._paused_at is not None:
            self._t0 = time.monotonic() - (self._paused_at - self.start_ms) / (self.cfg.speed * 1000)
            self._paused_at = None

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(lambda: SimProtocol(self), self.cfg.host, self.cfg.port,
                                                     reuse_address=True, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._t0 = time.monotonic()
        self._last_tick = self._t0
        if self.replay is None:
            self._schedule()
        self._spawn(self._keepalive())

    async def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
            self._timer = None
        for t in list(self._tasks):
            t.cancel()
        for p in list(self.protos.values()):
            p.close_ws(1001, "server shutting down")
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        if self.cfg.truth_file:
            self.write_truth(self.cfg.truth_file)

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _schedule(self) -> None:
        self._timer = self.loop.call_later(self.cfg.tick_ms / 1000.0, self._on_timer)

    def _on_timer(self) -> None:
        try:
            if self._paused_at is None:
                self._tick()
        except Exception:
            LOG.exception("simulator tick failed")
        self._schedule()

    def _tick(self) -> None:
        now = self.sim_now()
        self.market.advance(now)
        wall = time.monotonic()
        if wall >= self._next_push:
            self._next_push = wall + self.cfg.kline_push_ms / 1000.0
            self.hub.push_open_klines(now)
        self._fault_tick(now, wall - self._last_tick)
        self._last_tick = wall
        self.hub.flush()

    def _fault_tick(self, now: int, dt: float) -> None:
        max_age = self.cfg.max_conn_age_s * 1000
        p = self.faults.drop_prob_per_s
        p_tick = 1 - (1 - p) ** dt if p > 0 else 0.0
        for cid, proto in list(self.protos.items()):
            c = proto.ws
            if not isinstance(c, WsConn):
                continue
            if now - c.opened_sim >= max_age:
                self.truth.fault("conn_24h_cut", now, conn=cid)
                proto.close_ws(1000, "24h connection lifetime reached")
            elif p_tick and self.faults.rng.random() < p_tick:
                self.truth.fault("random_drop", now, conn=cid)
                proto.abort("fault: random drop")

    async def _keepalive(self) -> None:
        # Server pings like Binance, and drops connections whose pong is overdue. OKX and Bybit do not
        # ping: their clients do (text "ping", {"op":"ping"}).
        while self.wire is None:
            interval = min(self.cfg.ping_interval_s, self.cfg.pong_timeout_s) / 4
            await asyncio.sleep(max(0.05, interval))
            wall = time.monotonic()
            for proto in list(self.protos.values()):
                c = proto.ws
                if not isinstance(c, WsConn) or c.closed:
                    continue
                if c.last_ping > c.last_pong and wall - c.last_ping > self.cfg.pong_timeout_s:
                    self.truth.fault("pong_timeout", self.sim_now(), conn=c.id)
                    proto.close_ws(1008, "pong timeout")
                elif wall - c.last_ping >= self.cfg.ping_interval_s:
                    c.last_ping = wall
                    proto.send_control(0x9, b"sim")

    # -- WebSocket hooks (called by SimProtocol) -----------------------------------------------------
    def ws_check(self, path: str, streams: list[str]) -> tuple | None:
        if self.wire is not None:
            return None if path in self.hub.ws_paths else (404, b'{"msg":"Not Found"}', {})
        if path not in STREAM_PATHS:
            return 404, error_body(-1000, "Not found."), {}
        if len(streams) > self.cfg.max_streams:
            return 400, error_body(-1000, f"Too many streams: {len(streams)} > {self.cfg.max_streams}."), {}
        return None

    def ws_opened(self, proto: SimProtocol, path: str, streams: list[str]):
        cid = self._next_id
        self._next_id += 1
        conn = WsConn(cid, proto.transport, path, proto.peer, streams, self.sim_now())
        self.protos[cid] = proto
        if self.replay is not None:
            proto.ws = conn
            self._spawn(self.replay.serve(proto, conn))
            return conn
        self.hub.add(conn, streams)
        return conn

    def ws_closed(self, proto: SimProtocol, reason: str) -> None:
        c = proto.ws
        if c is None or c.closed:
            return
        c.closed = True
        c.close_reason = reason
        c.closed_sim = self.sim_now()
        self.hub.flush()  # nothing more is queued for it; drop its pending list
        self.hub.remove(c)
        self.protos.pop(c.id, None)
        self.truth.closed_conns.append(c.record())

    def ws_message(self, proto: SimProtocol, payload: bytes) -> None:
        if self.wire is not None:
            self.hub.ws_message(proto, proto.ws, payload)
            return
        # Binance's live (un)subscribe requests: {"method":"SUBSCRIBE","params":[...],"id":1}
        try:
            req = json.loads(payload)
            method, rid = req.get("method"), req.get("id")
        except (ValueError, AttributeError):
            proto.send_control(0x1, b'{"error":{"code":3,"msg":"Invalid JSON"}}')
            return
        c = proto.ws
        if method == "SUBSCRIBE":
            new = [s for s in req.get("params", []) if s not in c.streams]
            c.streams.extend(new)
            self.hub.add(c, new)
            result = None
        elif method == "UNSUBSCRIBE":
            gone = set(req.get("params", []))
            self.hub.remove(c)
            c.streams = [s for s in c.streams if s not in gone]
            self.hub.add(c, c.streams)
            result = None
        elif method == "LIST_SUBSCRIPTIONS":
            result = c.streams
        else:
            proto.send_control(0x1, orjson.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": rid}))
            return
        proto.send_control(0x1, orjson.dumps({"result": result, "id": rid}))

    def _proto_of(self, c: WsConn) -> SimProtocol:
        return self.protos[c.id]

    # -- HTTP ----------------------------------------------------------------------------------------
    def handle_http(self, peer: str, method: str, path: str, query: dict, headers: dict):
        if path.startswith("/_sim/"):
            return control.dispatch(self, method, path, query)
        if self.venue_rest is not None:
            return self._venue_http(peer, path, query)
        status, used, retry = self.limiter.charge(peer, weight_of(path, query))
        hdrs = {"X-MBX-USED-WEIGHT-1M": str(used)}
        if status != 200:
            hdrs["Retry-After"] = str(retry)
            return self._count(status, error_body(*ERRORS[status]), hdrs)
        fault = self.faults.rest_fault()
        if fault is not None:
            if fault.status:
                if fault.status in (429, 418):
                    hdrs["Retry-After"] = str(fault.retry_after)
                self.truth.fault("rest_status", self.sim_now(), status=fault.status, path=path)
                resp = (fault.status, error_body(*ERRORS.get(fault.status, ERRORS[500])), hdrs)
                return self._later(resp, fault.delay_s) if fault.delay_s else self._count(*resp)
            if fault.delay_s:
                return self._later(self._serve(path, query, hdrs), fault.delay_s)
        return self._serve(path, query, hdrs)

    def _venue_http(self, peer: str, path: str, query: dict):
        refused = self.venue_rest.charge(peer, path)
        if refused is not None:
            return self._count(*refused)
        fault = self.faults.rest_fault()
        if fault is not None:
            if fault.status:
                self.truth.fault("rest_status", self.sim_now(), status=fault.status, path=path)
                resp = self.wire.error_response(fault.status)
                return self._later(resp, fault.delay_s) if fault.delay_s else self._count(*resp)
            if fault.delay_s:
                return self._later(self._venue_serve(path, query), fault.delay_s)
        return self._venue_serve(path, query)

    def _venue_serve(self, path: str, query: dict) -> tuple:
        return self._count(*self.venue_rest.handle(path, query, self.sim_now()))

    def _serve(self, path: str, query: dict, hdrs: dict) -> tuple:
        resp = self.rest.handle(path, query, self.sim_now())
        return self._count(resp.status, resp.body, {**hdrs, **resp.headers})

    def _count(self, status: int, body: bytes, hdrs: dict) -> tuple:
        self.truth.rest_status[status] = self.truth.rest_status.get(status, 0) + 1
        return status, body, hdrs

    async def _later(self, resp: tuple, delay: float) -> tuple:
        await asyncio.sleep(delay)
        return self._count(*resp) if resp[0] != 200 else resp

    # -- faults and market control (Python API; also behind /_sim/ endpoints) ------------------------
    def ws_conns(self) -> list[WsConn]:
        return [p.ws for p in self.protos.values() if isinstance(p.ws, WsConn)]

    def drop_all(self, reason: str = "fault: drop all") -> int:
        conns = self.ws_conns()
        self.truth.fault("drop_all", self.sim_now(), conns=[c.id for c in conns])
        for c in conns:
            self.protos[c.id].abort(reason)
        return len(conns)

    def drop_after(self, seconds: float) -> None:
        self.loop.call_later(seconds, self.drop_all, "fault: drop after delay")

    def set_drop_probability(self, per_second: float) -> None:
        self.faults.drop_prob_per_s = per_second
        self.truth.fault("drop_probability", self.sim_now(), per_second=per_second)

    def stall(self, conn_id: int | None = None, on: bool = True) -> list[int]:
        ids = []
        for c in self.ws_conns():
            if conn_id is None or c.id == conn_id:
                c.stalled = on
                ids.append(c.id)
        self.truth.fault("stall" if on else "unstall", self.sim_now(), conns=ids)
        return ids

    def inject(self, kind: str = "malformed", conn_id: int | None = None) -> int:
        n = 0
        for c in self.ws_conns():
            if conn_id is None or c.id == conn_id:
                self.hub.inject(c, kind)
                n += 1
        self.truth.fault("inject", self.sim_now(), frame=kind, conns=n)
        self.hub.flush()
        return n

    def set_malformed_rate(self, rate: float, kind: str = "malformed") -> None:
        self.hub.malformed_rate = rate
        self.hub.malformed_kind = kind
        self.truth.fault("malformed_rate", self.sim_now(), rate=rate, frame=kind)

    def skip_ids(self, symbol: str, count: int) -> None:
        """The next `count` aggTrades of `symbol` happen but are not streamed: ids jump on the wire."""
        self.market.by_name[symbol].skip_left += count
        self.truth.fault("skip_ids", self.sim_now(), symbol=symbol, count=count)

    def set_rest_fault(self, status: int = 0, count: int = 0, fraction: float = 0.0, delay_s: float = 0.0,
                       retry_after: int = 30) -> None:
        self.faults.set_rest(status, count, fraction, delay_s, retry_after)
        self.truth.fault("rest_fault", self.sim_now(), status=status, count=count, fraction=fraction,
                         delay_s=delay_s)

    def set_activity(self, symbol: str, factor: float) -> float:
        """Scale a symbol's trade rate (a market regime change: lets a test move the collector's tiers).

        Takes effect from the symbol's next scheduled trade; returns the new rate in trades per sim second.
        """
        st = self.market.by_name[symbol]
        if factor <= 0:
            raise ValueError("factor must be > 0")
        st.rate_ms *= factor
        self.truth.fault("activity", self.sim_now(), symbol=symbol, factor=factor)
        return st.rate_ms * 1000

    def list_symbol(self, name: str, price: float = 1.0) -> None:
        now = self.sim_now()
        spec = new_listing(name, now, price)
        if self.wire is not None:
            spec.base = self.wire.base_of(name)
        self.specs.insert(sum(1 for s in self.specs if s.tradable), spec)
        self.market.add_symbol(spec, now)
        for s in list(self.hub.subs):
            self.hub._index(s)
        self.rest.invalidate()
        self.truth.listings.append({"symbol": name, "event": "listed", "sim_ms": now})

    def delist_symbol(self, name: str) -> None:
        now = self.sim_now()
        self.market.delist(name)
        for s in self.specs:
            if s.name == name:
                s.status = "SETTLING"
        self.rest.invalidate()
        self.truth.listings.append({"symbol": name, "event": "delisted", "sim_ms": now})

    def truth_doc(self, klines: bool = True) -> dict:
        if self.wire is not None:
            return self.hub.truth_doc(self.ws_conns(), self.sim_now(), klines)
        return self.truth.snapshot(self.market.states, self.ws_conns(), self.sim_now(), klines)

    def write_truth(self, path: str) -> None:
        with open(path, "wb") as fp:
            fp.write(orjson.dumps(self.truth_doc()))
