"""Where each venue is: its REST and WebSocket base URLs, checked once, and the named presets.

Why apart from the connections: the config, the arbiter and the workers all need the URLs, and none of
them should import cryptofeed for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


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


# The venues the collector speaks (collection.exchanges), and the public endpoints of each: OKX's REST host
# and WebSocket host (its feed appends /ws/v5/public and /ws/v5/business), Bybit's (its feed appends
# /v5/public/linear).
VENUES = ("binance", "okx", "bybit")
VENUE_DEFAULTS: dict[str, Endpoints] = {
    "binance": PRESETS["binance"],
    "okx": Endpoints("https://www.okx.com", "wss://ws.okx.com:8443"),
    "bybit": Endpoints("https://api.bybit.com", "wss://stream.bybit.com"),
}
