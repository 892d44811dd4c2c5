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
import logging
from typing import Any, cast
from urllib.parse import urlsplit

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
from collector.feed.rest_client import RestClient

log = logging.getLogger("collector.feed.cryptofeed_adapter")  # its lines keep the name they had before the split


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

    async def _setup(self) -> None:
        me = cast(Any, self)
        # Always re-read exchangeInfo from *this* class's endpoint: cryptofeed caches symbols per
        # exchange id, process-wide, which would leak one endpoint's universe into another's.
        await me.load_symbols(conn=me.http_conn, refresh=True)
        me._apply_symbol_mapping()
        if self._exchange_symbols is not None:
            known = me.exchange_symbol_mapping
            self.unknown_symbols = [s for s in self._exchange_symbols if s not in known]
            if self.unknown_symbols:
                log.warning("%s: %d symbols are not listed in TRADING by the exchange and are skipped: %s",
                            me.id, len(self.unknown_symbols), ", ".join(self.unknown_symbols[:20]))
            me._init_symbols = [known[s] for s in self._exchange_symbols if s in known]
        me._build_subscription()

    async def run(self, stop_event: asyncio.Event) -> None:
        try:
            await self._run(stop_event)
        finally:
            if self._owns_rest:
                await self.rest.close()

    async def _run(self, stop_event: asyncio.Event) -> None:
        """Connections only: the collector does its own batching, so cryptofeed's backends are not used."""
        me = cast(Any, self)
        await self._setup()
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
