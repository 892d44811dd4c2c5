"""The split of workers across venues and of each venue's symbols across its workers (pure)."""

from __future__ import annotations

from collector.runtime.venue_shards import allocate_workers, reassign_venue, shard_venues


def test_workers_follow_symbol_counts_at_least_one_each() -> None:
    assert allocate_workers({"binance": 496, "okx": 250, "bybit": 400}, 8) == {"binance": 3, "okx": 2, "bybit": 3}
    assert allocate_workers({"binance": 496}, 8) == {"binance": 8}
    assert allocate_workers({"binance": 496, "okx": 5, "bybit": 4}, 3) == {"binance": 1, "okx": 1, "bybit": 1}
    assert allocate_workers({"binance": 496, "okx": 5}, 1) == {"binance": 1, "okx": 1}  # one per venue at least
    assert allocate_workers({"binance": 2, "okx": 1}, 8) == {"binance": 2, "okx": 1}   # never more than symbols
    assert allocate_workers({"binance": 100, "okx": 100}, 3) == {"binance": 2, "okx": 1}  # tie: listed first
    assert allocate_workers({"binance": 10, "okx": 0}, 4) == {"binance": 4}


def test_allocation_minimises_the_largest_shard() -> None:
    counts = {"binance": 496, "okx": 250, "bybit": 400}
    got = allocate_workers(counts, 8)
    best = min(max(-(-counts[v] // n) for v, n in zip(counts, split, strict=True))
               for split in [(a, b, 8 - a - b) for a in range(1, 7) for b in range(1, 8 - a) if 8 - a - b >= 1])
    assert max(-(-counts[v] // got[v]) for v in counts) == best


def test_shard_venues_keeps_each_worker_on_one_venue() -> None:
    universes = {"binance": [f"B{i:03d}USDT" for i in range(10)], "okx": [f"O{i}-USDT-SWAP" for i in range(5)]}
    shards, venues = shard_venues(universes, 3, {"binance": {"B000USDT": 9.0}})
    assert venues == ["binance", "binance", "okx"]
    assert sorted(s for sh, v in zip(shards, venues, strict=True) if v == "binance" for s in sh) == universes["binance"]
    assert shards[2] == universes["okx"]
    assert sorted(len(s) for s in shards[:2]) == [5, 5]


def test_listings_stay_on_their_venue() -> None:
    shards = [["AUSDT", "BUSDT"], ["CUSDT"], ["A-USDT-SWAP"]]
    venues = ["binance", "binance", "okx"]
    out, added, removed = reassign_venue(shards, venues, "okx", ["A-USDT-SWAP"], ["B-USDT-SWAP", "C-USDT-SWAP"])
    assert out == [["AUSDT", "BUSDT"], ["CUSDT"], ["B-USDT-SWAP", "C-USDT-SWAP"]]
    assert (added, removed) == (["B-USDT-SWAP", "C-USDT-SWAP"], {"A-USDT-SWAP"})
    out, added, _ = reassign_venue(shards, venues, "binance", ["AUSDT", "BUSDT", "CUSDT"],
                                   ["AUSDT", "BUSDT", "CUSDT", "DUSDT"])
    assert out == [["AUSDT", "BUSDT"], ["CUSDT", "DUSDT"], ["A-USDT-SWAP"]] and added == ["DUSDT"]


def test_per_symbol_state_is_split_by_venue_and_a_delisted_symbol_dropped() -> None:
    from collector.runtime.venue_shards import by_venue

    universes = {"binance": ["BTCUSDT", "ETHUSDT"], "okx": ["BTC-USDT-SWAP"]}
    state = {"BTCUSDT": 1, "okx:BTC-USDT-SWAP": 2, "GONEUSDT": 3}
    assert by_venue(state, universes) == {"binance": {"BTCUSDT": 1}, "okx": {"BTC-USDT-SWAP": 2}}


def test_a_name_two_venues_share_keeps_each_venues_state() -> None:
    """Binance and Bybit both list BTCUSDT: each venue's part holds its own value, by its own name."""
    from collector.runtime.venue_shards import by_venue

    universes = {"binance": ["BTCUSDT", "ETHUSDT"], "bybit": ["BTCUSDT", "SOLUSDT"]}
    state = {"BTCUSDT": "binance's", "ETHUSDT": "eth", "bybit:BTCUSDT": "bybit's"}
    assert by_venue(state, universes) == {"binance": {"BTCUSDT": "binance's", "ETHUSDT": "eth"},
                                          "bybit": {"BTCUSDT": "bybit's"}}


def test_tiers_are_ranked_within_each_venue() -> None:
    """A venue's busiest symbol gets tier 0 even when another venue's symbols all trade more."""
    from collector.pipeline.activity import Summary
    from collector.pipeline.tiers import TierParams
    from collector.runtime.venue_shards import tiers_per_venue

    def busy(x: float) -> Summary:
        return Summary(volume=x, count=int(x), avg=x / 10, max=x, size_quantile=x / 5)

    universes = {"binance": [f"B{i}USDT" for i in range(8)], "okx": [f"O{i}-USDT-SWAP" for i in range(8)]}
    summaries = {f"B{i}USDT": busy(1e9 * (i + 1)) for i in range(8)}
    summaries |= {f"okx:O{i}-USDT-SWAP": busy(1e3 * (i + 1)) for i in range(8)}
    tiers = tiers_per_venue(summaries, universes, TierParams())
    assert tiers["B7USDT"].tier == tiers["okx:O7-USDT-SWAP"].tier == 0
    assert tiers["B0USDT"].tier == tiers["okx:O0-USDT-SWAP"].tier == TierParams().last_tier
    assert set(tiers) == set(summaries)


def test_tiers_of_a_shared_name_are_ranked_in_each_venue_apart() -> None:
    """Both venues list the same names in opposite activity order: BTCUSDT is tier 0 on Binance and the last
    tier on Bybit, each under its own key, and each thresholds from its own venue's trades."""
    from collector.pipeline.activity import Summary
    from collector.pipeline.tiers import TierParams
    from collector.runtime.venue_shards import tiers_per_venue

    def busy(x: float) -> Summary:
        return Summary(volume=x, count=int(x), avg=x / 10, max=x, size_quantile=x / 5)

    names = ["BTCUSDT"] + [f"X{i}USDT" for i in range(7)]
    universes = {"binance": names, "bybit": names}
    summaries = {n: busy(1e6 * (8 - i)) for i, n in enumerate(names)}
    summaries |= {f"bybit:{n}": busy(1e3 * (i + 1)) for i, n in enumerate(names)}
    tiers = tiers_per_venue(summaries, universes, TierParams())
    assert set(tiers) == set(summaries)
    assert tiers["BTCUSDT"].tier == 0 and tiers["bybit:BTCUSDT"].tier == TierParams().last_tier
    assert tiers["BTCUSDT"].size_quantile == 1e6 * 8 / 5
    assert tiers["bybit:BTCUSDT"].size_quantile == 1e3 / 5
