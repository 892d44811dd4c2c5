"""The collector's feed: cryptofeed's BinanceFutures connections with a lean frame handler.

cryptofeed still owns the connections (connect, subscribe by URL, watchdog, reconnect); only the
per-frame work changes: one msgspec decode into typed structs, then straight into the pipeline,
no Decimal and no object per trade. Open interest is polled by a REST poller that spends weight from
a budget instead of cryptofeed's poll-as-fast-as-possible loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from cryptofeed.connection import AsyncConnection, HTTPPoll
from cryptofeed.defines import CANDLES, FUNDING, LIQUIDATIONS, TRADES

from collector.feed.exchange import CollectorBinanceFutures
from collector.feed.universe import valid_symbol
from collector.feed.wire import (
    AggTrade,
    ForceOrder,
    Kline,
    MarkPrice,
    OpenInterest,
    frame_decoder,
    open_interest_decoder,
)
from collector.runtime.stopping import sleep_unless_stopped

log = logging.getLogger(__name__)

# Binance's documented request weight of GET /fapi/v1/openInterest.
OPEN_INTEREST_WEIGHT = 1


class EventSink(Protocol):
    """Where decoded events go (the pipeline). Called on the event loop; must not block."""

    def on_trade(self, t: AggTrade, receipt: float) -> None: ...
    def on_mark_price(self, m: MarkPrice, receipt: float) -> None: ...
    def on_liquidation(self, f: ForceOrder, receipt: float) -> None: ...
    def on_kline(self, k: Kline, receipt: float) -> None: ...
    def on_open_interest(self, oi: OpenInterest, receipt: float) -> None: ...
    def on_bad_frame(self, kind: str) -> None: ...


class WeightGate(Protocol):
    """A REST weight budget: how long to wait before `weight` may be spent, and what the server said."""

    def wait_time(self, weight: float, now_ms: float) -> float: ...  # ms
    def try_acquire(self, weight: float, now_ms: float) -> bool: ...
    def on_response(self, status: int, headers: dict[str, str], now_ms: float) -> None: ...


# Open interest is polled this fraction of `interval` after the previous poll of the symbol, not a
# whole interval: the slack (60 s at the default 300 s) is what lets a worker's successor, which
# resumes each symbol's schedule from its checkpoint (collector.runtime.checkpoints), take over after a crash
# and still poll every symbol within every `interval`. Costs 25% more weight: ~125/min for 500 symbols.
OI_POLL_FRACTION = 0.8
# A poll that failed (network error, 5xx, 429) is tried again this much later rather than a period later,
# so one failure does not cost the symbol its window; a 429/418 also pauses the weight gate meanwhile.
OI_RETRY_S = 5.0


class PollPositions:
    """When each symbol's open interest is next due: one period after its last poll.

    Pure: times are passed in. Symbols never polled (a fresh start) are spread evenly over the first
    period, which keeps the weight flat; a symbol restored from a checkpoint is due one period after
    the poll its predecessor made, so a restart does not start again from the first symbol.
    """

    def __init__(self, symbols: list[str], period_ms: int, start_ms: int) -> None:
        n = max(len(symbols), 1)
        self.period_ms = period_ms
        self._first = {s: start_ms + i * period_ms // n for i, s in enumerate(symbols)}
        self.last: dict[str, int] = {}  # symbol -> wall ms of its last request

    def restore(self, symbol: str, polled_ms: int) -> None:
        """A predecessor's last poll of `symbol` (from its checkpoint)."""
        if symbol in self._first and polled_ms > self.last.get(symbol, 0):
            self.last[symbol] = polled_ms

    def due_ms(self, symbol: str) -> int:
        last = self.last.get(symbol)
        return self._first[symbol] if last is None else last + self.period_ms

    def next(self) -> tuple[str, int] | None:
        """(symbol, due ms) of the symbol due first; overdue ones come oldest first."""
        if not self._first:
            return None
        sym = min(self._first, key=self.due_ms)
        return sym, self.due_ms(sym)

    def polled(self, symbol: str, now_ms: int) -> None:
        self.last[symbol] = now_ms

    def failed(self, symbol: str, now_ms: int, retry_ms: int) -> None:
        """The poll made at now_ms gave nothing: due again retry_ms later."""
        self.last[symbol] = now_ms + retry_ms - self.period_ms


