"""cryptofeed's BinanceFutures bound to configured endpoints, hardened for months of unattended running.

Stock cryptofeed takes its endpoints from class attributes, refuses `ws://` (so it cannot talk to a
loopback simulator), reconnects the whole connection (hundreds of streams) on any exception raised while
handling one frame, doubles its reconnect delay without bound, and never notices a connection that was
opened but never delivers a frame (the failure mode of Binance's 2026 URL change). Everything that
changes that behaviour lives here, in one place; the rest of the collector only sees
`bind_feed_class(endpoints)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptofeed.connection import (
    AsyncConnection,
    ConnectionClosed,
    RestEndpoint,
    Routes,
    WebsocketEndpoint,
    WSAsyncConn,
)
from cryptofeed.connection_handler import ConnectionHandler
from cryptofeed.exchanges import BinanceFutures

from collector.runtime.stopping import sleep_unless_stopped

log = logging.getLogger(__name__)

# Reconnect backoff: start fast (a dropped connection costs market data), cap so that a long outage is
# retried at least every 30 s instead of cryptofeed's unbounded doubling.
RECONNECT_DELAY_INITIAL = 1.0
RECONNECT_DELAY_CAP = 30.0
# A frame is logged in full at most this many times per error kind: enough to diagnose, never a log flood.
LOGGED_SAMPLES_PER_KIND = 3
LOGGED_FRAME_CHARS = 500
# A connection lost while back-pressure holds (the keepalive's pong sat unread, or the exchange cut a slow
# reader) is reconnected once reading may resume; this is how often that is checked: short against the
# seconds a pause lasts, negligible in CPU.
BACKPRESSURE_RECONNECT_POLL_S = 0.2
# Which WebSocket client carries the feed: "auto" = picows (collector.feed.websocket) when importable, else the
# websockets-based WSConnection; "picows" insists (ImportError if missing); "websockets" is stock.
WS_CLIENTS = ("auto", "picows", "websockets")


@dataclass(frozen=True)
class Endpoints:
    """Base URLs of the venue: REST (`https://fapi.binance.com`) and WebSocket (`wss://fstream.binance.com`)."""

    rest: str
    ws: str

    def __post_init__(self) -> None:
        rest, ws = urlsplit(self.rest), urlsplit(self.ws)
        if rest.scheme not in ("http", "https") or not rest.netloc:
            raise ValueError(f"exchange REST endpoint must be an http(s) URL, got {self.rest!r}")
        if ws.scheme not in ("ws", "wss") or not ws.netloc:
            raise ValueError(f"exchange WebSocket endpoint must be a ws(s) URL, got {self.ws!r}")
        object.__setattr__(self, "rest", self.rest.rstrip("/"))
        object.__setattr__(self, "ws", self.ws.rstrip("/"))


PRESETS: dict[str, Endpoints] = {
    "binance": Endpoints("https://fapi.binance.com", "wss://fstream.binance.com"),
    "testnet": Endpoints("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com"),
}


class FrameErrors:
    """Counts frames that could not be handled, by kind, and logs a few samples of each kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, kind: str, frame: str | bytes, conn_id: str, exc: BaseException | None = None) -> None:
        self.counts[kind] += 1
        n = self.counts[kind]
        if n <= LOGGED_SAMPLES_PER_KIND:
            text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
            log.warning("%s: skipped a frame (%s, %d so far): %s%s", conn_id, kind, n,
                        text[:LOGGED_FRAME_CHARS], f" ({type(exc).__name__}: {exc})" if exc else "")
        elif n in (10, 100, 1000) or n % 10000 == 0:
            log.warning("%s: %d frames skipped as %s so far", conn_id, n, kind)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class WSConnection(WSAsyncConn):
    """WSAsyncConn that also accepts `ws://` and counts a connection that never delivers as silent.

    cryptofeed's watchdog only trips when `last_message` is set, so a connection that opens and then
    delivers nothing would be watched forever. Stamping the open time makes silence from the start
    count as silence.
    """

    def __init__(self, address: str, conn_id: str, subscription: dict | None = None, **kwargs: object) -> None:
        if not address.startswith(("wss://", "ws://")):
            raise ValueError(f"Invalid address, must be a ws(s) address. Provided address is: {address!r}")
        self.address = address
        AsyncConnection.__init__(self, f"{conn_id}.ws.{self.conn_count}", subscription=subscription)
        self.ws_kwargs = kwargs

    reading_paused = False  # back-pressure: see pause_reading()
    resumed_at = 0.0  # time.time() of the last resume_reading(): the watchdog counts silence from it

    async def _open(self) -> None:
        await super()._open()
        self.last_message = time.time()
        # websockets pauses the transport when its own frame queue is full and resumes it when the queue
        # drains; route its resume through us so that the queue draining cannot undo back-pressure.
        transport, frames = self.conn.transport, self.conn.recv_messages
        frames.resume = lambda: None if self.reading_paused else transport.resume_reading()
        if self.reading_paused:
            transport.pause_reading()

    def pause_reading(self) -> None:
        """Stop reading the socket (back-pressure: the kernel, then the server, buffer for us) until
        resume_reading(); holds across reconnects. asyncio's pause_reading is idempotent."""
        self.reading_paused = True
        if self.conn is not None and self.is_open:
            self.conn.transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        self.resumed_at = time.time()
        if self.conn is not None and self.is_open and not self.conn.recv_messages.paused:
            self.conn.transport.resume_reading()


