"""The coordinator's live universe refresh with several venues: OKX's listings and delistings (read from the
OKX simulator's instruments endpoint) replace only OKX's workers, and a venue whose REST fails (Binance's
here) keeps its universe without holding the other's refresh."""

from __future__ import annotations

from helpers import http_get

from collector.config import config_from_dict
from collector.feed.endpoints import Endpoints
from collector.feed.venue_universe import fetch_venue_universe
from collector.runtime.coordinator import Command, Coordinator, Replace
from collector.runtime.shm import StatsBlock
from exchange_sim import SimConfig, launch_subprocess


def test_okx_listing_and_delisting_replace_only_okx_workers() -> None:
    sim = launch_subprocess(SimConfig(venue="okx", symbols=4, rate=10, speed=1, seed=2))
    stats = StatsBlock.create(4, 32)
    try:
        okx = [s.name for s in fetch_venue_universe("okx", sim.rest_url, lambda u: http_get(u)[2])]
        assert len(okx) == 4
        binance = ["AUSDT", "BUSDT"]
        cfg = config_from_dict({"collection": {"exchanges": ["binance", "okx"]}})
        posted: list[Command] = []
        shards = [list(binance), okx[:2], okx[2:]]
        co = Coordinator(cfg, Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1"), "", stats, None, binance + okx,
                         shards, {s: i for i, s in enumerate(binance + okx)}, {}, None, posted.append,
                         venues=["binance", "okx", "okx"], universes={"binance": binance, "okx": okx},
                         venue_endpoints={"okx": Endpoints(sim.rest_url, sim.ws_url)})
        http_get(f"{sim.rest_url}/_sim/list?symbol=ZZZ-USDT-SWAP&price=2.5")
        http_get(f"{sim.rest_url}/_sim/delist?symbol={okx[0]}")
        co.refresh_universe()
    finally:
        stats.close()
        sim.stop()
    # ZZZ goes to the OKX worker left with fewer symbols (worker 1 lost okx[0]); Binance's worker untouched
    assert posted == [Replace(1, sorted([okx[1], "ZZZ-USDT-SWAP"]))]
    assert co.universes == {"binance": binance, "okx": sorted(okx[1:] + ["ZZZ-USDT-SWAP"])}
    assert co.shards[0] == binance and co.worker_venue(1) == "okx"
    assert co.symbol_slots["ZZZ-USDT-SWAP"] == 6
