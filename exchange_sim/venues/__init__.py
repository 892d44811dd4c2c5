"""Per-venue wire modules for OKX and Bybit (Binance's is frames/hub/rest): each module gives the universe
(`build`), the WebSocket fan-out and subscribe protocol (a Hub subclass) and the REST API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import bybit, bybit_rest, okx, okx_rest


@dataclass(frozen=True)
class Venue:
    name: str
    build: Any          # (n, start_ms) -> list[SymbolSpec]
    base_of: Any        # venue symbol name -> base asset
    hub: Any            # VenueHub subclass
    rest: Any           # REST class taking the Simulator
    error_response: Any  # injected REST fault status -> (status, body, headers)


VENUES = {
    "okx": Venue("okx", okx.build, okx.base_of, okx.OkxHub, okx_rest.OkxRest, okx_rest.error_response),
    "bybit": Venue("bybit", bybit.build, bybit.base_of, bybit.BybitHub, bybit_rest.BybitRest,
                   bybit_rest.error_response),
}