class SupervisedConnection(ConnectionHandler):
    """cryptofeed's ConnectionHandler with unlimited retries and a capped backoff.

    The base class doubles the delay forever and gives up after `retries`; a collector that runs for
    months must keep trying, at a bounded interval, and must still stop promptly when asked.
    """

    def __init__(self, *args: object, stop: asyncio.Event, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._stop = stop

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

    async def _handler(self, connection: AsyncConnection, handler) -> None:  # noqa: ANN001
        """Batched fast path for connections that offer `read_batches()` (collector.feed.websocket).

        cryptofeed's loop resumes an async generator and looks up `last_message` for every message; here
        one resumption hands over every message of a socket read, each handled with that read's receipt
        time. The watchdog still sees `last_message`, which the connection stamps on receipt.
        """
        read_batches = getattr(connection, "read_batches", None)
        if read_batches is None:
            await super()._handler(connection, handler)
            return
        try:
            async for timestamp, messages in read_batches():
                for message in messages:
                    await handler(message, connection, timestamp)
                if not self.running:
                    await connection.close()
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
                        await self.subscribe(connection)
                        delay = RECONNECT_DELAY_INITIAL
                        if self.timeout != -1:
                            watchdog = asyncio.get_running_loop().create_task(self._watcher())
                        try:
                            await self._handler(connection, self.handler)
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
                await self.conn.close()


class CollectorBinanceFutures(BinanceFutures):
    """BinanceFutures driven by SupervisedConnection, tolerant of bad frames and callback failures.

    Subclasses replace `handle_frame`; a frame that raises is counted in `frame_errors` and skipped,
    so one bad frame never costs the hundreds of streams sharing its connection.
    """

    # Bound per class by bind_feed_class().
    websocket_endpoints: list[WebsocketEndpoint]
    rest_endpoints: list[RestEndpoint]
    ws_connection_class: type[AsyncConnection]

    def __init__(self, *args: object, exchange_symbols: list[str] | None = None,
                 channels: list[str] | None = None, **kwargs: object) -> None:
        """`exchange_symbols` (e.g. BTCUSDT) with `channels`: resolved against exchangeInfo at start,
        so the caller need not know cryptofeed's normalised names; unknown symbols are logged and left out."""
        kwargs.setdefault("retries", -1)
        self._exchange_symbols = exchange_symbols
        if exchange_symbols is None:
            super().__init__(*args, channels=channels, **kwargs)
        else:
            super().__init__(*args, **kwargs)
            self._init_channels = channels
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
        await BinanceFutures.message_handler(self, msg, conn, timestamp)

    def connect(self) -> list[tuple[AsyncConnection, object, object]]:
        ret = list(self._connect_rest())
        addresses = self._address() if self.subscription else []
        if isinstance(addresses, str):
            addresses = [addresses]
        options = self.websocket_endpoints[0].options
        for address in addresses:
            conn_cls = getattr(self, "ws_connection_class", WSConnection)
            conn = conn_cls(address, self.id, subscription=self.subscription, **options)
            ret.append((conn, self.subscribe, self.message_handler))
        return ret

    async def _setup(self) -> None:
        # Always re-read exchangeInfo from *this* class's endpoint: cryptofeed caches symbols per
        # exchange id, process-wide, which would leak one endpoint's universe into another's.
        await self.load_symbols(conn=self.http_conn, refresh=True)
        self._apply_symbol_mapping()
        if self._exchange_symbols is not None:
            known = self.exchange_symbol_mapping
            self.unknown_symbols = [s for s in self._exchange_symbols if s not in known]
            if self.unknown_symbols:
                log.warning("%s: %d symbols are not listed in TRADING by the exchange and are skipped: %s",
                            self.id, len(self.unknown_symbols), ", ".join(self.unknown_symbols[:20]))
            self._init_symbols = [known[s] for s in self._exchange_symbols if s in known]
        self._build_subscription()

    async def _run(self, stop_event: asyncio.Event) -> None:
        """Connections only: the collector does its own batching, so cryptofeed's backends are not used."""
        await self._setup()
        self.connections = [
            SupervisedConnection(conn, sub, handler, -1, timeout=self.timeout, timeout_interval=self.timeout_interval,
                                 log_on_error=False, start_delay=self.start_delay, stop=stop_event)
            for conn, sub, handler in self.connect()
        ]
        async with asyncio.TaskGroup() as tg:
            for handler in self.connections:
                tg.create_task(handler.run(), name=f"feed.{self.id}.conn.{handler.conn.id}")
            await stop_event.wait()
            for handler in self.connections:
                await handler.request_stop()


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


def bind_feed_class(endpoints: Endpoints, base: type[CollectorBinanceFutures] = CollectorBinanceFutures,
                    ws_client: str = "auto") -> type[CollectorBinanceFutures]:
    """A subclass of `base` whose class-level endpoints point at `endpoints`, its WebSocket connections
    made by `ws_client` (see WS_CLIENTS)."""
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


__all__ = ["PRESETS", "WS_CLIENTS", "CollectorBinanceFutures", "ConnectionClosed", "Endpoints", "FrameErrors",
           "bind_feed_class", "ws_connection_class"]
