"""The one module that knows cryptofeed's internals: its connections, bound to our endpoints and hardened.

Why one module: the collector drives cryptofeed below its public surface (private subscription hooks,
ConnectionHandler's constructor and loop, connection counters), which changes between releases. So the pin
is exact, every use of cryptofeed is here (other modules import its names from here), and
tests/feed/test_cryptofeed_internals.py fails when what this module relies on moves.

What changes stock behaviour: configured endpoints (and `ws://`, for the simulator); a bad frame is skipped,
not a reconnect of hundreds of streams; reconnects never give up, at a capped delay; a connection that never
delivers counts as silent; every HTTP request shares the process's RestClient. A venue is added as a
`Collector<Venue>(CollectorFeed, <cryptofeed's venue class>)` and a `bind_feed_class` branch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, cast
from urllib.parse import urlsplit

from cryptofeed.connection import (
    AsyncConnection,
    HTTPAsyncConn,
    HTTPPoll,
    RestEndpoint,
    Routes,
    WebsocketEndpoint,
    WSAsyncConn,
)
from cryptofeed.connection_handler import ConnectionHandler
from cryptofeed.defines import CANDLES, FUNDING, LIQUIDATIONS, TRADES
from cryptofeed.exceptions import ConnectionClosed
from cryptofeed.exchanges.binance_futures import BinanceFutures

from collector.feed.endpoints import Endpoints
from collector.feed.events import FrameErrors
from collector.feed.rest_client import RestClient
from collector.runtime.stopping import sleep_unless_stopped

log = logging.getLogger(__name__)

# Reconnect backoff: start fast (a dropped connection costs market data), cap so that a long outage is
# retried at least every 30 s instead of cryptofeed's unbounded doubling.
RECONNECT_DELAY_INITIAL = 1.0
RECONNECT_DELAY_CAP = 30.0
# A connection lost while back-pressure holds (the keepalive's pong sat unread, or the exchange cut a slow
# reader) is reconnected once reading may resume; this is how often that is checked: short against the
# seconds a pause lasts, negligible in CPU.
BACKPRESSURE_RECONNECT_POLL_S = 0.2
# Which WebSocket client carries the feed: "auto" = picows (collector.feed.websocket) when importable, else the
# websockets-based WSConnection; "picows" insists (ImportError if missing); "websockets" is stock.
WS_CLIENTS = ("auto", "picows", "websockets")


# The cryptofeed release this module is written against (pyproject pins it; the internals test checks it).
CRYPTOFEED_VERSION = "3.0.1"
# A plain function handling every message of one socket read: (messages, connection, receipt time).
BatchHandler = Callable[[Sequence[str | bytes], Any, float], None]


class ConnectionBase(AsyncConnection):
    """A WebSocket connection's base: cryptofeed's counters, raw-data callback and numbering, via methods."""

    def __init__(self, address: str, conn_id: str, subscription: dict[str, list[str]] | None = None) -> None:
        if not address.startswith(("wss://", "ws://")):
            raise ValueError(f"Invalid address, must be a ws(s) address. Provided address is: {address!r}")
        self.address = address
        AsyncConnection.__init__(self, f"{conn_id}.ws.{AsyncConnection.conn_count}", subscription=subscription)

    def session_started(self) -> None:
        """A new session: received/sent restart at zero (the totals keep what came before)."""
        cast(Any, self)._reset_counters()

    def received_at(self, at: float, messages: int = 0) -> None:
        """`messages` arrived at `at` (time.time()); the watchdog counts silence from the newest."""
        me = cast(Any, self)
        me.last_message = at
        me.received += messages

    @property
    def raw_callback(self) -> Any:
        """cryptofeed's raw-data recorder (on_ws_open, on_ws_message, on_ws_send, on_close), or None."""
        return self.raw_data_callback


