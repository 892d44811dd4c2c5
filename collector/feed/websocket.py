"""A WebSocket connection for cryptofeed built on picows: the frame layer in Cython, messages in batches.

Why: at 50,000 frames/s a worker spent ~43% of its CPU in the pure-Python `websockets` frame parser,
its per-message futures and queue, and cryptofeed's async-generator-per-message read loop. picows parses
frames in Cython straight out of one reusable receive buffer and calls back once per frame; this module
turns those callbacks into *batches* -- every message that arrived in one socket read, stamped with that
read's time -- so the consumer runs once per read instead of once per message.

`PicowsConnection` has the interface of `collector.feed.cryptofeed_adapter.WSConnection` (cryptofeed's AsyncConnection:
`_open()`, `read()`, `write()`, `close()`, `is_open`, `stats`, `last_message`, `received`), so stock
cryptofeed's ConnectionHandler drives it unchanged. Two cheaper paths serve
`collector.feed.cryptofeed_adapter.SupervisedConnection`: `deliver_batches(handler)` calls a feed's plain
batch handler from the read callback itself (no task woken per read: what the feeds use), and
`read_batches()` queues each read's batch for a reading task (for a per-message coroutine handler).

Semantics kept from websockets/WSAsyncConn: server pings are answered, the client pings
when the line is idle and drops the connection when the pong is overdue (`ping_interval`/`ping_timeout`),
fragmented messages are reassembled, a server close with 1000/1001 ends `read()` quietly and anything else
(close with an error code, TCP reset, protocol error) raises cryptofeed's `ConnectionClosed`, so the
connection handler reconnects. One deliberate difference: a text frame that is not valid UTF-8 is
delivered with replacement characters instead of failing the connection (websockets closes with 1007),
because the frame handler counts and skips bad frames and one bad frame must not cost hundreds of streams.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from collector.feed.cryptofeed_adapter import BatchHandler, ConnectionBase, ConnectionClosed
from collector.feed.pacing import PACER

log = logging.getLogger(__name__)

# Largest single frame accepted. websockets runs with max_size=None under cryptofeed; picows needs a bound.
# Binance's biggest frames (!markPrice@arr over ~500 symbols) are ~150 KB; 64 MiB is far above that and
# still stops a broken peer from making us allocate without limit.
MAX_FRAME_SIZE = 64 * 1024 * 1024
# Initial receive buffer (picows grows it by doubling when a read fills it). 256 KiB holds one simulator
# tick or one kernel read at 50k frames/s, so the steady state needs no growth and one recv per wake-up.
READ_BUFFER_INIT_SIZE = 256 * 1024
# websockets' default `open_timeout`: TCP connect + TLS + upgrade must finish within this, or we retry.
OPEN_TIMEOUT = 10.0
# How long close() waits for our close frame and the TCP shutdown before aborting the socket: short,
# because a reconnect is waiting and Binance does not answer close frames promptly, if at all.
CLOSE_TIMEOUT = 2.0
# Flow control in messages queued but not yet handed to the consumer: above PAUSE the socket stops being
# read (TCP pushes back on the server, which cuts a reader that is too slow -- a visible failure rather
# than unbounded memory); below RESUME it is read again. 16k messages are ~0.3 s at 50k frames/s, far
# more than one batch, so a consumer that keeps up never triggers it.
QUEUE_PAUSE_MESSAGES = 16_384
QUEUE_RESUME_MESSAGES = 4_096
# Close codes after which the server's close counts as orderly (read() ends without an exception), as
# websockets treats them (ConnectionClosedOK).
NORMAL_CLOSE_CODES = frozenset({WSCloseCode.OK.value, WSCloseCode.GOING_AWAY.value, WSCloseCode.NO_INFO.value})
# websockets' options that have no meaning here (permessage-deflate is never offered, so never used;
# our own queue bound replaces max_queue) and are accepted so that cryptofeed's defaults can be passed.
IGNORED_OPTIONS = frozenset({"compression", "max_queue", "close_timeout"})

_pace = PACER.read

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_PING = WSMsgType.PING
_PONG = WSMsgType.PONG

Batch = tuple[float, list[str | bytes]]


class _Session(WSListener):
    """The receiving side of one WebSocket session: collects messages, hands them over per socket read.

    One per successful `_open()`, so nothing of an old session (its queue, its close state) can leak into
    the next one when the connection object is reused for a reconnect.
    """

    def __init__(self, conn: PicowsConnection, max_message: int | None) -> None:
        super().__init__()
        self.conn = conn
        self.max_message = max_message
        self.transport: WSTransport | None = None
        self.pending: list[str | bytes] = []
        self.queue: deque[Batch] = deque()
        self.queued = 0
        self.paused = False  # by our own queue bound (QUEUE_PAUSE_MESSAGES)
        self.held = conn.reading_paused  # by back-pressure (PicowsConnection.pause_reading): outlasts the queue
        self.reading = True  # the socket's state: read unless paused or held
        self.waiter: asyncio.Future[None] | None = None
        # Set by PicowsConnection.deliver_batches: each read's batch goes straight to it from _flush (no
        # queue, no wake-up of a reading task); None = batches are queued for batches().
        self.handler: BatchHandler | None = None
        self.frag: list[bytes] | None = None
        self.frag_type = _TEXT
        self.frag_size = 0
        self.done = False
        self.closed_by_us = False
        self.error: str | None = None

    # -- picows callbacks (on the event loop, once per frame: keep the common path short) ------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._sync_reading()  # a connection opened while held stops reading from its first frame

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is _TEXT and frame.fin and self.frag is None:
            try:
                self.pending.append(frame.get_payload_as_utf8_text())
            except UnicodeDecodeError:
                self.pending.append(frame.get_payload_as_bytes().decode("utf-8", "replace"))
        else:
            self._other_frame(transport, frame)
        if frame.last_in_buffer:
            self._flush()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.pending:
            self._flush()
        if self.error is None and not self.closed_by_us:
            hs = transport.close_handshake
            recv = hs.recv if hs is not None else None
            if recv is None:
                self.error = "connection lost without a close frame"
            else:
                code = int(cast(Any, recv.code))  # WSCloseCode is an IntEnum (picows types it otherwise)
                if code not in NORMAL_CLOSE_CODES:
                    self.error = f"server closed with {code} {recv.reason!r}"
        self.done = True
        self._wake()

    # -- the uncommon frames -------------------------------------------------------------------------
    def _other_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Everything but a complete text frame, control frames included.

        Pings and pongs are handled here rather than inside picows (auto-pong off, no pong consumed by
        is_user_specific_pong) because picows marks only the last frame of a read it passes on as
        `last_in_buffer`: messages read together with a trailing ping or pong would otherwise wait in
        `pending` for the next data frame -- on a quiet stream, for minutes.
        """
        kind = frame.msg_type
        if kind is _CLOSE:
            # Echo the code (RFC 6455 5.5.1) and go; whether the close was orderly is judged on disconnect.
            if not transport.is_close_frame_sent:
                try:
                    code = frame.get_close_code()
                except ValueError:  # a private code (4000-4999) that picows' enum does not name
                    code = WSCloseCode.OK
                transport.send_close(code if code is not WSCloseCode.NO_INFO else WSCloseCode.OK)
            transport.disconnect()
        elif kind is _TEXT or kind is _BINARY:
            if self.frag is not None:
                return self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "new data frame inside a fragmented message")
            if frame.fin:  # a complete binary message
                self.pending.append(frame.get_payload_as_bytes())
            else:
                self.frag = [frame.get_payload_as_bytes()]
                self.frag_type = kind
                self.frag_size = frame.payload_size
        elif kind is _CONTINUATION:
            if self.frag is None:
                return self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "continuation frame without a start")
            self.frag.append(frame.get_payload_as_bytes())
            self.frag_size += frame.payload_size
            if self.max_message is not None and self.frag_size > self.max_message:
                return self._fail(transport, WSCloseCode.MESSAGE_TOO_BIG, f"message over {self.max_message} bytes")
            if frame.fin:
                data = b"".join(self.frag)
                self.frag = None
                self.pending.append(data.decode("utf-8", "replace") if self.frag_type is _TEXT else data)
        elif kind is _PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif kind is _PONG:
            transport.notify_user_specific_pong_received()  # the answer to picows' keep-alive ping

    def is_user_specific_pong(self, frame: WSFrame) -> bool:
        """Never: a pong that picows consumed would not reach on_ws_frame (see `_other_frame`)."""
        return False

    def _fail(self, transport: WSTransport, code: WSCloseCode, reason: str) -> None:
        """Remember why, send the close frame and drop the connection (read() then raises).

        Closing here rather than raising WSProtocolError from the callback: picows would also close, but
        it parks the exception in a future nobody awaits, which asyncio reports at exit.
        """
        self.error = f"protocol error: {reason}"
        self.frag = None
        if not transport.is_close_frame_sent:
            transport.send_close(code, reason.encode())
        transport.disconnect()

    # -- handing over --------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Everything parsed from one socket read becomes one batch, stamped with one receipt time."""
        batch = self.pending
        if not batch:
            return
        self.pending = []
        now = time.time()
        conn = self.conn
        conn.received_at(now, len(batch))
        handler = self.handler
        if handler is not None:
            try:
                handler(batch, conn, now)
            except Exception as e:  # never into picows (it would drop the connection with its own story)
                self._handler_failed(e)
            _pace(len(batch))  # the worker may rest at the end of this turn (collector.feed.pacing)
            return
        self.queue.append((now, batch))
        self.queued += len(batch)
        if self.queued > QUEUE_PAUSE_MESSAGES and not self.paused:
            self.paused = True
            self._sync_reading()
        self._wake()

    def _handler_failed(self, e: Exception) -> None:
        """A batch handler raised (feed handlers count bad frames and do not): end the session with the
        reason, as the exception ending the reading task did before; the supervisor reconnects."""
        log.error("%s: batch handler failed: %s: %s", self.conn.id, type(e).__name__, e, exc_info=e)
        if self.error is None:
            self.error = f"batch handler failed: {type(e).__name__}: {e}"
        t = self.transport
        if t is not None and not t.is_disconnected:
            t.disconnect()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _taken(self, n: int) -> None:
        self.queued -= n
        if self.paused and self.queued <= QUEUE_RESUME_MESSAGES:
            self.paused = False
            self._sync_reading()

    def hold(self, on: bool) -> None:
        self.held = on
        self._sync_reading()

    def _sync_reading(self) -> None:
        """Read the socket unless the queue is over its bound or back-pressure holds it; either reason alone
        keeps it paused, so the queue draining never resumes a connection that back-pressure stopped."""
        want = not (self.paused or self.held)
        t = self.transport
        if want != self.reading and t is not None and not t.is_disconnected:
            (t.underlying_transport.resume_reading if want else t.underlying_transport.pause_reading)()
            self.reading = want

    async def batches(self) -> AsyncIterator[Batch]:
        queue = self.queue
        loop = asyncio.get_running_loop()
        while True:
            while queue:
                batch = queue.popleft()
                self._taken(len(batch[1]))
                yield batch
            if self.done:
                break
            self.waiter = loop.create_future()
            await self.waiter
        if self.error is not None and not self.closed_by_us:
            raise ConnectionClosed(f"{self.conn.id}: {self.error}")


