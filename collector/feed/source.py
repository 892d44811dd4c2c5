"""The collector's feed: cryptofeed's BinanceFutures connections with a lean frame handler.

cryptofeed still owns the connections (connect, subscribe by URL, watchdog, reconnect; see
collector.feed.cryptofeed_adapter); only the per-frame work changes: one msgspec decode into typed
structs, then straight into the pipeline, no Decimal and no object per trade. Open interest is polled by
collector.feed.open_interest, within a weight budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from collector.feed.cryptofeed_adapter import CANDLES, FUNDING, LIQUIDATIONS, TRADES, AsyncConnection
from collector.feed.cryptofeed_feed import CollectorBinanceFutures
from collector.feed.events import EventSink
from collector.feed.frame_loop import handle_frames
from collector.feed.open_interest import OpenInterestPoll, PollPositions
from collector.feed.rest_budget import WeightGate
from collector.feed.wire import (
    AggTrade,
    ForceOrder,
    Kline,
    MarkPrice,
    frame_decoder,
    open_interest_decoder,
)
from collector.runtime.stopping import StopEvent
from collector.symbols import valid_symbol


class FastBinanceFutures(CollectorBinanceFutures):
    """BinanceFutures whose frames go to an EventSink as msgspec structs.

    Construct with `sink=`, and optionally `oi_symbols`, `oi_interval`, `oi_gate`, `oi_positions`,
    `oi_ready` for open interest.
    """

    def __init__(self, *args: Any, sink: EventSink, oi_symbols: list[str] | None = None,
                 oi_interval: float = 300.0, oi_gate: WeightGate | None = None,
                 stop_event: asyncio.Event | None = None, oi_positions: PollPositions | None = None,
                 oi_ready: asyncio.Event | None = None, **kwargs: Any) -> None:
        self.sink = sink
        self._oi_symbols = [s for s in (oi_symbols or []) if valid_symbol(s)]
        self._oi_positions = oi_positions
        self._oi_ready = oi_ready
        self._oi_interval = oi_interval
        self._oi_gate = oi_gate
        self._oi_stop = stop_event or StopEvent()
        self._dispatch = _dispatch(sink)
        super().__init__(*args, **kwargs)

    def symbols_gate(self) -> WeightGate | None:
        """exchangeInfo is fetched within the workers' shared REST budget (the open-interest poll's)."""
        return self._oi_gate

    def _connect_rest(self) -> list[tuple[AsyncConnection, Any, Any]]:
        if not self._oi_symbols or self._oi_gate is None:
            return []
        route = self.rest_route("open_interest")
        poll = OpenInterestPoll([route.format(s) for s in self._oi_symbols], self.id, self._oi_interval,
                                self._oi_gate, self._oi_stop, self.rest, symbols=self._oi_symbols,
                                positions=self._oi_positions, ready=self._oi_ready)
        return [(poll, self.subscribe, self.message_handler)]

    def handle_batch(self, messages: Sequence[str | bytes], conn: AsyncConnection, timestamp: float) -> None:
        """The hot path: every frame of one socket read, in order, with that read's receipt time.

        Called once per read by SupervisedConnection (no coroutine per frame); the loop is
        collector.feed.frame_loop's (compiled with the pipeline), errors counted per frame and never raised."""
        handle_frames(messages, timestamp, self._dispatch, self.sink.on_mark_price,
                      lambda msg, kind, exc: self._bad(msg, conn, kind, exc))

    async def message_handler(self, msg: str | bytes, conn: AsyncConnection, timestamp: float) -> None:
        """One message: connections without batches, and the open-interest poll's REST answers (which are
        not stream frames: what fails as a frame there is tried as an open-interest answer)."""
        if isinstance(conn, OpenInterestPoll):
            try:
                frame_decoder.decode(msg)
            except msgspec.ValidationError:
                return self._on_open_interest(msg, conn, timestamp)
            except msgspec.DecodeError:
                pass  # counted as malformed_json by handle_batch, as on any connection
        self.handle_batch((msg,), conn, timestamp)
        return None

    def stream_lost(self) -> None:
        """The connection carrying liquidations ended: the sink records the hole (collector.feed.events)."""
        self.sink.on_stream_lost()

    def set_sink(self, sink: EventSink) -> None:
        """Send frames to another sink from now on (a successor's hand-over, collector.runtime.checkpoints)."""
        self.sink = sink
        self._dispatch = _dispatch(sink)

    def _on_open_interest(self, msg: str | bytes, conn: AsyncConnection, timestamp: float) -> None:
        try:
            self.sink.on_open_interest(open_interest_decoder.decode(msg), timestamp)
        except Exception as e:
            self._bad(msg, conn, "invalid_open_interest", e)

    def _bad(self, msg: str | bytes, conn: AsyncConnection, kind: str, exc: BaseException) -> None:
        self.frame_errors.record(kind, msg, conn.uuid, exc)
        self.sink.on_bad_frame(kind)


def _dispatch(sink: EventSink) -> dict[type, Callable[[Any, float], None]]:
    """Event type -> the sink's entry point (mark prices arrive as a list, handled apart)."""
    return {AggTrade: sink.on_trade, MarkPrice: sink.on_mark_price, ForceOrder: sink.on_liquidation,
            Kline: sink.on_kline}


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
