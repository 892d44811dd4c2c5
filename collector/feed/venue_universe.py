"""OKX's and Bybit's universes from their own instruments endpoints, and each venue's REST request limits.

Why apart from collector.feed.universe (Binance's exchangeInfo): the two venues answer in their own
envelopes (OKX one page, Bybit cursor pages), with sizes per contract that the lean decoders need
(collector.feed.venues); and each venue limits REST on its own, so each gets its own budget: a 429 from
one venue never pauses another's requests. The parsing is the venue modules'; here only the paging and
the I/O, with the fetch passed in (urllib in the coordinator, the worker's RestClient in a feed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from collector.feed.rest_budget import WeightGate
from collector.feed.venues import bybit, okx
from collector.feed.venues.common import VenueSymbol
from collector.pipeline.limits import WeightBudget

# Requests per minute each venue allows one IP on the endpoints the collector calls, from the venues'
# documentation: OKX GET /api/v5/public/instruments 20 requests / 2 s (= 600/min); Bybit 600 requests /
# 5 s per IP on every public endpoint (= 7200/min); Binance USDT-M 2400 weight/min. A budget spends at most
# half of it (WeightBudget's fraction), so a token bucket's burst can never pass the venue's limit.
REST_LIMIT_PER_MIN = {"binance": float(WeightBudget.BINANCE_LIMIT_PER_MIN), "okx": 600.0, "bybit": 7200.0}
REST_FRACTION = 0.5
# Bybit answers a rate-limited IP with HTTP 403 ("access too frequent") and lifts it after 10 minutes.
BYBIT_BAN_MS = 600_000
# Bybit's per-endpoint limits count per second; without its reset header, one second is when it lifts.
BYBIT_RETRY_MS = 1_000
# OKX counts each endpoint's limit over 2-second windows and sends no Retry-After with its 429 (code 50011):
# the refusal lifts within 2 s, where WeightBudget would otherwise wait for the next minute (Binance's rule).
OKX_RETRY_S = 2
# A Bybit universe of ~500 linear contracts is one page of 1000; this bounds a misbehaving cursor.
MAX_PAGES = 20

GetJson = Callable[[str], object]
AsyncGetJson = Callable[[str], Awaitable[object]]


def venue_budget(venue: str, now_ms: float, share: float = 1.0) -> WeightBudget:
    """A fresh REST budget for one venue (requests of weight 1 on OKX and Bybit)."""
    return WeightBudget(now_ms, limit_per_min=REST_LIMIT_PER_MIN[venue], fraction=REST_FRACTION, share=share)


def _page(venue: str, body: object) -> tuple[list[VenueSymbol], str]:
    if not isinstance(body, dict):
        raise ValueError(f"{venue} instruments: the answer is not a JSON object")
    if venue == "okx":
        return okx.parse_instruments(body), ""
    if venue == "bybit":
        return bybit.parse_instruments_page(body)
    raise ValueError(f"no instruments endpoint known for venue {venue!r}")


def _url(venue: str, rest_url: str, cursor: str) -> str:
    return rest_url + (okx.INSTRUMENTS_PATH if venue == "okx" else bybit.instruments_path(cursor))


def fetch_venue_universe(venue: str, rest_url: str, get_json: GetJson) -> list[VenueSymbol]:
    """Every page of the venue's instruments (USDT linear perpetuals in trading state), merged, by name."""
    pages, cursor = [], ""
    for _ in range(MAX_PAGES):
        page, cursor = _page(venue, get_json(_url(venue, rest_url, cursor)))
        pages.append(page)
        if not cursor:
            return bybit.merge_pages(pages)
    raise ValueError(f"{venue} instruments: more than {MAX_PAGES} pages")


async def afetch_venue_universe(venue: str, rest_url: str, get_json: AsyncGetJson) -> list[VenueSymbol]:
    """fetch_venue_universe with an async fetch (a worker's event loop)."""
    pages, cursor = [], ""
    for _ in range(MAX_PAGES):
        page, cursor = _page(venue, await get_json(_url(venue, rest_url, cursor)))
        pages.append(page)
        if not cursor:
            return bybit.merge_pages(pages)
    raise ValueError(f"{venue} instruments: more than {MAX_PAGES} pages")


def note_response(venue: str, gate: WeightGate, status: int, headers: dict[str, str], now_ms: float,
                  body: bytes = b"") -> None:
    """Tell the venue's budget what its server answered. Bybit: HTTP 403 is the IP's ban (10 minutes); an
    HTTP 200 with retCode 10006 ("Too many visits") is the endpoint's limit, which lifts at
    X-Bapi-Limit-Reset-Timestamp (ms). OKX answers 429 (code 50011), paused for its 2 s window."""
    if venue == "okx" and status == 429 and not any(k.lower() == "retry-after" for k in headers):
        headers = {**headers, "Retry-After": str(OKX_RETRY_S)}
    if venue == "bybit" and isinstance(gate, WeightBudget):
        if status == 403:
            gate.pause_until(now_ms + BYBIT_BAN_MS)
        elif b'"retCode":10006' in body.replace(b" ", b""):
            reset = {k.lower(): v for k, v in headers.items()}.get("x-bapi-limit-reset-timestamp", "")
            gate.pause_until(float(reset) if reset.isdigit() else now_ms + BYBIT_RETRY_MS)
    gate.on_response(status, headers, now_ms)
