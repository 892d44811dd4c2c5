"""cryptofeed's feed classes as the collector runs them: bound to the configured endpoints, tolerant of bad
frames, their connections run as SupervisedConnections. With collector.feed.cryptofeed_adapter (the
connections), the only code that knows cryptofeed's internals; that module says why.

Why apart from the connections: a feed class is cryptofeed's Feed and Exchange (exchangeInfo, the symbol
mapping, subscriptions), another part of cryptofeed with hooks of its own; the OKX and Bybit feeds
(collector.feed.venue_feed) use the connection layer without any feed class. A venue is added as a
`Collector<Venue>(CollectorFeed, <cryptofeed's venue class>)` and a `bind_feed_class` branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from cryptofeed.connection import AsyncConnection, RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.exchanges.binance_futures import BinanceFutures

from collector.feed.cryptofeed_adapter import (
    SharedHTTPConnection,
    SupervisedConnection,
    WSConnection,
    ws_connection_class,
)
from collector.feed.endpoints import Endpoints
from collector.feed.events import FrameErrors
from collector.feed.rest_budget import WeightGate
from collector.feed.rest_client import RestClient

log = logging.getLogger("collector.feed.cryptofeed_adapter")  # its lines keep the name they had before the split
# GET /fapi/v1/exchangeInfo's request weight (Binance USDT-M futures documentation).
EXCHANGE_INFO_WEIGHT = 1


class CollectorFeed:
    """Mixin over a cryptofeed feed class: SupervisedConnections, tolerant of bad frames, one REST client.

    Subclasses replace `handle_frame`; a frame that raises is counted in `frame_errors` and skipped,
    so one bad frame never costs the hundreds of streams sharing its connection. `rest` is the process's
    RestClient (its owner closes it); without one the feed makes its own and closes it when it stops.
    """

    # Bound per class by bind_feed_class(), with websocket_endpoints and rest_endpoints.
    ws_connection_class: type[AsyncConnection]

    def __init__(self, *args: Any, exchange_symbols: list[str] | None = None,
                 channels: list[str] | None = None, rest: RestClient | None = None, **kwargs: Any) -> None:
        """`exchange_symbols` (e.g. BTCUSDT) with `channels`: resolved against exchangeInfo at start,
        so the caller need not know cryptofeed's normalised names; unknown symbols are logged and left out."""
        kwargs.setdefault("retries", -1)
        base = cast(Any, super())
        self._exchange_symbols = exchange_symbols
        if exchange_symbols is None:
            base.__init__(*args, channels=channels, **kwargs)
        else:
            base.__init__(*args, **kwargs)
            self._init_channels = channels
        self._owns_rest = rest is None
        self.rest = rest if rest is not None else RestClient()
        cast(Any, self).http_conn = SharedHTTPConnection(cast(Any, self).id, self.rest)
        self.frame_errors = FrameErrors()
        self.connections: list[SupervisedConnection] = []
        self.unknown_symbols: list[str] = []

    async def message_handler(self, msg: str, conn: AsyncConnection, timestamp: float) -> None:
        try:
            await self.handle_frame(msg, conn, timestamp)
        except Exception as e:
            self.frame_errors.record(type(e).__name__, msg, conn.uuid, e)

    async def handle_frame(self, msg: str, conn: AsyncConnection, timestamp: float) -> None:
        """cryptofeed's own parsing (Decimal numbers, one object per event) and callbacks."""
        await cast(Any, super()).message_handler(msg, conn, timestamp)

    def stream_lost(self) -> None:
        """A connection carrying liquidations (`<symbol>@forceOrder` streams) ended while the feed runs.
        Nothing to do here: the lean feed (collector.feed.source) tells its sink."""

    def rest_route(self, name: str) -> str:
        """The URL template of a REST route bound by bind_feed_class (e.g. "open_interest")."""
        return cast(str, cast(Any, self).rest_endpoints[0].route(name))

    def connect(self) -> list[tuple[AsyncConnection, Any, Any]]:
        me = cast(Any, self)
        ret = list(me._connect_rest())  # REST pollers: cryptofeed's own, or the lean feed's open interest
        addresses = me._address() if me.subscription else []
        if isinstance(addresses, str):
            addresses = [addresses]
        options = me.websocket_endpoints[0].options
        for address in addresses:
            conn_cls = getattr(self, "ws_connection_class", WSConnection)
            conn = conn_cls(address, me.id, subscription=me.subscription, **options)
            ret.append((conn, me.subscribe, self.message_handler))
        return ret

    def symbols_gate(self) -> WeightGate | None:
        """The REST weight budget exchangeInfo is fetched within (None: none; the lean feed has its workers')."""
        return None

    async def _load_symbols(self, stop_event: asyncio.Event) -> bool:
        """exchangeInfo, within the REST budget: its weight taken first (so a start waits out a pause any worker
        is in), and a 429/418 answer given to the budget, which pauses every worker (the limit is per IP) and
        is waited out here before the next try. Without that, a worker started during a rate limit died on
        the answer and was restarted a second later, asking again while the exchange said to wait.
        Returns False when stopped while waiting."""
        me = cast(Any, self)
        gate = self.symbols_gate()
        while True:
            if gate is not None:
                while not gate.try_acquire(EXCHANGE_INFO_WEIGHT, time.time() * 1000):
                    wait_ms = gate.wait_time(EXCHANGE_INFO_WEIGHT, time.time() * 1000)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop_event.wait(), max(0.05, wait_ms / 1000))
                    if stop_event.is_set():
                        return False
            try:
                # Always re-read exchangeInfo from *this* class's endpoint: cryptofeed caches symbols per
                # exchange id, process-wide, which would leak one endpoint's universe into another's.
                await me.load_symbols(conn=me.http_conn, refresh=True)
                return True
            except aiohttp.ClientResponseError as e:
                if gate is None or e.status not in (418, 429):
                    raise
                gate.on_response(e.status, e.headers or {}, time.time() * 1000)
                log.warning("%s: exchangeInfo answered %d (%s): every worker pauses REST as the exchange asks, then "
                            "this start tries again", me.id, e.status, e.message)

    async def _setup(self) -> None:
        """cryptofeed's own `Feed._run` prepares a feed through `_setup`: a class that runs it (bench/peer.py's
        stock peer runs this feed class on cryptofeed's connections and backends) gets the same preparation.
        Without it, cryptofeed's `_setup` loads the symbols without this class's mapping and subscription, and
        the feed subscribes to nothing."""
        await self._prepare(asyncio.Event())

    async def _prepare(self, stop_event: asyncio.Event) -> bool:
        """exchangeInfo, the symbol mapping and the subscription; False when stopped first."""
        me = cast(Any, self)
        if not await self._load_symbols(stop_event):
            return False
        me._apply_symbol_mapping()
        if self._exchange_symbols is not None:
            known = me.exchange_symbol_mapping
            self.unknown_symbols = [s for s in self._exchange_symbols if s not in known]
            if self.unknown_symbols:
                log.warning("%s: %d symbols are not listed in TRADING by the exchange and are skipped: %s",
                            me.id, len(self.unknown_symbols), ", ".join(self.unknown_symbols[:20]))
            me._init_symbols = [known[s] for s in self._exchange_symbols if s in known]
        me._build_subscription()
        return True

    async def run(self, stop_event: asyncio.Event) -> None:
        try:
            await self._run(stop_event)
        finally:
            if self._owns_rest:
                await self.rest.close()

    async def _run(self, stop_event: asyncio.Event) -> None:
        """Connections only: the collector does its own batching, so cryptofeed's backends are not used."""
        me = cast(Any, self)
        if not await self._prepare(stop_event):
            return
        batch = getattr(self, "handle_batch", None)  # the lean feed's whole-read stand-in for message_handler
        self.connections = [
            SupervisedConnection(conn, sub, handler, stop=stop_event, timeout=me.timeout,
                                 timeout_interval=me.timeout_interval, start_delay=me.start_delay,
                                 batch_handler=batch if handler == self.message_handler else None,
                                 on_lost=self.stream_lost if "@forceOrder" in getattr(conn, "address", "") else None)
            for conn, sub, handler in self.connect()
        ]
        async with asyncio.TaskGroup() as tg:
            for handler in self.connections:
                tg.create_task(handler.run(), name=f"feed.{me.id}.conn.{handler.conn.id}")
            await stop_event.wait()
            for handler in self.connections:
                await cast(Any, handler).request_stop()


class CollectorBinanceFutures(CollectorFeed, BinanceFutures):
    """cryptofeed's BinanceFutures as a CollectorFeed (its own parsing; collector.feed.source is the lean one)."""


def bind_feed_class(endpoints: Endpoints, base: type[CollectorFeed] = CollectorBinanceFutures,
                    ws_client: str = "auto") -> type[Any]:
    """A subclass of `base` (a CollectorBinanceFutures) whose class-level endpoints point at `endpoints`,
    its WebSocket connections made by `ws_client` (see WS_CLIENTS)."""
    ws_options = dict(BinanceFutures.websocket_endpoints[0].options or {})
    return type(
        f"{base.__name__}@{urlsplit(endpoints.ws).netloc}",
        (base,),
        {
            "ws_connection_class": ws_connection_class(ws_client),
            "websocket_endpoints": [WebsocketEndpoint(endpoints.ws, options=ws_options)],
            "rest_endpoints": [RestEndpoint(endpoints.rest, routes=Routes(
                "/fapi/v1/exchangeInfo",
                l2book="/fapi/v1/depth?symbol={}&limit={}",
                open_interest="/fapi/v1/openInterest?symbol={}",
            ))],
        },
    )
