"""The coordinator's live universe refresh with several venues: OKX's listings and delistings (read from the
OKX simulator's instruments endpoint) replace only OKX's workers, and a venue whose REST fails (Binance's
here) keeps its universe without holding the other's refresh."""

from __future__ import annotations

from helpers import http_get

from collector.config import config_from_dict
from collector.feed.endpoints import Endpoints
from collector.feed.venue_universe import fetch_venue_universe
from collector.pipeline.tiers import TierAssignment
from collector.runtime.coordinator import Command, Coordinator, Replace
from collector.runtime.shm import StatsBlock
from collector.runtime.symbol_keys import key
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
        keys = binance + [key("okx", s) for s in okx]
        co = Coordinator(cfg, Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1"), "", stats, None, keys,
                         shards, {s: i for i, s in enumerate(keys)}, {}, None, posted.append,
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
    assert co.symbol_slots["okx:ZZZ-USDT-SWAP"] == 6
    assert co.worker_inputs(1)[3] == {okx[1]: 3, "ZZZ-USDT-SWAP": 6}  # the worker sees OKX's own names


def test_a_name_two_venues_share_reaches_each_worker_with_its_own_state() -> None:
    """Binance's and Bybit's BTCUSDT: each worker gets its venue's tier and statistics slot, by plain name."""
    cfg = config_from_dict({"collection": {"exchanges": ["binance", "bybit"]}})
    stats = StatsBlock.create(3, 8)
    try:
        ep = Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1")
        universe = ["BTCUSDT", "ETHUSDT", "bybit:BTCUSDT", "bybit:SOLUSDT"]
        tiers = {"BTCUSDT": TierAssignment(0, 1e6, 5e5, 0.9), "bybit:BTCUSDT": TierAssignment(3, 1e3, 5e2, 0.1)}
        co = Coordinator(cfg, ep, "", stats, None, universe, [["BTCUSDT", "ETHUSDT"], ["BTCUSDT", "SOLUSDT"]],
                         {s: i for i, s in enumerate(universe)}, tiers, 1, lambda _: None,
                         venues=["binance", "bybit"],
                         universes={"binance": ["BTCUSDT", "ETHUSDT"], "bybit": ["BTCUSDT", "SOLUSDT"]})
        assert co.worker_inputs(0) == (["BTCUSDT", "ETHUSDT"], {"BTCUSDT": tiers["BTCUSDT"]}, False,
                                       {"BTCUSDT": 0, "ETHUSDT": 1})
        assert co.worker_inputs(1) == (["BTCUSDT", "SOLUSDT"], {"BTCUSDT": tiers["bybit:BTCUSDT"]}, False,
                                       {"BTCUSDT": 2, "SOLUSDT": 3})
    finally:
        stats.close()