class WSConnection(ConnectionBase, WSAsyncConn):
    """WSAsyncConn that also accepts `ws://` and counts a connection that never delivers as silent.

    cryptofeed's watchdog only trips when `last_message` is set, so a connection that opens and then
    delivers nothing would be watched forever. Stamping the open time makes silence from the start
    count as silence.
    """

    def __init__(self, address: str, conn_id: str, subscription: dict[str, list[str]] | None = None,
                 **kwargs: object) -> None:
        super().__init__(address, conn_id, subscription)
        self.ws_kwargs = kwargs

    reading_paused = False  # back-pressure: see pause_reading()
    resumed_at = 0.0  # time.time() of the last resume_reading(): the watchdog counts silence from it

    async def _open(self) -> None:
        await cast(Any, super())._open()
        self.received_at(time.time())
        # websockets pauses the transport when its own frame queue is full and resumes it when the queue
        # drains; route its resume through us so that the queue draining cannot undo back-pressure.
        conn = cast(Any, self.conn)  # websockets' ClientConnection; transport and queue are its internals
        transport, frames = conn.transport, conn.recv_messages
        frames.resume = lambda: None if self.reading_paused else transport.resume_reading()
        if self.reading_paused:
            transport.pause_reading()

    def pause_reading(self) -> None:
        """Stop reading the socket (back-pressure: the kernel, then the server, buffer for us) until
        resume_reading(); holds across reconnects. asyncio's pause_reading is idempotent."""
        self.reading_paused = True
        if self.conn is not None and self.is_open:
            cast(Any, self.conn).transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        self.resumed_at = time.time()
        conn = cast(Any, self.conn)
        if conn is not None and self.is_open and not conn.recv_messages.paused:
            conn.transport.resume_reading()


class SupervisedConnection(ConnectionHandler):
    """cryptofeed's ConnectionHandler with unlimited retries and a capped backoff.

    The base class doubles the delay forever and gives up after `retries`; a collector that runs for
    months must keep trying, at a bounded interval, and must still stop promptly when asked.
    """

    def __init__(self, conn: AsyncConnection, subscribe: Callable[[AsyncConnection], Awaitable[None]],
                 handler: Callable[[str, AsyncConnection, float], Awaitable[None]], *, stop: asyncio.Event,
                 timeout: float = 120.0, timeout_interval: float = 30.0, start_delay: float = 0.0,
                 batch_handler: BatchHandler | None = None) -> None:
        # Keywords only: upstream has inserted parameters before (keepalive, keepalive_interval).
        # cryptofeed annotates subscribe and handler as Awaitable; they are the callables it awaits.
        super().__init__(conn=conn, subscribe=cast(Any, subscribe), handler=cast(Any, handler), retries=-1,
                         timeout=timeout, timeout_interval=timeout_interval, log_on_error=False,
                         start_delay=start_delay)
        self._stop = stop
        self._batch_handler = batch_handler

    async def _pause(self, seconds: float) -> None:
        await sleep_unless_stopped(self._stop, seconds)

    async def _watcher(self) -> None:
        """cryptofeed's silence watchdog, except that silence we chose (back-pressure: reading paused, see
        pause_reading on the connection classes) is not a dead connection: it counts from the resume."""
        conn = self.conn
        while conn.is_open and self.running:
            if conn.last_message and not getattr(conn, "reading_paused", False):
                since = max(conn.last_message, getattr(conn, "resumed_at", 0.0))
                if time.time() - since > self.timeout:
                    log.warning("%s: received no messages within timeout, restarting connection", conn.uuid)
                    self._record_watchdog_trip()
                    await conn.close()
                    break
            await asyncio.sleep(self.timeout_interval)

    async def _wait_reading_allowed(self) -> None:
        """Before a (re)connect: while back-pressure holds, a new connection would not be read either."""
        while getattr(self.conn, "reading_paused", False) and self.running and not self._stop.is_set():
            await self._pause(BACKPRESSURE_RECONNECT_POLL_S)

    async def _handler(self, connection: AsyncConnection,
                       handler: Callable[[str, AsyncConnection, float], Awaitable[None]]) -> None:
        """Batched fast path for connections that offer `read_batches()` (collector.feed.websocket).

        cryptofeed's loop resumes an async generator and looks up `last_message` for every message; here
        one resumption hands over every message of a socket read, each handled with that read's receipt
        time; with a `batch_handler` (plain function) the whole read is one call, no coroutine per message.
        The watchdog still sees `last_message`, which the connection stamps on receipt.
        """
        read_batches = getattr(connection, "read_batches", None)
        if read_batches is None:
            await cast(Any, super())._handler(connection, handler)
            return
        batch_handler = self._batch_handler
        try:
            async for timestamp, messages in read_batches():
                if batch_handler is not None:
                    batch_handler(messages, connection, timestamp)
                else:
                    for message in messages:
                        await handler(message, connection, timestamp)
                if not self.running:
                    await cast(Any, connection).close()
                    return
        except Exception:
            if not self.running:
                return
            raise

    async def run(self) -> None:
        delay = RECONNECT_DELAY_INITIAL
        try:
            await self._pause(self.start_delay)
            while self.running and not self._stop.is_set():
                watchdog = None
                await self._wait_reading_allowed()
                try:
                    async with self.conn.connect() as connection:
                        await cast(Any, self.subscribe)(connection)
                        delay = RECONNECT_DELAY_INITIAL
                        if self.timeout != -1:
                            watchdog = asyncio.get_running_loop().create_task(self._watcher())
                        try:
                            await self._handler(connection, cast(Any, self.handler))
                        finally:
                            if watchdog is not None:
                                watchdog.cancel()
                                with suppress(asyncio.CancelledError):
                                    await watchdog
                    if not self.running or self._stop.is_set():
                        break
                    log.warning("%s: connection closed by the server - reconnecting", self.conn.uuid)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # any failure: reconnect, never give up
                    if not self.running or self._stop.is_set():
                        break
                    log.warning("%s: connection failed (%s: %s) - reconnecting in %.1fs",
                                self.conn.uuid, type(e).__name__, e, delay)
                    await self._pause(delay)
                    delay = min(delay * 2, RECONNECT_DELAY_CAP)
        finally:
            with suppress(Exception):
                await cast(Any, self.conn).close()


