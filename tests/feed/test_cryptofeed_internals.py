"""Fails when the cryptofeed internals collector/feed/cryptofeed_adapter.py and cryptofeed_feed.py rely on move.

The adapter drives cryptofeed below its public surface; pyproject pins the release. Upgrading the pin
means reading what changed in each item asserted here and adapting the adapter (both modules), then this test.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any

from cryptofeed.connection import AsyncConnection, HTTPAsyncConn, HTTPPoll, WSAsyncConn
from cryptofeed.connection_handler import ConnectionHandler
from cryptofeed.exchange import Exchange
from cryptofeed.exchanges.binance import BinanceBase
from cryptofeed.exchanges.binance_futures import BinanceFutures
from cryptofeed.feed import Feed
from websockets.asyncio.connection import Connection as WebsocketsConnection
from websockets.asyncio.messages import Assembler

from collector.feed import cryptofeed_adapter


def _params(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


def test_the_pinned_release_is_installed() -> None:
    assert version("cryptofeed") == cryptofeed_adapter.CRYPTOFEED_VERSION == "3.0.1"


def test_connection_handler_constructor_and_loop() -> None:
    # SupervisedConnection passes these by keyword and overrides run/_watcher/_handler.
    assert _params(ConnectionHandler.__init__) == [
        "self", "conn", "subscribe", "handler", "retries", "timeout", "timeout_interval", "exceptions",
        "log_on_error", "start_delay", "keepalive", "keepalive_interval"]
    for name in ("run", "_watcher", "_handler", "request_stop", "_record_watchdog_trip"):
        assert callable(getattr(ConnectionHandler, name)), name
    assert _params(ConnectionHandler._handler) == ["self", "connection", "handler"]
    source = inspect.getsource(ConnectionHandler.__init__)
    for attr in ("self.conn", "self.subscribe", "self.handler", "self.timeout", "self.timeout_interval",
                 "self.running", "self.start_delay"):
        assert f"{attr} =" in source, attr


def test_feed_subscription_hooks() -> None:
    # CollectorFeed._prepare sets _init_symbols after resolving names, then calls _build_subscription,
    # which must read _init_symbols/_init_channels; _run, connect and _connect_rest are overridden.
    init = inspect.getsource(Feed.__init__)
    assert "self._init_symbols = symbols" in init and "self._init_channels = channels" in init
    assert "self.http_conn = HTTPAsyncConn(" in init
    build = inspect.getsource(Feed._build_subscription)
    assert "self._init_symbols" in build and "self._init_channels" in build
    assert _params(Feed._build_subscription) == ["self"]
    for name in ("_setup", "_run", "connect", "_connect_rest", "_address", "subscribe", "message_handler"):
        assert callable(getattr(Feed, name)), name
    assert _params(Exchange.load_symbols) == ["conn", "refresh", "cache_ttl"]  # a classmethod: no cls
    assert callable(Exchange._apply_symbol_mapping)
    assert "exchange_symbol_mapping" in inspect.getsource(Exchange._apply_symbol_mapping)
    # Binance's subscribe must still treat pollers (HTTPPoll) apart; our feed defines no _open_interest
    # of cryptofeed's name (BinanceBase has one, with another meaning).
    assert "HTTPPoll" in inspect.getsource(BinanceBase.subscribe)
    assert BinanceFutures.websocket_endpoints[0].options is not None


def test_connection_internals() -> None:
    assert _params(AsyncConnection.__init__) == ["self", "conn_id", "subscription"]
    assert isinstance(AsyncConnection.conn_count, int)
    assert AsyncConnection.raw_data_callback is None
    for name in ("_reset_counters", "_open", "close", "connect", "stats", "record_watchdog_trip"):
        assert hasattr(AsyncConnection, name), name
    reset = inspect.getsource(AsyncConnection._reset_counters)
    assert "self.received = 0" in reset and "self.last_message = None" in reset
    assert _params(HTTPAsyncConn.__init__) == ["self", "conn_id", "proxy"]
    assert _params(HTTPPoll.__init__) == ["self", "address", "conn_id", "delay", "sleep", "proxy"]
    assert _params(HTTPPoll.read) == ["self", "header"]
    assert "self.conn.closed" in inspect.getsource(HTTPAsyncConn.is_open.fget)
    assert _params(WSAsyncConn.__init__) == ["self", "address", "conn_id", "subscription", "kwargs"]
    # WSConnection routes websockets' own flow control through its back-pressure flag.
    ws_init = inspect.getsource(WebsocketsConnection.__init__)
    assert "self.recv_messages" in ws_init
    assembler = inspect.getsource(Assembler.__init__)
    assert "self.resume = resume" in assembler and "self.paused = False" in assembler