class PicowsConnection(ConnectionBase):
    """cryptofeed AsyncConnection over picows; accepts ws:// and wss:// (system default TLS context).

    `kwargs` are cryptofeed's websocket options: `ping_interval` / `ping_timeout` (client keep-alive: ping
    after that much silence, drop when the pong is that late; None disables), `max_size` (largest message,
    None = MAX_FRAME_SIZE per frame), `open_timeout`, `ssl` (an SSLContext); `use_aiofastnet` (None lets
    picows choose); websockets-only options in IGNORED_OPTIONS are accepted and ignored, anything else is a
    TypeError so that a misspelt option is noticed.
    """

    def __init__(self, address: str, conn_id: str, subscription: dict[str, list[str]] | None = None,
                 **kwargs: object) -> None:
        unknown = set(kwargs) - IGNORED_OPTIONS - {"ping_interval", "ping_timeout", "max_size", "open_timeout",
                                                   "ssl", "use_aiofastnet"}
        if unknown:
            raise TypeError(f"unsupported websocket options for picows: {sorted(unknown)}")
        super().__init__(address, conn_id, subscription=subscription)
        self.ws_kwargs = kwargs
        self._session: _Session | None = None
        self.reading_paused = False  # back-pressure: see pause_reading()
        self.resumed_at = 0.0  # time.time() of the last resume_reading(): the watchdog counts silence from it

    def pause_reading(self) -> None:
        """Stop reading the socket (back-pressure: the kernel, then the server, buffer for us) until
        resume_reading(); holds across reconnects, and the session's own queue bound cannot undo it."""
        self.reading_paused = True
        if self._session is not None:
            self._session.hold(True)

    def resume_reading(self) -> None:
        self.reading_paused = False
        self.resumed_at = time.time()
        if self._session is not None:
            self._session.hold(False)

    @property
    def is_open(self) -> bool:
        s = self._session
        return s is not None and not s.done and s.transport is not None and not s.transport.is_disconnected

    async def _open(self) -> None:
        if self.is_open:
            log.warning("%s: websocket already open", self.id)
            return
        kw = self.ws_kwargs
        max_size = kw.get("max_size")
        ping_interval = kw.get("ping_interval", 20)
        ping_timeout = kw.get("ping_timeout", 60)
        given = kw.get("ssl")
        ssl_context = given if isinstance(given, ssl.SSLContext) else None
        if self.address.startswith("wss://") and ssl_context is None:
            ssl_context = ssl.create_default_context()
        # Counters first: frames that arrive with the handshake response are counted by the new session.
        self.session_started()
        session = _Session(self, max_size if isinstance(max_size, int) else None)
        log.debug("%s: connecting to %s", self.id, self.address)
        async with asyncio.timeout(float(kw.get("open_timeout") or OPEN_TIMEOUT)):  # type: ignore[arg-type]
            transport, _ = await ws_connect(
                lambda: session, self.address,
                ssl_context=ssl_context,
                max_frame_size=max_size if isinstance(max_size, int) else MAX_FRAME_SIZE,
                read_buffer_init_size=READ_BUFFER_INIT_SIZE,
                websocket_handshake_timeout=None,  # covered by the open timeout above
                enable_auto_pong=False,  # answered in _Session._other_frame, see there
                enable_auto_ping=ping_interval is not None,
                auto_ping_idle_timeout=float(ping_interval or 20),  # type: ignore[arg-type]
                # picows requires reply <= idle; websockets allows a longer wait (60 s vs 20 s by default).
                auto_ping_reply_timeout=min(float(ping_timeout or 60), float(ping_interval or 20)),  # type: ignore[arg-type]
                use_aiofastnet=cast(bool | None, kw.get("use_aiofastnet")),
                logger_name=f"client.{self.id}",
            )
        session.transport = transport
        self._session = session
        session.hold(self.reading_paused)  # back-pressure may have started during the handshake
        cast(Any, self).conn = transport  # for introspection, as WSAsyncConn exposes its socket
        opened = time.time()
        self.received_at(opened)
        if self.raw_callback is not None:
            await self.raw_callback.on_ws_open(self, opened)

    async def read_batches(self) -> AsyncIterator[Batch]:
        """(receipt time, messages) per socket read, in arrival order; ends or raises like read()."""
        async for batch in self._batches("read_batches"):
            yield batch

    async def deliver_batches(self, handler: BatchHandler) -> None:
        """Call `handler(messages, self, receipt time)` once per socket read, in arrival order, until the
        session ends; returns or raises like read() ends or raises.

        Why: read_batches() queues each read's batch and wakes the reading task, which resumes two async
        generators to get it -- about a fifth of a worker's CPU at the real market's rate (bench/README.md,
        the shipped configuration). Here the batch goes to `handler` from picows' read callback itself, so
        a read costs no task switch. What arrived before the call (the subscription answers) is handed over
        first. The handler must not raise (a raise ends the session, logged, and it is reconnected); with
        cryptofeed's raw-data recorder, whose hooks are coroutines, batches go through read_batches().
        """
        if self.raw_callback is not None:
            async for timestamp, messages in self._batches("deliver_batches"):
                handler(messages, self, timestamp)
            return
        session = self._session
        if session is None or (session.done and not session.queue):
            why = session.error if session is not None and session.error else "connection closed in deliver_batches()"
            raise ConnectionClosed(f"{self.id}: {why}")
        queue = session.queue
        while queue:
            timestamp, messages = queue.popleft()
            session._taken(len(messages))
            handler(messages, self, timestamp)
        session.handler = handler
        try:
            loop = asyncio.get_running_loop()
            while not session.done:
                session.waiter = loop.create_future()
                await session.waiter
        finally:
            session.handler = None
        if session.error is not None and not session.closed_by_us:
            raise ConnectionClosed(f"{self.id}: {session.error}")

    async def read(self) -> AsyncIterator[str | bytes]:  # type: ignore[override]
        """One message at a time (cryptofeed's ConnectionHandler); `last_message` is the newest receipt."""
        async for _, messages in self._batches("read"):
            for msg in messages:
                yield msg

    async def _batches(self, caller: str) -> AsyncIterator[Batch]:
        session = self._session
        if session is None or (session.done and not session.queue):
            why = session.error if session is not None and session.error else f"connection closed in {caller}()"
            raise ConnectionClosed(f"{self.id}: {why}")
        callback = self.raw_callback
        async for batch in session.batches():
            if callback is not None:
                for msg in batch[1]:
                    await callback.on_ws_message(self, msg, batch[0])
            yield batch

    async def write(self, data: str | bytes) -> None:
        if not self.is_open:
            raise ConnectionClosed(f"{self.id}: write on a closed connection")
        assert self._session is not None and self._session.transport is not None
        if isinstance(data, str):
            self._session.transport.send(_TEXT, data.encode())
        else:
            self._session.transport.send(_BINARY, data)
        self.sent += 1
        if self.raw_callback is not None:
            await self.raw_callback.on_ws_send(self, data, time.time())

    async def close(self) -> None:
        """Close frame, then TCP close; a reader of this session ends quietly. Safe to call twice."""
        session = self._session
        self._session = None
        cast(Any, self).conn = None
        if session is not None and session.transport is not None:
            transport = session.transport
            session.closed_by_us = True
            if not transport.is_disconnected:
                if not transport.is_close_frame_sent:
                    transport.send_close(WSCloseCode.OK)
                transport.disconnect()
                try:
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await transport.wait_disconnected()
                except TimeoutError:
                    transport.disconnect(graceful=False)
                except Exception as e:  # picows re-raises the failure that ended the session; already reported
                    log.debug("%s: %s while closing", self.id, e)
            session.done = True
            session._wake()
            log.info("%s: closed connection", self.id)
        if self.raw_callback is not None:
            await self.raw_callback.on_close(self)


__all__ = ["PicowsConnection"]
