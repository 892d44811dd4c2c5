"""Shared helpers for the simulator tests: HTTP/WS clients, condition waits, the cryptofeed binding."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import websockets
from helpers import wait_for  # noqa: F401 - re-exported for the simulator tests


def http_get(url: str, timeout: float = 30.0) -> tuple[int, dict, object]:
    """(status, headers, decoded JSON body) without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


async def await_for(pred: Callable[[], object | Awaitable[object]], timeout: float, what: str,
                    poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(poll)


async def collect(url: str, n: int, timeout: float = 20.0, pred: Callable[[dict], bool] | None = None) -> list:
    """The first n frames (JSON-decoded, optionally filtered) received on a WebSocket URL."""
    out: list = []
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                raw = await ws.recv()
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = {"_raw": raw}
                if pred is None or pred(msg):
                    out.append(msg)
    return out


def feed_class(rest_url: str, ws_url: str):
    """collector.feed.cryptofeed_feed's bound BinanceFutures when available, else a minimal private stand-in."""
    try:
        from collector.feed.cryptofeed_feed import bind_feed_class
        from collector.feed.endpoints import Endpoints
        return bind_feed_class(Endpoints(rest_url, ws_url))
    except ImportError:
        return _standin(rest_url, ws_url)


def _standin(rest_url: str, ws_url: str):
    from cryptofeed.connection import AsyncConnection, RestEndpoint, Routes, WebsocketEndpoint, WSAsyncConn
    from cryptofeed.exchanges import BinanceFutures

    class LoopbackWS(WSAsyncConn):
        def __init__(self, address, conn_id, subscription=None, **kwargs):
            # Stock WSAsyncConn insists on wss://; the simulator is plain ws:// on loopback.
            self.address = address
            AsyncConnection.__init__(self, f"{conn_id}.ws.{self.conn_count}", subscription=subscription)
            self.ws_kwargs = kwargs

    class LoopbackFutures(BinanceFutures):
        websocket_endpoints = [WebsocketEndpoint(ws_url, options={"compression": None})]
        rest_endpoints = [RestEndpoint(rest_url, routes=Routes(
            "/fapi/v1/exchangeInfo", l2book="/fapi/v1/depth?symbol={}&limit={}",
            open_interest="/fapi/v1/openInterest?symbol={}"))]

        def __init__(self, *args, exchange_symbols=None, channels=None, **kwargs):
            super().__init__(*args, **kwargs)
            self._exchange_symbols, self._init_channels = exchange_symbols, channels

        async def _setup(self):
            await self.load_symbols(conn=self.http_conn, refresh=True)
            self._apply_symbol_mapping()
            known = self.exchange_symbol_mapping
            self._init_symbols = [known[s] for s in self._exchange_symbols if s in known]
            self._build_subscription()

        def connect(self):
            ret = list(self._connect_rest())
            addrs = self._address()
            opts = self.websocket_endpoints[0].options
            for a in [addrs] if isinstance(addrs, str) else addrs:
                ret.append((LoopbackWS(a, self.id, subscription=self.subscription, **opts),
                            self.subscribe, self.message_handler))
            return ret

    return LoopbackFutures


def loopback_feed(cls, rest_url: str, ws_url: str):
    """cryptofeed's stock feed class `cls` (OKX, Bybit) with its REST and WebSocket hosts pointed at the
    simulator: endpoint paths, filters, options, parsers and subscribe code are all the stock ones."""
    from urllib.parse import urlsplit

    from cryptofeed.connection import AsyncConnection, RestEndpoint, WebsocketEndpoint, WSAsyncConn

    class LoopbackWS(WSAsyncConn):
        def __init__(self, address, conn_id, subscription=None, **kwargs):
            # Stock WSAsyncConn insists on wss://; the simulator is plain ws:// on loopback.
            self.address = address
            AsyncConnection.__init__(self, f"{conn_id}.ws.{self.conn_count}", subscription=subscription)
            self.ws_kwargs = kwargs

    ws_eps = [WebsocketEndpoint(ws_url + urlsplit(ep.address).path, instrument_filter=ep.instrument_filter,
                                channel_filter=ep.channel_filter, options=ep.options) for ep in cls.websocket_endpoints]
    rest_eps = [RestEndpoint(rest_url, routes=ep.routes) for ep in cls.rest_endpoints]

    class Loopback(cls):
        websocket_endpoints = ws_eps
        rest_endpoints = rest_eps

        def __init__(self, *args, exchange_symbols=None, channels=None, **kwargs):
            super().__init__(*args, **kwargs)
            self._exchange_symbols, self._init_channels = exchange_symbols, channels

        async def _setup(self):
            await self.load_symbols(conn=self.http_conn, refresh=True)
            self._apply_symbol_mapping()
            known = self.exchange_symbol_mapping
            self._init_symbols = [known[s] for s in self._exchange_symbols if s in known]
            self._build_subscription()

        def connect(self):
            # The stock Feed.connect, minus the per-endpoint connection limit (unset for OKX and Bybit).
            ret = list(self._connect_rest())
            for ep in self.websocket_endpoints:
                temp = {c: [self.exchange_symbol_to_std_symbol(s) for s in syms] for c, syms in self.subscription.items()}
                sub = {c: [self.std_symbol_to_exchange_symbol(s) for s in syms]
                       for c, syms in ep.subscription_filter(temp).items()}
                if sum(map(len, sub.values())):
                    ret.append((LoopbackWS(ep.address, self.id, subscription=sub, **ep.options), self.subscribe,
                                self.message_handler))
            return ret

    return Loopback