def poll_positions(symbols: list[str], interval: float) -> PollPositions:
    """The open-interest schedule of `symbols` polled every `interval` seconds, starting now."""
    return PollPositions(symbols, int(interval * OI_POLL_FRACTION * 1000), int(time.time() * 1000))


class OpenInterestPoll(HTTPPoll):
    """Polls /fapi/v1/openInterest for each symbol every OI_POLL_FRACTION * `interval`, within a budget.

    cryptofeed's HTTPPoll requests every symbol back to back and then sleeps, and on a 429 it waits a
    fixed time regardless of Retry-After; here each request first takes weight from the gate, and every
    answer (429 Retry-After, 418 ban, used-weight header) is reported back to it. Which symbol is due
    when is `positions` (PollPositions), which a successor restores before `ready` is set.
    """

    def __init__(self, urls: list[str], conn_id: str, interval: float, gate: WeightGate,
                 stop: asyncio.Event, symbols: list[str] | None = None,
                 positions: PollPositions | None = None, ready: asyncio.Event | None = None) -> None:
        super().__init__(urls, conn_id, delay=interval, sleep=interval)
        self.interval = interval
        self.gate = gate
        self.stop = stop
        self.failures = 0
        self.urls = dict(zip(symbols or [str(i) for i in range(len(urls))], urls, strict=True))
        self.positions = positions or poll_positions(list(self.urls), interval)
        self.ready = ready

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when stopping."""
        return await sleep_unless_stopped(self.stop, seconds)

    async def read(self, header: dict | None = None):  # type: ignore[override]
        if self.ready is not None:  # a successor first restores the positions (collector.runtime.checkpoints)
            waiter = asyncio.ensure_future(self.ready.wait())
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({waiter, stopping}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopping.cancel()
        while not self.stop.is_set():
            nxt = self.positions.next()
            if nxt is None:
                return
            sym, due_ms = nxt
            if await self._pause(due_ms / 1000 - time.time()):
                return
            while (wait_ms := self.gate.wait_time(OPEN_INTEREST_WEIGHT, time.time() * 1000)) > 0:
                if await self._pause(wait_ms / 1000):
                    return
            if not self.gate.try_acquire(OPEN_INTEREST_WEIGHT, time.time() * 1000):
                continue
            self.positions.polled(sym, int(time.time() * 1000))
            url = self.urls[sym]
            if not self.is_open:
                await self._open()
            try:
                async with self.conn.get(url) as resp:
                    body = await resp.text()
                    self.gate.on_response(resp.status, dict(resp.headers), time.time() * 1000)
            except (TimeoutError, OSError, Exception) as e:  # noqa: B014 - log every transport failure
                self.failures += 1
                self.positions.failed(sym, int(time.time() * 1000), int(OI_RETRY_S * 1000))
                log.warning("%s: open interest request failed: %s: %s", self.id, type(e).__name__, e)
                continue
            self.received += 1
            self.last_message = time.time()
            if resp.status == 200:
                yield body
            else:
                self.failures += 1
                self.positions.failed(sym, int(time.time() * 1000), int(OI_RETRY_S * 1000))
                log.warning("%s: open interest answered %d: %s", self.id, resp.status, body[:200])


class FastBinanceFutures(CollectorBinanceFutures):
    """BinanceFutures whose frames go to an EventSink as msgspec structs.

    Construct with `sink=`, and optionally `oi_symbols`, `oi_interval`, `oi_gate`, `oi_positions`,
    `oi_ready` for open interest.
    """

    def __init__(self, *args: object, sink: EventSink, oi_symbols: list[str] | None = None,
                 oi_interval: float = 300.0, oi_gate: WeightGate | None = None,
                 stop_event: asyncio.Event | None = None, oi_positions: PollPositions | None = None,
                 oi_ready: asyncio.Event | None = None, **kwargs: object) -> None:
        self.sink = sink
        self._oi_symbols = [s for s in (oi_symbols or []) if valid_symbol(s)]
        self._oi_positions = oi_positions
        self._oi_ready = oi_ready
        self._oi_interval = oi_interval
        self._oi_gate = oi_gate
        self._oi_stop = stop_event or asyncio.Event()
        self._dispatch: dict[type, Callable[[object, float], None]] = {
            AggTrade: sink.on_trade,  # type: ignore[dict-item]
            MarkPrice: sink.on_mark_price,  # type: ignore[dict-item]
            ForceOrder: sink.on_liquidation,  # type: ignore[dict-item]
            Kline: sink.on_kline,  # type: ignore[dict-item]
        }
        super().__init__(*args, **kwargs)

    def _connect_rest(self) -> list:
        if not self._oi_symbols or self._oi_gate is None:
            return []
        route = self.rest_endpoints[0].route("open_interest")
        poll = OpenInterestPoll([route.format(s) for s in self._oi_symbols], self.id, self._oi_interval,
                                self._oi_gate, self._oi_stop, symbols=self._oi_symbols,
                                positions=self._oi_positions, ready=self._oi_ready)
        return [(poll, self.subscribe, self.message_handler)]

    async def message_handler(self, msg: str, conn: AsyncConnection, timestamp: float) -> None:
        # The hot path: one decode, one dict lookup, one call. Errors are counted, never raised,
        # so a bad frame cannot make cryptofeed drop the connection and its hundreds of streams.
        try:
            frame = frame_decoder.decode(msg)
        except msgspec.ValidationError as e:
            if isinstance(conn, OpenInterestPoll):
                return self._open_interest(msg, conn, timestamp)
            self._bad(msg, conn, "unknown_event" if "Invalid value" in str(e) else "invalid_frame", e)
            return
        except msgspec.DecodeError as e:
            self._bad(msg, conn, "malformed_json", e)
            return
        data = frame.data
        try:
            if type(data) is list:
                on_mark = self.sink.on_mark_price
                for m in data:
                    on_mark(m, timestamp)
            else:
                self._dispatch[type(data)](data, timestamp)
        except Exception as e:
            self._bad(msg, conn, "handler_error", e)

    def set_sink(self, sink: EventSink) -> None:
        """Send frames to another sink from now on (a successor's hand-over, collector.runtime.checkpoints)."""
        self.sink = sink
        self._dispatch = {AggTrade: sink.on_trade, MarkPrice: sink.on_mark_price,  # type: ignore[dict-item]
                          ForceOrder: sink.on_liquidation, Kline: sink.on_kline}  # type: ignore[dict-item]

    def _open_interest(self, msg: str, conn: AsyncConnection, timestamp: float) -> None:
        try:
            self.sink.on_open_interest(open_interest_decoder.decode(msg), timestamp)
        except Exception as e:
            self._bad(msg, conn, "invalid_open_interest", e)

    def _bad(self, msg: str, conn: AsyncConnection, kind: str, exc: BaseException) -> None:
        self.frame_errors.record(kind, msg, conn.uuid, exc)
        self.sink.on_bad_frame(kind)


def subscription_channels(data_types: list[str]) -> list[str]:
    """cryptofeed channels needed for the configured data types (open interest is polled separately)."""
    channels = []
    if "trades" in data_types:
        channels.append(TRADES)
    if "funding" in data_types:
        channels.append(FUNDING)
    if "liquidations" in data_types:
        channels.append(LIQUIDATIONS)
    if any(t.startswith("candles_") for t in data_types):
        channels.append(CANDLES)
    return channels
