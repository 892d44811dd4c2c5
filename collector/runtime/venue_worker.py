"""What a worker of OKX or Bybit needs beyond Binance's: its feed (collector.feed.venue_feed) with the
instruments loaded through the worker's REST client and its venue's own budget.

Why apart from collector.runtime.worker: that module wires Binance's feed, pipeline, backfill and link; the
other venues differ only in how the feed is made, which REST budget it spends and where the REST
repairs find OKX's contract sizes, and this keeps the difference in one place.
"""

from __future__ import annotations

import asyncio
import json
import time

from collector.feed.cryptofeed_adapter import ws_connection_class
from collector.feed.events import EventSink
from collector.feed.rest_budget import WeightGate
from collector.feed.rest_client import RestClient
from collector.feed.venue_feed import VenueFeed
from collector.feed.venue_universe import afetch_venue_universe, note_response, venue_budget
from collector.feed.venues.common import ContractSize, VenueSymbol
from collector.pipeline.limits import WeightBudget
from collector.runtime.worker_spec import WorkerSpec

# One instruments page is one request on both venues (their limits count requests, not weights).
INSTRUMENTS_WEIGHT = 1.0
# How much of a refused answer's body goes into the log line: the venue's error code and message fit.
REFUSAL_LOGGED_BYTES = 200


class VenueContracts:
    """OKX's contract sizes for the REST repairs (collector.feed.venue_history), read from the worker's
    VenueFeed once it has loaded its instruments: the Backfiller is made before the feed, and a trade
    can only be repaired after the feed decoded one."""

    def __init__(self) -> None:
        self.feed: object = None  # the worker's feed, set when it is built

    def of(self, name: str) -> ContractSize | None:
        return self.feed.contract(name) if isinstance(self.feed, VenueFeed) else None


def venue_rest_budget(spec: WorkerSpec) -> WeightBudget:
    """This worker's own budget of its venue's REST limit (collector.feed.venue_universe.REST_LIMIT_PER_MIN)."""
    return venue_budget(spec.venue, time.time() * 1000, share=spec.rest_weight_share)


def build_venue_feed(spec: WorkerSpec, sink: EventSink, rest: RestClient, budget: WeightGate) -> VenueFeed:
    """The worker's VenueFeed for spec.symbols; its instruments are loaded when it runs, within `budget`."""
    cfg = spec.config

    async def get_json(url: str) -> object:
        while (wait := budget.wait_time(INSTRUMENTS_WEIGHT, time.time() * 1000)) > 0:
            await asyncio.sleep(min(wait, 60_000) / 1000)
        budget.try_acquire(INSTRUMENTS_WEIGHT, time.time() * 1000)
        status, headers, body = await rest.get(url)
        note_response(spec.venue, budget, status, headers, time.time() * 1000, body)
        if status != 200:  # the venue's own words (OKX 50011, Bybit "access too frequent") reach the log
            raise ValueError(f"HTTP {status} from {url}: {body[:REFUSAL_LOGGED_BYTES].decode('utf-8', 'replace')}")
        answer = json.loads(body)
        if isinstance(answer, dict) and answer.get("retCode", 0) != 0:  # Bybit refuses with HTTP 200 (10006)
            raise ValueError(f"retCode {answer.get('retCode')} from {url}: {answer.get('retMsg')}")
        return answer

    async def load() -> list[VenueSymbol]:
        return await afetch_venue_universe(spec.venue, spec.endpoints.rest, get_json)

    return VenueFeed(spec.venue, spec.endpoints, spec.symbols, list(cfg.collection.data_types), sink,
                     ws_connection_class(cfg.exchange.ws_client), load=load,
                     oi_interval_s=cfg.filters.open_interest.interval_s, timeout=cfg.exchange.silent_timeout_s,
                     timeout_interval=max(1.0, cfg.exchange.silent_timeout_s / 4))
