"""OKX's and Bybit's feeds: the connection layer Binance's feed uses, their subscriptions and pings, the
lean decoders (collector.feed.venues).

Why not cryptofeed's OKX / Bybit classes: their parsers make a Decimal and an object per event, and
cryptofeed 3.0.1 polls OKX liquidations over REST instead of the `liquidation-orders` channel. So the
feed drives its own subscriptions over the same pieces as collector.feed.source: the connection class of
`exchange.ws_client` (picows or cryptofeed's websockets connection) under a SupervisedConnection
(cryptofeed's ConnectionHandler: watchdog, reconnect at a capped delay, batched reads). What is per venue:
- OKX: two sockets, /ws/v5/public (trades, funding-rate, mark-price, open-interest, liquidation-orders)
  and /ws/v5/business (candle1m); text "ping" when silent, OKX closes a connection after 30 s without one.
- Bybit: one socket, /v5/public/linear; `{"op":"ping"}` every 20 s, as Bybit asks.
Each (re)connect sends the subscriptions again and restarts that connection's pings. Open interest is
pushed (OKX every few seconds, Bybit on every tickers frame); the sink receives at most one per symbol and
open-interest interval (OpenInterestGate), as Binance's REST polling stores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, Protocol, cast

from collector.feed.cryptofeed_adapter import AsyncConnection, ConnectionClosed, SupervisedConnection
from collector.feed.endpoints import Endpoints
from collector.feed.events import EventSink, FrameErrors
from collector.feed.venues import bybit, okx
from collector.feed.venues.common import ContractSize, OpenInterestGate, VenueSymbol
from collector.feed.wire import AggTrade, ForceOrder, Kline, MarkPrice, OpenInterest
from collector.runtime.stopping import sleep_unless_stopped

log = logging.getLogger(__name__)

# Keep-alive: OKX drops a connection silent for 30 s and asks for a "ping" before that; 20 s leaves 10 s
# for a slow pong. Bybit recommends {"op":"ping"} every 20 s.
PING_TEXT = {"okx": "ping", "bybit": bybit.PING}
PING_INTERVAL_S = {"okx": 20.0, "bybit": 20.0}
# A failed instruments request at start (the venue's REST down or rate limited) is retried this often: the
# contract sizes are needed before any frame can be decoded.
LOAD_RETRY_S = 10.0


class Decoder(Protocol):
    skipped: Any
    venue_errors: list[str]

    def handle(self, msg: str | bytes, receipt: float) -> None: ...
    def handle_batch(self, messages: Sequence[str | bytes], receipt: float) -> None: ...


def venue_data_types(data_types: Sequence[str]) -> list[str]:
    """The venue subscriptions the configured data types need: every candle interval is rolled up from 1m."""
    out = [t for t in ("trades", "funding", "liquidations", "open_interest") if t in data_types]
    if any(t.startswith("candles_") for t in data_types):
        out.append("candles_1m")
    return out


# The channel (topic prefix) of each venue's liquidations, as its subscribe texts name it.
LIQUIDATION_CHANNELS = {"okx": okx.CHANNELS["liquidations"], "bybit": bybit.TOPICS["liquidations"]}


def subscriptions(venue: str, names: Sequence[str], data_types: Sequence[str]) -> dict[str, list[str]]:
    """WebSocket path -> the subscribe texts to send on it after each connect."""
    wanted = venue_data_types(data_types)
    if venue == "okx":
        return okx.subscribe_messages(names, wanted)
    if venue == "bybit":
        return {bybit.LINEAR_PATH: bybit.subscribe_messages(names, wanted)}
    raise ValueError(f"no lean feed for venue {venue!r}")


class GatedSink:
    """The sink behind the decoder: everything passes, open interest through the OpenInterestGate.

    What passes unchanged is the inner sink's own bound method, not a wrapper calling it: one Python call
    less per trade, candle and mark price (bench/venue_cost.py: ~0.15 us of OKX's and Bybit's ~3-4 us per
    message). `retarget` rebinds them when the inner sink changes (a successor's hand-over); the decoders read
    them once per socket read (handle_batch), so a retarget applies from the next read. The decoders are handed
    `gate` too and build an open interest only when `gate.due` says it would pass here."""

    on_trade: Callable[[AggTrade, float], None]
    on_mark_price: Callable[[MarkPrice, float], None]
    on_liquidation: Callable[[ForceOrder, float], None]
    on_kline: Callable[[Kline, float], None]

    def __init__(self, sink: EventSink, gate: OpenInterestGate) -> None:
        self.gate = gate
        self.retarget(sink)

    def retarget(self, sink: EventSink) -> None:
        """Send every event to `sink` from now on, keeping the gate's state."""
        self.sink = sink
        self.on_trade, self.on_mark_price = sink.on_trade, sink.on_mark_price
        self.on_liquidation, self.on_kline = sink.on_liquidation, sink.on_kline

    def on_open_interest(self, oi: OpenInterest, receipt: float) -> None:
        if self.gate.admit(oi.symbol, oi.time):
            self.sink.on_open_interest(oi, receipt)

    def on_bad_frame(self, kind: str) -> None:
        self.sink.on_bad_frame(kind)

    def on_stream_lost(self) -> None:
        self.sink.on_stream_lost()


class VenueFeed:
    """One venue's streams for `symbols`: connections, pings, decoding; run(stop) until stop is set.

    `symbols` are VenueSymbols (with contract sizes), or the venue's names with `load` (an async fetch of
    the venue's instruments, collector.feed.venue_universe), which run() calls first, retrying until it
    answers; names the venue does not list are logged and left out. `connection_class` is
    collector.feed.cryptofeed_adapter.ws_connection_class(exchange.ws_client); `ws_options` its options.
    """

    def __init__(self, venue: str, endpoints: Endpoints, symbols: Sequence[VenueSymbol] | Sequence[str],
                 data_types: Sequence[str], sink: EventSink, connection_class: type[AsyncConnection], *,
                 load: Callable[[], Awaitable[list[VenueSymbol]]] | None = None, oi_interval_s: float = 300.0,
                 timeout: float = 60.0, timeout_interval: float = 15.0, ws_options: dict[str, Any] | None = None,
                 ping_interval_s: float | None = None) -> None:
        if venue not in PING_TEXT:
            raise ValueError(f"no lean feed for venue {venue!r}")
        self.venue, self.endpoints = venue, endpoints
        self.data_types = list(data_types)
        self.sink = GatedSink(sink, OpenInterestGate(int(oi_interval_s * 1000)))
        self._load = load
        self._wanted = [s if isinstance(s, str) else s.name for s in symbols]
        self.unknown_symbols: list[str] = []
        self.plan: dict[str, list[str]] = {}
        self.decoder: Decoder | None = None
        self._contracts: dict[str, ContractSize] = {}
        self._frame_errors = FrameErrors()  # until the decoder exists
        if all(isinstance(s, VenueSymbol) for s in symbols):
            self._use([s for s in symbols if isinstance(s, VenueSymbol)])
        elif load is None:
            raise ValueError("names without VenueSymbols need `load` (the venue's instruments)")
        self.connection_class = connection_class
        self.ws_options = dict(ws_options or {})
        self.timeout, self.timeout_interval = timeout, timeout_interval
        self.ping_text = PING_TEXT[venue]
        self.ping_interval_s = ping_interval_s if ping_interval_s is not None else PING_INTERVAL_S[venue]
        self.connections: list[SupervisedConnection] = []
        self._pings: dict[str, asyncio.Task[None]] = {}
        self.pings_sent = 0

    def _use(self, symbols: list[VenueSymbol]) -> None:
        self.symbols = symbols
        self._contracts = {s.name: s.contract for s in symbols}
        self.plan = subscriptions(self.venue, [s.name for s in symbols], self.data_types)
        self.decoder = (okx.OkxDecoder(symbols, self.sink, self.venue, self.sink.gate) if self.venue == "okx"
                        else bybit.BybitDecoder(symbols, self.sink, self.venue, self.sink.gate))

    def contract(self, name: str) -> ContractSize | None:
        """The contract size of instrument `name`; None before the instruments are loaded, or if not ours."""
        return self._contracts.get(name)

    @property
    def frame_errors(self) -> FrameErrors:
        """Frames the decoder skipped, by kind (collector.feed.events)."""
        return self.decoder.skipped.errors if self.decoder is not None else self._frame_errors

    async def _resolve(self, stop: asyncio.Event) -> bool:
        """The wanted names' VenueSymbols from the venue's instruments; False if stopped before it answered."""
        assert self._load is not None
        while not stop.is_set():
            try:
                listed = {s.name: s for s in await self._load()}
            except Exception as e:  # the venue's REST down or rate limited: the streams wait for it
                log.warning("%s: instruments not loaded (%s: %s); retrying in %.0f s", self.venue,
                            type(e).__name__, e, LOAD_RETRY_S)
                await sleep_unless_stopped(stop, LOAD_RETRY_S)
                continue
            self.unknown_symbols = [n for n in self._wanted if n not in listed]
            if self.unknown_symbols:
                log.warning("%s: %d symbols are not listed in trading state and are skipped: %s", self.venue,
                            len(self.unknown_symbols), ", ".join(self.unknown_symbols[:20]))
            self._use([listed[n] for n in self._wanted if n in listed])
            return True
        return False

    def set_sink(self, sink: EventSink) -> None:
        """Send events to another sink from now on (a successor's hand-over), keeping the gate's state."""
        self.sink.retarget(sink)

    def handle_batch(self, messages: Sequence[str | bytes], conn: AsyncConnection, timestamp: float) -> None:
        """Every frame of one socket read, in order; the decoder counts and skips what it cannot use."""
        assert self.decoder is not None  # connections start after it exists
        self.decoder.handle_batch(messages, timestamp)

    async def message_handler(self, msg: str | bytes, conn: AsyncConnection, timestamp: float) -> None:
        self.handle_batch((msg,), conn, timestamp)

    async def _subscribe(self, conn: AsyncConnection) -> None:
        path = self._paths[conn.id]
        if isinstance(self.decoder, bybit.BybitDecoder):
            self.decoder.reset()  # Bybit sends a fresh tickers snapshot after each subscribe
        for text in self.plan[path]:
            await conn.write(text)
        old = self._pings.pop(conn.id, None)
        if old is not None:
            old.cancel()
        self._pings[conn.id] = asyncio.get_running_loop().create_task(self._ping(conn), name=f"ping.{conn.id}")
        log.info("%s: subscribed %d messages on %s", conn.id, len(self.plan[path]), path)

    async def _ping(self, conn: AsyncConnection) -> None:
        """The venue's text ping every interval while this session is open (the next session starts its own)."""
        while True:
            await asyncio.sleep(self.ping_interval_s)
            if not conn.is_open:
                return
            try:
                await conn.write(self.ping_text)
            except (ConnectionClosed, OSError):
                return
            self.pings_sent += 1

    async def run(self, stop: asyncio.Event) -> None:
        if self.decoder is None and not await self._resolve(stop):
            return
        self._paths: dict[str, str] = {}
        self.connections = []
        for path in self.plan:
            conn = self.connection_class(self.endpoints.ws + path, f"{self.venue}{path.replace('/', '.')}",
                                         **self.ws_options)
            self._paths[conn.id] = path
            # the socket of the liquidation channel (OKX: /ws/v5/public, Bybit: linear) reports its losses
            carries = any(ch in text for text in self.plan[path] for ch in LIQUIDATION_CHANNELS[self.venue])
            self.connections.append(SupervisedConnection(
                conn, self._subscribe, self.message_handler, stop=stop, timeout=self.timeout,
                timeout_interval=self.timeout_interval, batch_handler=self.handle_batch,
                on_lost=self.sink.on_stream_lost if carries else None))
        try:
            async with asyncio.TaskGroup() as tg:
                for handler in self.connections:
                    tg.create_task(handler.run(), name=f"feed.{self.venue}.{handler.conn.id}")
                await stop.wait()
                for handler in self.connections:
                    await cast(Any, handler).request_stop()  # cryptofeed leaves it unannotated
        finally:
            for task in self._pings.values():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            self._pings.clear()