class _BorrowedSession:
    """cryptofeed's HTTP connection borrowing the RestClient's session (not its own), which it never closes."""

    rest: RestClient
    conn: Any

    async def _open(self) -> None:
        self.conn = self.rest.session
        cast(Any, self)._reset_counters()

    @property
    def is_open(self) -> bool:
        return self.conn is not None and not self.conn.closed

    async def close(self) -> None:
        self.conn = None  # the session is the RestClient's: not closed here


class SharedHTTPConnection(_BorrowedSession, HTTPAsyncConn):
    """The feed's exchangeInfo connection (cryptofeed's `http_conn`) over the shared RestClient."""

    def __init__(self, conn_id: str, rest: RestClient) -> None:
        HTTPAsyncConn.__init__(self, conn_id)
        self.rest = rest


class PolledConnection(_BorrowedSession, HTTPPoll):
    """Base of a REST poller driven by a SupervisedConnection like a WebSocket (collector.feed.open_interest).

    A subclass implements `read()` (an async iterator of response bodies) with `self.rest`. It stays an
    HTTPPoll because cryptofeed's Binance `subscribe` treats HTTPPoll connections apart.
    """

    def __init__(self, urls: list[str], conn_id: str, interval: float, rest: RestClient) -> None:
        HTTPPoll.__init__(self, urls, conn_id, delay=interval, sleep=interval)
        self.rest = rest

    def message_received(self) -> None:
        """Count one answer for the watchdog and the connection's statistics."""
        ConnectionBase.received_at(cast(Any, self), time.time(), 1)


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
                                 batch_handler=batch if handler == self.message_handler else None)
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


def ws_connection_class(ws_client: str = "auto") -> type[AsyncConnection]:
    """The connection class for a WS_CLIENTS name; "auto" falls back to websockets without picows."""
    if ws_client not in WS_CLIENTS:
        raise ValueError(f"ws_client must be one of {WS_CLIENTS}, got {ws_client!r}")
    if ws_client == "websockets":
        return WSConnection
    try:
        from collector.feed.websocket import PicowsConnection
    except ImportError:
        if ws_client == "picows":
            raise
        log.info("picows is not installed: using the websockets-based connection")
        return WSConnection
    return PicowsConnection


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


__all__ = ["CANDLES", "CRYPTOFEED_VERSION", "FUNDING", "LIQUIDATIONS", "TRADES", "WS_CLIENTS", "AsyncConnection",
           "CollectorBinanceFutures", "CollectorFeed", "ConnectionBase", "ConnectionClosed", "PolledConnection",
           "SharedHTTPConnection", "SupervisedConnection", "WSConnection", "bind_feed_class",
           "ws_connection_class"]
