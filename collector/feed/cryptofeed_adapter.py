"""cryptofeed's connections, bound to our endpoints and hardened; with collector.feed.cryptofeed_feed (its
feed classes), the only code that knows cryptofeed's internals.

Why only these two modules: the collector drives cryptofeed below its public surface (private subscription
hooks, ConnectionHandler's constructor and loop, connection counters), which changes between releases. So the
pin is exact, every use of cryptofeed is in them (other modules import its names from them), and
tests/feed/test_cryptofeed_internals.py fails when what they rely on moves.

What changes stock behaviour here: `ws://` is accepted (the simulator); reconnects never give up, at a capped
delay; a connection that never delivers counts as silent; every HTTP request shares the process's
RestClient. Configured endpoints and skipping a bad frame are the feed classes' (collector.feed.cryptofeed_feed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, cast

from cryptofeed.connection import (
    AsyncConnection,
    HTTPAsyncConn,
    HTTPPoll,
    WSAsyncConn,
)
from cryptofeed.connection_handler import ConnectionHandler
from cryptofeed.defines import CANDLES, FUNDING, LIQUIDATIONS, TRADES
from cryptofeed.exceptions import ConnectionClosed

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
                 batch_handler: BatchHandler | None = None, on_lost: Callable[[], None] | None = None) -> None:
        # Keywords only: upstream has inserted parameters before (keepalive, keepalive_interval).
        # cryptofeed annotates subscribe and handler as Awaitable; they are the callables it awaits.
        super().__init__(conn=conn, subscribe=cast(Any, subscribe), handler=cast(Any, handler), retries=-1,
                         timeout=timeout, timeout_interval=timeout_interval, log_on_error=False,
                         start_delay=start_delay)
        self._stop = stop
        self._batch_handler = batch_handler
        # Called when a subscribed session ends while the feed runs (closed, failed, or silent and closed by
        # the watchdog): what it carried is not received until the next session delivers. Once per session,
        # not per reconnect attempt (an attempt that never subscribed had nothing to lose).
        self.on_lost = on_lost

    async def _pause(self, seconds: float) -> None:
        await sleep_unless_stopped(self._stop, seconds)

    def _lost(self, subscribed: bool) -> None:
        if subscribed and self.on_lost is not None:
            self.on_lost()

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
        """Batched fast paths for connections that offer them (collector.feed.websocket).

        With a `batch_handler` and `deliver_batches()`, the connection calls the handler from its socket's
        read callback, once per read, and this task only waits for the session to end. Otherwise, with
        `read_batches()`: cryptofeed's loop resumes an async generator and looks up `last_message` for every
        message; here one resumption hands over every message of a socket read, each handled with that
        read's receipt time; with a `batch_handler` (plain function) the whole read is one call, no coroutine
        per message. Either way the watchdog still sees `last_message`, which the connection stamps on receipt.
        """
        batch_handler = self._batch_handler
        deliver = getattr(connection, "deliver_batches", None)
        if batch_handler is not None and deliver is not None:
            try:
                await deliver(batch_handler)  # each read straight from the socket's callback; ends with it
            except Exception:
                if not self.running:
                    return
                raise
            return
        read_batches = getattr(connection, "read_batches", None)
        if read_batches is None:
            await cast(Any, super())._handler(connection, handler)
            return
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
                subscribed = False
                await self._wait_reading_allowed()
                try:
                    async with self.conn.connect() as connection:
                        await cast(Any, self.subscribe)(connection)
                        if not self.running or self._stop.is_set():
                            # Stopped while this session was opening: request_stop() found nothing open to
                            # close, and nothing would end it now (the watchdog stops with `running`).
                            break
                        subscribed = True
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
                    self._lost(subscribed)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # any failure: reconnect, never give up
                    if not self.running or self._stop.is_set():
                        break
                    log.warning("%s: connection failed (%s: %s) - reconnecting in %.1fs",
                                self.conn.uuid, type(e).__name__, e, delay)
                    self._lost(subscribed)
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


__all__ = ["CANDLES", "CRYPTOFEED_VERSION", "FUNDING", "LIQUIDATIONS", "TRADES", "WS_CLIENTS", "AsyncConnection",
           "ConnectionBase", "ConnectionClosed", "PolledConnection", "SharedHTTPConnection", "SupervisedConnection",
           "WSConnection", "ws_connection_class"]
