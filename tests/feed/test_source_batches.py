"""The lean feed's whole-read handler (FastBinanceFutures.handle_batch): every frame of a socket read in one
call, bad frames counted by kind and skipped without losing the rest of the read.

Pure: the feed object is built but never connected; frames are Binance combined-stream text as the
simulator and the exchange send it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from cryptofeed.defines import TRADES

from collector.feed.cryptofeed_feed import bind_feed_class
from collector.feed.endpoints import Endpoints
from collector.feed.open_interest import OpenInterestPoll
from collector.feed.rest_client import RestClient
from collector.feed.source import FastBinanceFutures
from collector.feed.wire import AggTrade, ForceOrder, Kline, MarkPrice, OpenInterest
from collector.pipeline.limits import WeightBudget


def trade(symbol: str, a: int) -> str:
    return (f'{{"stream":"{symbol.lower()}@aggTrade","data":{{"e":"aggTrade","E":1764000000000,"a":{a},'
            f'"s":"{symbol}","p":"91234.50","q":"0.125","f":{a * 2},"l":{a * 2 + 1},"T":1764000000000,"m":true}}}}')


MARKS = ('{"stream":"!markPrice@arr","data":[{"e":"markPriceUpdate","E":1764000000000,"s":"BTCUSDT","p":"91234.5",'
         '"r":"0.0001","T":1764003600000},{"e":"markPriceUpdate","E":1764000000000,"s":"ETHUSDT","p":"3012.1"}]}')


class RecordingSink:
    """An EventSink that records what arrives, in order; a trade of BOOMUSDT makes it raise."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []
        self.bad: list[str] = []

    def on_trade(self, t: AggTrade, receipt: float) -> None:
        if t.s == "BOOMUSDT":
            raise RuntimeError("a failing sink")
        self.events.append(("trade", f"{t.s}:{t.a}", receipt))

    def on_mark_price(self, m: MarkPrice, receipt: float) -> None:
        self.events.append(("mark", m.s, receipt))

    def on_liquidation(self, f: ForceOrder, receipt: float) -> None:
        self.events.append(("liquidation", f.o.s, receipt))

    def on_kline(self, k: Kline, receipt: float) -> None:
        self.events.append(("kline", k.s, receipt))

    def on_open_interest(self, oi: OpenInterest, receipt: float) -> None:
        self.events.append(("open_interest", oi.symbol, receipt))

    def on_bad_frame(self, kind: str) -> None:
        self.bad.append(kind)

    def on_stream_lost(self) -> None:
        self.lost = getattr(self, "lost", 0) + 1  # a connection carrying liquidations ended


class Conn:
    uuid = "test-conn"


@pytest.fixture
def feed() -> Iterator[FastBinanceFutures]:
    cls = bind_feed_class(Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1"), FastBinanceFutures)
    rest = RestClient()
    yield cls(exchange_symbols=["BTCUSDT"], channels=[TRADES], sink=RecordingSink(), rest=rest,
              oi_symbols=["BTCUSDT"], oi_gate=WeightBudget(0.0))
    asyncio.run(rest.close())


def sink_of(feed: FastBinanceFutures) -> RecordingSink:
    assert isinstance(feed.sink, RecordingSink)
    return feed.sink


def test_a_read_is_dispatched_in_order_with_its_receipt_time(feed: FastBinanceFutures) -> None:
    feed.handle_batch([trade("BTCUSDT", 1), MARKS, trade("ETHUSDT", 7).encode(), trade("BTCUSDT", 2)], Conn(), 12.5)
    assert sink_of(feed).events == [("trade", "BTCUSDT:1", 12.5), ("mark", "BTCUSDT", 12.5), ("mark", "ETHUSDT", 12.5),
                                    ("trade", "ETHUSDT:7", 12.5), ("trade", "BTCUSDT:2", 12.5)]
    assert sink_of(feed).bad == [] and feed.frame_errors.total == 0


def test_bad_frames_are_counted_by_kind_and_the_rest_of_the_read_is_kept(feed: FastBinanceFutures) -> None:
    frames = [
        trade("BTCUSDT", 1),
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade",',  # cut off
        '{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT"}}',  # an event we never asked for
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT"}}',  # required fields missing
        trade("BOOMUSDT", 5),  # decodes, but the sink fails on it
        b"\xff\xfe not json",
        trade("BTCUSDT", 2),
    ]
    feed.handle_batch(frames, Conn(), 1.0)
    sink = sink_of(feed)
    assert [e[1] for e in sink.events] == ["BTCUSDT:1", "BTCUSDT:2"]
    assert sink.bad == ["malformed_json", "unknown_event", "invalid_frame", "handler_error", "malformed_json"]
    assert dict(feed.frame_errors.counts) == {"malformed_json": 2, "unknown_event": 1, "invalid_frame": 1,
                                              "handler_error": 1}


def test_one_message_at_a_time_takes_the_same_path(feed: FastBinanceFutures) -> None:
    """message_handler (stock cryptofeed's loop, connections without batches) handles a frame as a read of one."""
    asyncio.run(feed.message_handler(trade("BTCUSDT", 3), Conn(), 2.0))
    asyncio.run(feed.message_handler("{nope", Conn(), 2.0))
    assert sink_of(feed).events == [("trade", "BTCUSDT:3", 2.0)]
    assert sink_of(feed).bad == ["malformed_json"]


def test_open_interest_answers_still_reach_the_sink(feed: FastBinanceFutures) -> None:
    ((poll, _, _),) = feed._connect_rest()
    assert isinstance(poll, OpenInterestPoll)
    answer = '{"symbol":"BTCUSDT","openInterest":"10659.509","time":1764000000000}'
    asyncio.run(feed.message_handler(answer, poll, 3.0))
    asyncio.run(feed.message_handler('{"symbol":"BTCUSDT"}', poll, 3.0))  # not an answer we can use
    asyncio.run(feed.message_handler("{nope", poll, 3.0))
    assert sink_of(feed).events == [("open_interest", "BTCUSDT", 3.0)]
    assert sink_of(feed).bad == ["invalid_open_interest", "malformed_json"]
